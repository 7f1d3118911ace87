// Turning call records (GET /calls, GET /calls/{id}) into DOM. Text from records is only ever set as text
// (never parsed as HTML), so a transcript or a metadata value cannot inject markup into the console.

const TERMINAL = new Set(["completed", "busy", "no-answer", "failed", "canceled"]);
const KNOWN = new Set([
  "call_id", "direction", "to", "from", "status", "status_history", "call_sid", "stream_sid", "media_node",
  "agent", "metadata", "transcript", "stream_events", "figures", "error", "created_at", "expires_at",
  "tool_calls", "transferred_to", "answered_by", "recording",
]);
const FIGURES = {
  answer_to_first_audio_ms: ["Answer → first agent audio", "ms"],
  barge_ins: ["Barge-ins", ""],
  audio_in_seconds: ["Caller audio", "s"],
  audio_out_seconds: ["Agent audio", "s"],
  gemini_reconnects: ["Gemini reconnects", ""],
};

export function isTerminal(call) {
  return TERMINAL.has(call.status);
}

export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function clock(seconds) {
  return new Date(seconds * 1000).toLocaleTimeString();
}

function when(seconds) {
  const date = new Date(seconds * 1000);
  return `${date.toLocaleDateString()} ${date.toLocaleTimeString()}`;
}

function since(event, call) {
  return `+${Math.max(0, event.at - call.created_at).toFixed(1)} s`;
}

/** Seconds from answer (in-progress) to the end (terminal status), or to `now` while the call is live. */
export function durationSeconds(call, now = Date.now() / 1000) {
  const history = Array.isArray(call.status_history) ? call.status_history : [];
  const answered = history.find((e) => e.status === "in-progress");
  if (!answered) return null;
  const ended = history.find((e) => TERMINAL.has(e.status));
  return Math.max(0, (ended ? ended.at : isTerminal(call) ? answered.at : now) - answered.at);
}

