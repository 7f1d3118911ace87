// The control API as seen from the console: JSON over fetch with the bearer API key, same origin only.
// Paths are resolved against where /console is served, so an API Gateway stage prefix ("/prod") just works.

const KEY_STORAGE = "voice-agent-api-key";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function apiBase() {
  // "/prod/console" -> "/prod/"; "/console" -> "/"
  const path = window.location.pathname.replace(/\/console\/?$/, "/");
  return window.location.origin + (path.endsWith("/") ? path : path + "/");
}

export class Api {
  constructor(base = apiBase()) {
    this.base = base;
    this.key = window.sessionStorage.getItem(KEY_STORAGE) || "";
  }

  get signedIn() {
    return this.key !== "";
  }

  /** Check a key against GET /calls; keep it (this tab only) when the server accepts it. */
  async signIn(key) {
    this.key = key.trim();
    try {
      await this.listCalls(1);
    } catch (error) {
      this.signOut();
      throw error;
    }
    window.sessionStorage.setItem(KEY_STORAGE, this.key);
  }

  signOut() {
    this.key = "";
    window.sessionStorage.removeItem(KEY_STORAGE);
  }

  listCalls(limit = 50) {
    return this.request("GET", `calls?limit=${limit}`);
  }

  getCall(callId) {
    return this.request("GET", `calls/${encodeURIComponent(callId)}`);
  }

  makeCall(body) {
    return this.request("POST", "make-call", body, { "Idempotency-Key": crypto.randomUUID() });
  }

  hangUp(callId) {
    return this.request("POST", `calls/${encodeURIComponent(callId)}/hangup`);
  }

  createBrowserCall(body) {
    return this.request("POST", "browser-calls", body);
  }

  /** The recording's audio as a Blob (the route needs the bearer key, so an <audio src> cannot fetch it). */
  async recording(callId) {
    const response = await this.fetch("GET", `calls/${encodeURIComponent(callId)}/recording`);
    return response.blob();
  }

  async request(method, path, body, headers = {}) {
    const response = await this.fetch(method, path, body, headers);
    return response.status === 204 ? null : response.json();
  }

  async fetch(method, path, body, headers = {}) {
    const init = { method, headers: { Authorization: `Bearer ${this.key}`, ...headers }, cache: "no-store" };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await window.fetch(new URL(path, this.base), init);
    } catch {
      throw new ApiError(0, "unreachable", "cannot reach the server (is it running?)");
    }
    if (!response.ok) {
      let code = "http_error";
      let message = `HTTP ${response.status}`;
      try {
        const problem = (await response.json()).error || {};
        code = String(problem.code || code);
        message = String(problem.message || message);
      } catch {
        // not our JSON error shape (a proxy's page): keep the status line
      }
      throw new ApiError(response.status, code, message);
    }
    return response;
  }
}
