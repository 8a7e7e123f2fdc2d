// Operator actions: small forms and buttons that each make ONE call of the HTTP API (the same
// operator method the CLI calls), with the API's error code and message shown as text.
//
// Roles: a viewer token gets no action forms at all (a note says why) and disabled buttons;
// the server refuses a viewer's state change anyway (403 capability_denied, reason "role").
// Methods that start agents carry an Idempotency-Key made when the form is filled in, so a
// double click or a retried request starts one agent, not two.

import {call, callIdempotent} from "./api.js";
import {h, replace} from "./dom.js";

// A mistake found in the page before any request (the same shape as an ApiError).
export class InputError extends Error {
  constructor(message) { super(message); this.code = "invalid_input"; }
}

export const VIEWER_NOTE = "your token has the viewer role: only an operator token may do this";

// A fresh Idempotency-Key (crypto.getRandomValues works on plain-http origins too, where
// crypto.randomUUID is missing).
export function newKey() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  return "dash-" + [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
}

// Show an API error: "CODE: message" as text, with the code also in data-code for tests.
export function showError(el, err, what = "") {
  const code = err && err.code ? err.code : "error";
  const message = err && err.message ? err.message : String(err);
  replace(el, h("strong", {class: "code", text: code}), `: ${what ? `${what}: ` : ""}${message}`);
  el.dataset.code = code;
  el.hidden = false;
}

export function clearMsg(el) {
  replace(el);
  delete el.dataset.code;
}

// "JSON or text", as `agentix send` takes a message
export function parseMessage(text) {
  const t = text.trim();
  if (!t) return null;
  try { return JSON.parse(t); } catch { return text; }
}

// one grant per line (blank lines and surrounding spaces ignored)
export function lines(text) {
  return text.split("\n").map((s) => s.trim()).filter(Boolean);
}

// A button that makes one call; disabled for a viewer. onDone(result) after success.
export function actionButton(ctx, label, method, params, {cls = "", onDone = () => {}, msg = null, confirmText = null} = {}) {
  const b = h("button", {type: "button", class: cls, "data-action": method, text: label});
  if (!ctx.operator) {
    b.disabled = true;
    b.title = VIEWER_NOTE;
  }
  b.addEventListener("click", async () => {
    if (confirmText && !window.confirm(confirmText)) return;
    if (msg) clearMsg(msg);
    b.disabled = true;
    try {
      onDone(await call(method, typeof params === "function" ? params() : params));
    } catch (err) {
      if (msg) showError(msg, err, method);
    } finally {
      b.disabled = !ctx.operator;
    }
  });
  return b;
}

function field(f) {
  const id = `f-${f.form}-${f.name}`;
  let input;
  if (f.type === "textarea") {
    input = h("textarea", {id, name: f.name, rows: f.rows || 3, placeholder: f.placeholder || "",
                           spellcheck: "false", autocomplete: "off"});
  } else if (f.type === "select") {
    input = h("select", {id, name: f.name}, f.options.map((o) => h("option", {value: o, text: o})));
  } else if (f.type === "checkbox") {
    input = h("input", {id, name: f.name, type: "checkbox"});
    return {input, el: h("label", {for: id, class: "check"}, input, ` ${f.label}`)};
  } else {
    input = h("input", {id, name: f.name, type: f.type || "text", placeholder: f.placeholder || "",
                        autocomplete: "off", spellcheck: "false"});
  }
  if (f.value !== undefined) input.value = f.value;
  if (f.required) input.required = true;
  return {input, el: h("div", {class: "field"}, h("label", {for: id, text: f.label}), input,
                                f.help ? h("small", {class: "muted", text: f.help}) : null)};
}

// A form of fields whose submit makes one call of `method` with params(values).
//   idempotent: send an Idempotency-Key, renewed whenever a field changes
//   onDone(result, {replayed}) after success; the returned element is a <form> (or, for a
//   viewer, a note: the form is not there at all)
export function actionForm(ctx, {id, title, fields, method, params, submit = "Submit", idempotent = false,
                                 onDone = () => {}, intro = null}) {
  if (!ctx.operator) {
    return h("section", {class: "card", id, "data-viewer": "true"}, title ? h("h2", {text: title}) : null,
      h("p", {class: "muted", text: `${VIEWER_NOTE}.`}));
  }
  const made = fields.map((f) => ({...f, ...field({...f, form: id})}));
  const button = h("button", {type: "submit", class: "ok", "data-action": method, text: submit});
  const msg = h("p", {class: "error", role: "alert"});
  const form = h("form", {class: "card action", id, "data-method": method},
    title ? h("h2", {text: title}) : null, intro,
    made.map((f) => f.el), h("div", {class: "buttons"}, button), msg);
  let key = newKey();
  form.addEventListener("input", () => { key = newKey(); });
  let busy = false;
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (busy) return;           // a second click while the first is in flight
    busy = true;
    button.disabled = true;
    clearMsg(msg);
    const values = Object.fromEntries(made.map((f) => [f.name, f.type === "checkbox" ? f.input.checked : f.input.value]));
    try {
      const p = params(values);
      if (idempotent) {
        const {result, replayed} = await callIdempotent(method, p, key);
        onDone(result, {replayed, values, form});
      } else {
        onDone(await call(method, p), {replayed: false, values, form});
      }
    } catch (err) {
      showError(msg, err, method);
    } finally {
      busy = false;
      button.disabled = false;
    }
  });
  form.fields = Object.fromEntries(made.map((f) => [f.name, f.input]));
  form.msg = msg;
  return form;
}

// A result line: "text" plus an optional in-app link.
export function done(el, text, href = null, linkText = null) {
  replace(el, h("span", {text}), href ? [" ", h("a", {href, text: linkText || href})] : null);
  el.hidden = false;
}
