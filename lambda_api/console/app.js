// The console: sign-in, calls list, call detail (live while the call runs), new phone call, Talk (browser call).
// Views are hash routes (#/, #/calls/<id>, #/new) so one static page works behind any prefix, Lambda included.

import { Api, ApiError } from "./api.js";
import { BrowserCall } from "./browser-call.js";
import { isTerminal, renderCallDetail, renderCallRows } from "./render.js";

const LIST_REFRESH_MS = 2000;
const LIVE_REFRESH_MS = 1000;
const $ = (id) => document.getElementById(id);

const api = new Api();
let call = null; // the BrowserCall in progress, if any
let timer = 0;
let generation = 0; // bumps on every navigation: a late answer for a view we left is dropped

function show(id, visible) {
  $(id).hidden = !visible;
}

function setError(id, message) {
  $(id).textContent = message || "";
  show(id, Boolean(message));
}

function describe(error) {
  if (error instanceof ApiError) {
    if (error.status === 401) return "Wrong API key: the server did not accept it.";
    return error.message;
  }
  if (error && error.name === "NotAllowedError") return "Microphone permission was refused.";
  if (error && error.name === "NotFoundError") return "No microphone found.";
  return (error && error.message) || String(error);
}

function signedOut(message) {
  api.signOut();
  clearTimeout(timer);
  show("app-view", false);
  show("nav", false);
  show("signin-view", true);
  setError("signin-error", message);
  $("api-key").focus();
}

function signedIn() {
  show("signin-view", false);
  show("app-view", true);
  show("nav", true);
  route();
}

