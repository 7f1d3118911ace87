// AudioWorklet processors for a browser call: the page's side of a Twilio Media Stream.
//
// "mic-capture": microphone at the AudioContext rate (48 or 44.1 kHz) -> anti-aliased 8 kHz -> G.711 mu-law,
//   posted to the page in 160-byte (20 ms) frames, plus a level reading for the meter.
// "agent-player": mu-law 8 kHz from the media node -> jitter buffer -> interpolated to the context rate.
//   Marks are echoed (posted back) once the audio queued before them has been played; "clear" drops the
//   queue at once and echoes every pending mark, as Twilio does.
// Self-contained on purpose (no imports): every browser can load it as a classic worklet module.

const FRAME = 160; // 20 ms at 8 kHz
const RATE = 8000;

// ---- G.711 mu-law (the same tables as audioop / the media node) ----
const ULAW_TO_FLOAT = new Float32Array(256);
for (let i = 0; i < 256; i++) {
  const u = ~i & 0xff;
  const magnitude = (((u & 0x0f) << 3) + 0x84) << ((u & 0x70) >> 4);
  ULAW_TO_FLOAT[i] = ((u & 0x80 ? 0x84 - magnitude : magnitude - 0x84)) / 32768;
}

const SEGMENT_ENDS = [0x3f, 0x7f, 0xff, 0x1ff, 0x3ff, 0x7ff, 0xfff, 0x1fff];

function floatToUlaw(x) {
  // G.711 as audioop does it: 14-bit magnitude, clip, bias, segment, mantissa.
  let pcm = Math.round(Math.max(-1, Math.min(1, x)) * 32767) >> 2;
  let mask = 0xff;
  if (pcm < 0) {
    pcm = -pcm;
    mask = 0x7f;
  }
  pcm = Math.min(pcm, 8159) + 33;
  let segment = 0;
  while (segment < 8 && pcm > SEGMENT_ENDS[segment]) segment++;
  if (segment >= 8) return 0x7f ^ mask;
  return (((segment << 4) | ((pcm >> (segment + 1)) & 0x0f)) ^ mask) & 0xff;
}

// ---- streaming windowed-sinc resampler, any ratio, state kept between render quanta ----
function besselI0(x) {
  let sum = 1, term = 1;
  for (let k = 1; k < 30; k++) {
    term *= (x / (2 * k)) ** 2;
    sum += term;
  }
  return sum;
}

class Resampler {
  // `cutoffHz` is the low-pass edge; `halfWidth` the kernel half-length in input samples.
  constructor(inRate, outRate, cutoffHz, halfWidth) {
    this.step = inRate / outRate; // input samples per output sample
    this.width = halfWidth;
    this.scale = (2 * cutoffHz) / inRate;
    this.phases = 256;
    const beta = 6; // Kaiser window: about 60 dB stop-band, below G.711's own noise floor
    this.kernel = new Float32Array(halfWidth * this.phases + 2);
    for (let i = 0; i < this.kernel.length; i++) {
      const t = i / this.phases;
      const r = t / halfWidth;
      const window = r >= 1 ? 0 : besselI0(beta * Math.sqrt(1 - r * r)) / besselI0(beta);
      const x = Math.PI * this.scale * t;
      this.kernel[i] = this.scale * (t === 0 ? 1 : Math.sin(x) / x) * window;
    }
    this.history = new Float32Array(8192);
    this.length = 0; // samples held in `history`
    this.first = 0; // absolute index of history[0]
    this.time = halfWidth; // absolute input time of the next output sample
  }

  tap(distance) {
    const position = Math.abs(distance) * this.phases;
    const i = Math.floor(position);
    if (i >= this.kernel.length - 1) return 0;
    const frac = position - i;
    return this.kernel[i] + (this.kernel[i + 1] - this.kernel[i]) * frac;
  }

  push(samples) {
    const needed = this.length + samples.length;
    if (needed > this.history.length) {
      const grown = new Float32Array(Math.max(needed, this.history.length * 2));
      grown.set(this.history.subarray(0, this.length));
      this.history = grown;
    }
    this.history.set(samples, this.length);
    this.length = needed;
  }

  /** Output samples that the input pushed so far allows (each needs `width` samples of look-ahead). */
  pull(out) {
    let n = 0;
    const end = this.first + this.length;
    while (n < out.length && Math.floor(this.time) + this.width < end) {
      const centre = Math.floor(this.time);
      let acc = 0;
      for (let k = centre - this.width + 1; k <= centre + this.width; k++) {
        acc += this.history[k - this.first] * this.tap(this.time - k);
      }
      out[n++] = acc;
      this.time += this.step;
    }
    this.compact();
    return n;
  }

  compact() {
    const keep = Math.floor(this.time) - this.width + 1 - this.first;
    if (keep > 4096) {
      this.history.copyWithin(0, keep, this.length);
      this.length -= keep;
      this.first += keep;
    }
  }

  /** Forget the audio held for look-ahead: what follows is preceded by silence. */
  reset() {
    this.history.fill(0, 0, this.length);
  }

  get pushed() {
    return this.first + this.length;
  }
}

class MicCapture extends AudioWorkletProcessor {
  constructor() {
    super();
    // Phone band: flat to ~3.2 kHz, -60 dB from ~4 kHz (what would fold back into the band); 2.5 ms delay.
    this.resampler = new Resampler(sampleRate, RATE, 3600, Math.ceil(sampleRate * 0.0025));
    this.out = new Float32Array(64);
    this.frame = new Uint8Array(FRAME);
    this.filled = 0;
    this.energy = 0;
    this.count = 0;
  }

