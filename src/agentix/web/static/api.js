// The HTTP API as the dashboard uses it: bearer token from sessionStorage, JSON calls, and
// server-sent events read with fetch (EventSource cannot send an Authorization header).
//
// Why sessionStorage + a bearer header and not a cookie: a header is never attached by the
// browser on its own, so no other site can make this browser call the API (CSRF-safe by
// construction); the server also refuses foreign Origins. The token lives only in this tab.

const KEY = "agentix.token";

export class ApiError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    super(e.message || `HTTP ${status}`);
    this.status = status;
    this.code = e.code || "http_error";
    this.data = e.data || {};
  }
}

export const auth = {
  get token() { return sessionStorage.getItem(KEY); },
  set token(v) { if (v) sessionStorage.setItem(KEY, v); else sessionStorage.removeItem(KEY); },
  role: null,
  name: null,
};

function headers(extra = {}) {
  return {Authorization: `Bearer ${auth.token}`, ...extra};
}

async function parse(res) {
  const text = await res.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = null; }
  if (!res.ok) {
    const err = new ApiError(res.status, body);
    // the token expired or was revoked while signed in: the shell returns to the sign-in
    if (res.status === 401 && auth.role) window.dispatchEvent(new CustomEvent("agentix:unauthenticated", {detail: err.message}));
    throw err;
  }
  return body;
}

export async function whoami() {
  const res = await fetch("/v1/whoami", {headers: headers(), cache: "no-store"});
  const me = await parse(res);
  auth.role = me.role;
  auth.name = me.name;
  return me;
}

export async function call(method, params = {}) {
  const res = await fetch(`/v1/call/${encodeURIComponent(method)}`, {
    method: "POST", headers: headers({"Content-Type": "application/json"}),
    body: JSON.stringify(params), cache: "no-store",
  });
  return parse(res);
}

// A call that starts agents, with an Idempotency-Key: a retry (or a double click) with the same
// key gets the first response back instead of starting a second agent. {result, replayed}.
export async function callIdempotent(method, params, key) {
  const res = await fetch(`/v1/call/${encodeURIComponent(method)}`, {
    method: "POST", headers: headers({"Content-Type": "application/json", "Idempotency-Key": key}),
    body: JSON.stringify(params), cache: "no-store",
  });
  const result = await parse(res);
  return {result, replayed: res.headers.get("Idempotent-Replayed") === "true"};
}

// Follow a server-sent event stream; onEvent({id, event, data}) for each event. Reconnects
// with Last-Event-ID after a drop. Returns a function that stops it.
export function stream(path, onEvent, {onState = () => {}, lastId = null} = {}) {
  const ctl = new AbortController();
  let stopped = false;
  let last = lastId;
  async function run() {
    let delay = 250;
    while (!stopped) {
      try {
        const h = headers({Accept: "text/event-stream"});
        if (last !== null) h["Last-Event-ID"] = String(last);
        const res = await fetch(path, {headers: h, signal: ctl.signal, cache: "no-store"});
        if (!res.ok) {
          const err = await parse(res).catch((e) => e);
          onState("error", err);
          if (res.status === 401 || res.status === 403 || res.status === 404) return;
          throw err;
        }
        onState("open");
        delay = 250;
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = "";
        for (;;) {
          const {value, done} = await reader.read();
          if (done) break;
          buf += value;
          let cut;
          while ((cut = buf.indexOf("\n\n")) >= 0) {
            const block = buf.slice(0, cut);
            buf = buf.slice(cut + 2);
            const ev = {id: null, event: "message", data: ""};
            const data = [];
            for (const line of block.split("\n")) {
              if (line.startsWith(":")) continue;
              const i = line.indexOf(":");
              const field = i < 0 ? line : line.slice(0, i);
              const val = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
              if (field === "id") ev.id = val;
              else if (field === "event") ev.event = val;
              else if (field === "data") data.push(val);
            }
            if (!data.length && ev.id === null) continue;
            ev.data = data.length ? JSON.parse(data.join("\n")) : null;
            if (ev.id !== null) last = ev.id;
            onEvent(ev);
            if (ev.event === "end") { stopped = true; onState("end"); return; }
          }
        }
        onState("closed");
      } catch (err) {
        if (stopped || (err && err.name === "AbortError")) return;
        onState("retrying", err);
      }
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 5000);
    }
  }
  run();
  return () => { stopped = true; ctl.abort(); };
}
