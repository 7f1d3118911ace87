// A browser call: the microphone and speakers of this page, bridged to the agent by the media node.
//
// The page plays Twilio's part of a bidirectional Media Stream over WS /browser-stream, so the node runs the very
// same bridge as for a phone call: `connected`, `start` (call_id + one-use token in customParameters), 20 ms
// mu-law `media` frames, `mark` echoes once the audio before them has played, `clear` honoured at once, `stop`
// to hang up. Audio work happens in AudioWorklet processors (audio-worklet.js); this file moves messages.

const PREBUFFER_MS = 60; // jitter buffer: agent audio held before playback starts (and after an underrun)

function randomHex(bytes) {
  const values = crypto.getRandomValues(new Uint8Array(bytes));
  return Array.from(values, (b) => b.toString(16).padStart(2, "0")).join("");
}

function toBase64(bytes) {
  let text = "";
  for (let i = 0; i < bytes.length; i++) text += String.fromCharCode(bytes[i]);
  return btoa(text);
}

function fromBase64(text) {
  const raw = atob(text);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return bytes;
}

const CLOSE_REASONS = {
  1000: "call ended",
  1008: "the media node refused the call (policy)",
  1011: "the media node hit an error",
  1012: "the media node is restarting",
  1013: "the media node is busy or draining: try again",
};

/**
 * Events (via `on(name, fn)`): "state" ({state, text}), "level" (rms 0..1), "figures"
 * ({talkToFirstAudioMs, bufferMs, outputLatencyMs, queuedMs}), "ended" ({reason}).
 */
export class BrowserCall {
  constructor(api, { echoCancellation = true } = {}) {
    this.api = api;
    this.echoCancellation = echoCancellation;
    this.handlers = {};
    this.callId = "";
    this.streamSid = "MZ" + randomHex(16);
    this.callSid = "CA" + randomHex(16); // random, as the node expects: never used for anything
    this.sequence = 0;
    this.chunk = 0;
    this.started = false;
    this.ended = false;
    this.figures = { talkToFirstAudioMs: null, bufferMs: PREBUFFER_MS, outputLatencyMs: null, queuedMs: 0 };
  }

  on(name, handler) {
    (this.handlers[name] ||= []).push(handler);
    return this;
  }

  emit(name, value) {
    for (const handler of this.handlers[name] || []) handler(value);
  }

  state(state, text) {
    this.emit("state", { state, text });
  }