  process(inputs) {
    const channels = inputs[0];
    if (!channels || channels.length === 0) return true;
    let mono = channels[0];
    if (channels.length > 1) {
      mono = new Float32Array(channels[0].length);
      for (const channel of channels) for (let i = 0; i < mono.length; i++) mono[i] += channel[i] / channels.length;
    }
    this.resampler.push(mono);
    let n;
    while ((n = this.resampler.pull(this.out)) > 0) {
      for (let i = 0; i < n; i++) {
        this.energy += this.out[i] * this.out[i];
        this.frame[this.filled++] = floatToUlaw(this.out[i]);
        if (this.filled === FRAME) {
          this.port.postMessage({ type: "frame", ulaw: this.frame.buffer }, [this.frame.buffer]);
          this.frame = new Uint8Array(FRAME);
          this.filled = 0;
          if (++this.count % 5 === 0) {
            this.port.postMessage({ type: "level", rms: Math.sqrt(this.energy / (5 * FRAME)) });
            this.energy = 0;
          }
        }
      }
    }
    return true;
  }
}

class AgentPlayer extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = (options && options.processorOptions) || {};
    this.prebuffer = Math.round(((opts.prebufferMs ?? 60) * RATE) / 1000); // jitter buffer, in 8 kHz samples
    this.maxQueued = RATE * 120; // bound memory: two minutes of agent audio ahead
    this.resampler = new Resampler(RATE, sampleRate, 3600, 24); // images of the 8 kHz audio -60 dB; 3 ms
    this.chunks = []; // Float32Array pieces at 8 kHz, oldest first
    this.offset = 0; // read offset into chunks[0]
    this.queued = 0; // samples in `chunks`
    this.written = 0; // absolute 8 kHz index after the last queued sample (silence included)
    this.audioEnd = 0; // absolute index after the last sample of real audio
    this.marks = []; // {name, at}: echo once the resampler's output time reaches `at`
    this.playing = false;
    this.waitingSince = -1; // currentTime when audio arrived while idle
    this.statsAt = 0;
    this.underruns = 0;
    this.feed = new Float32Array(128);
    this.port.onmessage = (event) => this.onMessage(event.data);
  }

  onMessage(message) {
    if (message.type === "audio") {
      const ulaw = new Uint8Array(message.ulaw);
      if (this.queued + ulaw.length > this.maxQueued) return;
      const samples = new Float32Array(ulaw.length);
      for (let i = 0; i < ulaw.length; i++) samples[i] = ULAW_TO_FLOAT[ulaw[i]];
      this.chunks.push(samples);
      this.queued += samples.length;
      this.written += samples.length;
      this.audioEnd = this.written;
      if (!this.playing && this.waitingSince < 0) this.waitingSince = currentTime;
    } else if (message.type === "mark") {
      this.marks.push({ name: message.name, at: this.written });
    } else if (message.type === "clear") {
      const dropped = this.queued;
      this.chunks = [];
      this.offset = 0;
      this.queued = 0;
      this.playing = false;
      this.waitingSince = -1;
      this.resampler.reset();
      this.written = this.audioEnd = this.resampler.pushed; // nothing is queued any more
      const names = this.marks.map((m) => m.name);
      this.marks = [];
      this.port.postMessage({ type: "cleared", names, droppedMs: (dropped * 1000) / RATE });
    }
  }

  /** Next `n` input samples for the resampler: queued audio, or silence once the queue is empty. */
  take(n) {
    const out = this.feed.length >= n ? this.feed.subarray(0, n) : (this.feed = new Float32Array(n));
    let filled = 0;
    while (filled < n && this.chunks.length) {
      const chunk = this.chunks[0];
      const count = Math.min(n - filled, chunk.length - this.offset);
      out.set(chunk.subarray(this.offset, this.offset + count), filled);
      filled += count;
      this.offset += count;
      this.queued -= count;
      if (this.offset === chunk.length) {
        this.chunks.shift();
        this.offset = 0;
      }
    }
    if (filled < n) {
      out.fill(0, filled);
      this.written += n - filled; // silence advances the timeline too
    }
    return out;
  }

  process(inputs, outputs) {
    const output = outputs[0][0];
    if (!this.playing && this.queued > 0) {
      const waited = (currentTime - this.waitingSince) * 1000;
      if (this.queued >= this.prebuffer || waited * RATE >= this.prebuffer * 1000) {
        this.playing = true;
        this.waitingSince = -1;
        this.port.postMessage({ type: "playing", queuedMs: (this.queued * 1000) / RATE });
      }
    }
    if (this.playing) {
      let n = 0;
      while (n < output.length) {
        const got = this.resampler.pull(output.subarray(n));
        n += got;
        if (n < output.length) this.resampler.push(this.take(Math.ceil((output.length - n) / (sampleRate / RATE)) + 1));
      }
      if (this.queued === 0 && this.resampler.time >= this.audioEnd) {
        this.playing = false; // drained (end of a turn, or an underrun): build the cushion again
        this.underruns++;
      }
    } else {
      output.fill(0);
    }
    for (let i = 1; i < outputs[0].length; i++) outputs[0][i].set(output);
    while (this.marks.length && (this.marks[0].at <= this.resampler.time || (!this.playing && this.queued === 0))) {
      this.port.postMessage({ type: "mark", name: this.marks.shift().name });
    }
    if (currentTime - this.statsAt >= 0.1) {
      this.statsAt = currentTime;
      this.port.postMessage({ type: "stats", queuedMs: (this.queued * 1000) / RATE, playing: this.playing });
    }
    return true;
  }
}

registerProcessor("mic-capture", MicCapture);
registerProcessor("agent-player", AgentPlayer);