function formatDuration(seconds) {
  if (seconds === null) return "–";
  const s = Math.round(seconds);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

function number(call) {
  if (call.direction === "browser") return "browser (console)";
  return call.direction === "inbound" ? call.from || "–" : call.to || "–";
}

export function statusBadge(status) {
  return el("span", { class: "badge", dataset: { status: String(status) } }, String(status));
}

export function renderCallRows(tbody, calls) {
  const rows = calls.map((call) =>
    el("tr", { dataset: { callId: call.call_id, status: call.status, direction: call.direction } },
      el("td", {}, when(call.created_at)),
      el("td", {}, call.direction),
      el("td", {}, number(call)),
      el("td", {}, statusBadge(call.status)),
      el("td", {}, formatDuration(durationSeconds(call))),
    ));
  tbody.replaceChildren(...rows);
}

function definitions(dl, pairs) {
  dl.replaceChildren(...pairs.filter(([, v]) => v !== undefined && v !== null && v !== "")
    .flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}

/** Turns by index: a turn the node rewrites while it is spoken replaces its earlier, shorter self. */
function turnsByIndex(transcript) {
  const byIndex = new Map();
  for (const turn of Array.isArray(transcript) ? transcript : []) byIndex.set(Number(turn.index), turn);
  return [...byIndex.entries()].sort((a, b) => a[0] - b[0]).map(([, turn]) => turn);
}

/** What the agent was saying past the cut, when this page saw the turn while it was spoken (partial turns). */
function unheard(turn, seen) {
  const earlier = seen.get(Number(turn.index)) || "";
  const heard = String(turn.text ?? "").replace(/…$/, "");
  return turn.interrupted && earlier.length > heard.length && earlier.startsWith(heard) ? earlier.slice(heard.length) : "";
}

function renderTurn(turn, call, seen) {
  const role = turn.role === "agent" ? "agent" : "caller";
  const speaking = turn.partial === true;
  const text = String(turn.text ?? "");
  const rest = unheard(turn, seen);
  if (!turn.interrupted && text.length > (seen.get(Number(turn.index)) || "").length) seen.set(Number(turn.index), text);
  return el("li", { dataset: { role, index: turn.index, interrupted: Boolean(turn.interrupted), partial: speaking } },
    el("span", { class: "who" }, `${role === "agent" ? "Agent" : "Caller"} · ${since(turn, call)}${speaking ? " · speaking…" : ""}`),
    el("span", { class: "text" }, text || (turn.interrupted ? "(cut off before a word was heard)" : "")),
    rest ? el("s", { class: "unheard", title: "not heard: the caller talked over it" }, rest) : null,
    turn.interrupted ? el("span", { class: "cut" }, "interrupted: cut to what the caller heard before talking over it") : null);
}

function renderExtras(container, call, api) {
  const parts = [];
  if (Array.isArray(call.tool_calls) && call.tool_calls.length) {
    parts.push(el("h3", {}, "Tool calls"), el("table", { class: "tools", id: "tool-calls" },
      el("thead", {}, el("tr", {}, el("th", {}, "Tool"), el("th", {}, "Arguments"), el("th", {}, "Outcome"), el("th", {}, "ms"))),
      el("tbody", {}, call.tool_calls.map((t) => el("tr", {},
        el("td", {}, String(t.name ?? "")),
        el("td", {}, JSON.stringify(t.arguments ?? {})),
        el("td", {}, String(t.status ?? (t.error ? `error: ${t.error}` : "ok"))),
        el("td", {}, t.ms ?? t.duration_ms ?? "–"))))));
  }
  const outcome = [["Transferred to", call.transferred_to], ["Answered by", call.answered_by]];
  if (outcome.some(([, v]) => v)) {
    const dl = el("dl", { class: "summary", id: "call-outcome" });
    definitions(dl, outcome);
    parts.push(el("h3", {}, "Outcome"), dl);
  }
  if (call.recording && typeof call.recording === "object") {
    const r = call.recording;
    const player = el("audio", { controls: true, preload: "none", id: "recording-player" });
    const load = el("button", { type: "button", id: "load-recording" }, "Load recording");
    load.addEventListener("click", async () => {
      load.disabled = true;
      load.textContent = "Loading…";
      try {
        player.src = URL.createObjectURL(await api.recording(call.call_id));
        load.remove();
      } catch (error) {
        load.disabled = false;
        load.textContent = `Could not load: ${error.message}`;
      }
    });
    parts.push(el("h3", {}, "Recording"),
      el("p", { class: "muted small" }, `${r.duration_s ?? "?"} s, ${r.channels ?? "?"} channel(s)`), load, player);
  }
  const others = Object.fromEntries(Object.entries(call).filter(([k]) => !KNOWN.has(k)));
  if (call.metadata && Object.keys(call.metadata).length) others.metadata = call.metadata;
  if (Object.keys(others).length) {
    parts.push(el("h3", {}, "More"), el("pre", { class: "json", id: "more-fields" }, JSON.stringify(others, null, 2)));
  }
  container.replaceChildren(...parts);
}

/** `seen` (index -> longest text shown so far) lives as long as the page watches this call. */
export function renderCallDetail(view, call, api, seen = new Map()) {
  view.title.textContent = `${call.direction === "browser" ? "Browser call" : `Call ${number(call)}`} · ${call.status}`;
  const agent = call.agent || {};
  definitions(view.summary, [
    ["Call id", call.call_id], ["Direction", call.direction], ["From", call.direction === "browser" ? "" : call.from],
    ["To", call.direction === "browser" ? "" : call.to], ["Status", statusBadge(call.status)],
    ["Started", when(call.created_at)], ["Duration", formatDuration(durationSeconds(call))],
    ["Voice", [agent.voice, agent.language].filter(Boolean).join(", ")], ["Twilio call SID", call.call_sid],
    ["Error", call.error],
  ]);
  const history = Array.isArray(call.status_history) ? call.status_history : [];
  view.timeline.replaceChildren(...history.map((e) => el("li", {}, statusBadge(e.status), " ",
    el("span", { class: "muted" }, `${clock(e.at)} (${since(e, call)}) · ${e.source}${e.detail ? ` · ${e.detail}` : ""}`))));
  const turns = turnsByIndex(call.transcript);
  view.transcript.replaceChildren(...turns.map((turn) => renderTurn(turn, call, seen)));
  if (!turns.length) view.transcript.append(el("li", { class: "muted empty" }, "No words yet."));
  const figures = call.figures || {};
  definitions(view.figures, Object.entries(FIGURES).map(([key, [label, unit]]) =>
    [label, figures[key] === null || figures[key] === undefined ? "–" : `${figures[key]}${unit ? ` ${unit}` : ""}`]));
  renderExtras(view.extras, call, api);
}