// ---- views -------------------------------------------------------------------------------------------------
function route() {
  if (!api.signedIn) return;
  clearTimeout(timer);
  generation += 1;
  const hash = window.location.hash || "#/";
  const detail = hash.match(/^#\/calls\/([A-Za-z0-9_.-]{1,128})$/);
  show("list-view", !detail && hash !== "#/new");
  show("detail-view", Boolean(detail));
  show("new-view", hash === "#/new");
  if (detail) refreshDetail(detail[1], generation);
  else if (hash !== "#/new") refreshList(generation);
}

/** Run `fn` after `ms`; while the tab is hidden nothing is fetched (polls cost requests, on Lambda too). */
function schedule(fn, ms) {
  timer = setTimeout(() => (document.hidden ? schedule(fn, ms) : fn()), ms);
}

function failed(error, where) {
  if (error instanceof ApiError && error.status === 401) signedOut("The API key is no longer accepted: sign in again.");
  else setError(where, describe(error));
}

async function refreshList(gen) {
  try {
    const page = await api.listCalls(50);
    if (gen !== generation) return;
    renderCallRows($("calls").tBodies[0], page.calls);
    show("calls-empty", page.calls.length === 0);
    $("calls-updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
    setError("list-error", "");
  } catch (error) {
    if (gen !== generation) return;
    failed(error, "list-error");
  }
  if (gen === generation) schedule(() => refreshList(gen), LIST_REFRESH_MS);
}

const detailView = {
  title: $("detail-title"), summary: $("detail-summary"), timeline: $("timeline"),
  transcript: $("transcript"), figures: $("figures"), extras: $("extras"),
};

const seenTurns = { callId: "", turns: new Map() }; // what this page saw of each turn while it was spoken

async function refreshDetail(callId, gen) {
  let live = true;
  if (seenTurns.callId !== callId) Object.assign(seenTurns, { callId, turns: new Map() });
  try {
    const record = await api.getCall(callId);
    if (gen !== generation) return;
    renderCallDetail(detailView, record, api, seenTurns.turns);
    setError("detail-error", "");
    const endable = !isTerminal(record) && record.direction !== "browser" && Boolean(record.call_sid);
    $("end-call").hidden = !endable;
    $("end-call").dataset.callId = record.call_id;
    live = !isTerminal(record) || (call !== null && call.callId === callId && !call.finished);
  } catch (error) {
    if (gen !== generation) return;
    failed(error, "detail-error");
    live = !(error instanceof ApiError && error.status === 404);
  }
  if (gen === generation && live) schedule(() => refreshDetail(callId, gen), LIVE_REFRESH_MS);
}

// ---- talk (browser call) ---------------------------------------------------------------------------------
function formFields(form, names) {
  const data = new FormData(form);
  const body = {};
  for (const name of names) {
    const value = String(data.get(name) || "").trim();
    if (value) body[name] = value;
  }
  return body;
}

const AGENT_FIELDS = ["system_prompt", "greeting", "voice", "language"];

function setCallStatus({ state, text }) {
  const status = $("call-status");
  status.dataset.state = state;
  status.textContent = text;
}

async function talk() {
  $("talk").disabled = true;
  $("talk-settings").closest("details").open = false;
  const settings = $("talk-settings");
  const current = new BrowserCall(api, { echoCancellation: settings.elements.echo_cancellation.checked });
  call = current;
  current.on("state", setCallStatus);
  current.on("level", (rms) => { $("mic-level").value = rms; });
  current.on("figures", (f) => {
    const first = f.talkToFirstAudioMs === null ? "" : `Talk → first agent audio ${f.talkToFirstAudioMs} ms · `;
    const output = f.outputLatencyMs === null ? "" : ` · output latency ${f.outputLatencyMs} ms`;
    $("call-figures").textContent = `${first}jitter buffer ${f.bufferMs} ms${output} · queued ${f.queuedMs} ms`;
  });
  current.on("ended", () => {
    $("talk").disabled = false;
    $("hangup").disabled = true;
    $("mic-level").value = 0;
    route(); // one more look at the record: the node has written the end of the call
  });
  try {
    const callId = await current.start(formFields(settings, AGENT_FIELDS));
    $("hangup").disabled = false;
    window.location.hash = `#/calls/${callId}`;
  } catch (error) {
    call = null;
    $("talk").disabled = false;
    setCallStatus({ state: "error", text: describe(error) });
    if (error instanceof ApiError && error.status === 401) signedOut("The API key is no longer accepted: sign in again.");
  }
}

// ---- wiring ------------------------------------------------------------------------------------------------
$("signin-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("sign-in").disabled = true;
  setError("signin-error", "");
  try {
    await api.signIn($("api-key").value);
    $("api-key").value = "";
    signedIn();
  } catch (error) {
    setError("signin-error", describe(error));
  } finally {
    $("sign-in").disabled = false;
  }
});

$("sign-out").addEventListener("click", () => {
  if (call && !call.finished) call.hangUp();
  signedOut("");
});

$("new-call").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  setError("new-call-error", "");
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    const answer = await api.makeCall(formFields(form, ["destination_number", ...AGENT_FIELDS]));
    form.reset();
    window.location.hash = `#/calls/${answer.call_id}`;
  } catch (error) {
    failed(error, "new-call-error");
  } finally {
    button.disabled = false;
  }
});

$("end-call").addEventListener("click", async (event) => {
  const button = event.currentTarget;
  button.disabled = true;
  try {
    await api.hangUp(button.dataset.callId);
  } catch (error) {
    failed(error, "detail-error");
  } finally {
    button.disabled = false;
  }
});
$("talk").addEventListener("click", talk);
$("hangup").addEventListener("click", () => call && call.hangUp());
$("calls").addEventListener("click", (event) => {
  const row = event.target.closest("tr[data-call-id]");
  if (row) window.location.hash = `#/calls/${row.dataset.callId}`;
});
window.addEventListener("hashchange", route);
document.addEventListener("visibilitychange", () => !document.hidden && route()); // fresh at once on return
window.addEventListener("pagehide", () => call && !call.finished && call.hangUp());

if (api.signedIn) signedIn();
else signedOut("");