  /** Ask for the microphone, create the call, open the stream. Resolves with the call id. */
  async start(agent) {
    this.pressedAt = performance.now();
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new Error("this page cannot use the microphone: open it over https or on localhost / 127.0.0.1");
    }
    // Created in the click itself (before any await): every browser then lets it play.
    this.context = new AudioContext({ latencyHint: "interactive" });
    const worklet = this.context.audioWorklet.addModule("console/audio-worklet.js");
    worklet.catch(() => {}); // awaited below; this only keeps an early failure from being "unhandled"
    try {
      this.state("connecting", "asking for the microphone…");
      const processing = this.echoCancellation;
      this.mic = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: processing, noiseSuppression: processing, autoGainControl: processing },
      });
      this.state("connecting", "connecting to the agent…");
      const answer = this.api.createBrowserCall(agent); // in parallel with the audio set-up
      answer.catch(() => {});
      await worklet;
      await this.wireAudio();
      const { call_id: callId, stream_url: streamUrl, token } = await answer;
      this.callId = callId;
      this.openStream(streamUrl, token);
      return this.callId;
    } catch (error) {
      this.release();
      throw error;
    }
  }

  async wireAudio() {
    if (this.context.state === "suspended") await this.context.resume();
    this.source = this.context.createMediaStreamSource(this.mic);
    this.capture = new AudioWorkletNode(this.context, "mic-capture", { numberOfOutputs: 0 });
    this.player = new AudioWorkletNode(this.context, "agent-player", {
      numberOfInputs: 0,
      outputChannelCount: [1],
      processorOptions: { prebufferMs: PREBUFFER_MS },
    });
    this.source.connect(this.capture);
    this.player.connect(this.context.destination);
    this.capture.port.onmessage = (event) => this.onCapture(event.data);
    this.player.port.onmessage = (event) => this.onPlayer(event.data);
  }

  openStream(url, token) {
    this.ws = new WebSocket(url);
    this.ws.onopen = () => {
      this.send({ event: "connected", protocol: "Call", version: "1.0.0" });
      this.send({
        event: "start",
        streamSid: this.streamSid,
        start: {
          streamSid: this.streamSid,
          callSid: this.callSid,
          accountSid: "",
          tracks: ["inbound"],
          customParameters: { call_id: this.callId, token },
          mediaFormat: { encoding: "audio/x-mulaw", sampleRate: 8000, channels: 1 },
        },
      });
      this.started = true;
      this.state("live", "connected: talk now");
    };
    this.ws.onmessage = (event) => this.onStreamMessage(event.data);
    this.ws.onclose = (event) => {
      const reason = CLOSE_REASONS[event.code] || (this.started ? "connection lost" : "could not reach the media node");
      this.finish(event.code === 1000 || this.ended ? "call ended" : reason, event.code !== 1000 && !this.ended);
    };
  }

  send(message) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.sequence += 1;
      this.ws.send(JSON.stringify({ ...message, sequenceNumber: String(this.sequence) }));
    }
  }

  onCapture(message) {
    if (message.type === "level") {
      this.emit("level", Math.min(1, message.rms * 4));
      return;
    }
    if (message.type !== "frame" || !this.started || this.ended) return;
    this.chunk += 1;
    this.send({
      event: "media",
      streamSid: this.streamSid,
      media: {
        track: "inbound",
        chunk: String(this.chunk),
        timestamp: String((this.chunk - 1) * 20),
        payload: toBase64(new Uint8Array(message.ulaw)),
      },
    });
  }

  onStreamMessage(data) {
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return; // the node sends JSON text only; ignore anything else
    }
    if (message.event === "media" && message.media && typeof message.media.payload === "string") {
      const ulaw = fromBase64(message.media.payload);
      this.player.port.postMessage({ type: "audio", ulaw: ulaw.buffer }, [ulaw.buffer]);
    } else if (message.event === "mark" && message.mark && typeof message.mark.name === "string") {
      this.player.port.postMessage({ type: "mark", name: message.mark.name });
    } else if (message.event === "clear") {
      this.player.port.postMessage({ type: "clear" });
    }
  }

  onPlayer(message) {
    if (message.type === "mark") {
      this.echoMark(message.name);
    } else if (message.type === "cleared") {
      for (const name of message.names) this.echoMark(name);
    } else if (message.type === "playing" && this.figures.talkToFirstAudioMs === null) {
      this.figures.talkToFirstAudioMs = Math.round(performance.now() - this.pressedAt);
      this.figures.outputLatencyMs = Math.round(((this.context.outputLatency || 0) + this.context.baseLatency) * 1000);
      this.emit("figures", { ...this.figures });
    } else if (message.type === "stats") {
      this.figures.queuedMs = Math.round(message.queuedMs);
      this.emit("figures", { ...this.figures });
    }
  }

  echoMark(name) {
    this.send({ event: "mark", streamSid: this.streamSid, mark: { name } });
  }

  /** Hang up: `stop`, then let the node close the socket (it writes the call's end first). */
  hangUp() {
    if (this.ended) return;
    this.ended = true;
    this.state("connecting", "hanging up…");
    if (this.started) {
      this.send({ event: "stop", streamSid: this.streamSid, stop: { accountSid: "", callSid: this.callSid } });
    }
    this.releaseAudio();
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) {
      this.closeTimer = setTimeout(() => this.ws.close(1000, "hung up"), 3000);
    } else {
      this.finish("call ended", false);
    }
  }

  finish(reason, failed) {
    clearTimeout(this.closeTimer);
    if (this.finished) return;
    this.finished = true;
    this.ended = true;
    this.release();
    this.state(failed ? "error" : "ended", reason);
    this.emit("ended", { reason, failed });
  }

  releaseAudio() {
    if (this.mic) for (const track of this.mic.getTracks()) track.stop();
    if (this.context && this.context.state !== "closed") this.context.close();
  }

  release() {
    this.releaseAudio();
    if (this.ws && this.ws.readyState === WebSocket.OPEN && !this.ended) this.ws.close(1000, "page closed");
  }
}
