// The dashboard's shell: sign-in, the one event stream every view listens to, and the router.
//
// Views (one module each) export `render(root, ctx)` and return a cleanup function. ctx:
//   ctx.params      the route's parameters (e.g. {id} for #/agent/ID)
//   ctx.on(fn)      call fn(entry) for every audit entry the event stream delivers
//   ctx.operator    true when the token may change things (buttons are enabled)
//   ctx.every(ms, fn)  a timer cleared when the view goes away

import {auth, call, stream, whoami, ApiError} from "./api.js";
import {h, replace} from "./dom.js";
import * as tree from "./tree.js";
import * as agent from "./agent.js";
import * as approvals from "./approvals.js";
import * as audit from "./audit.js";
import * as inference from "./inference.js";
import * as goals from "./goals.js";

const ROUTES = [
  [/^#?\/?$/, "tree", tree],
  [/^#\/agent\/([A-Za-z0-9_.-]+)$/, "tree", agent, ["id"]],
  [/^#\/approvals$/, "approvals", approvals],
  [/^#\/audit$/, "audit", audit],
  [/^#\/inference$/, "inference", inference],
  [/^#\/goals(?:\/([A-Za-z0-9_.-]+))?$/, "goals", goals, ["id"]],
  // the operator pages load when first opened (the first load fetches only what it shows)
  [/^#\/spawn$/, "tree", () => import("./spawn.js")],
  [/^#\/tokens$/, "tokens", () => import("./tokens.js")],
  [/^#\/packages$/, "packages", () => import("./packages.js")],
  [/^#\/kernel$/, "kernel", () => import("./kernel.js")],
];

const $ = (id) => document.getElementById(id);
const listeners = new Set();
let stopEvents = null;
let cleanup = null;
let pending = 0;

function setLive(state) {
  const el = $("live");
  el.textContent = state === "open" ? "●" : "○";
  el.dataset.state = state;
  el.title = `event stream: ${state}`;
}

async function refreshApprovalCount() {
  try {
    const r = await call("approval.list", {});
    pending = r.approvals.length;
    $("approval-count").textContent = pending ? String(pending) : "";
  } catch { /* shown by the views */ }
}

function startEvents() {
  if (stopEvents) stopEvents();
  stopEvents = stream("/v1/events", (ev) => {
    if (ev.event !== "message" || !ev.data) return;
    if (ev.data.kind && ev.data.kind.startsWith("approval.")) refreshApprovalCount();
    for (const fn of listeners) {
      try { fn(ev.data); } catch (err) { console.error(err); }
    }
  }, {onState: setLive});
}

let routing = 0;

async function route() {
  if (cleanup) { cleanup(); cleanup = null; }
  const mine = ++routing;
  const root = replace($("view"));
  const hash = location.hash || "#/";
  for (const [re, nav, found, names = []] of ROUTES) {
    const m = hash.match(re);
    if (!m) continue;
    let mod = found;
    if (typeof found === "function") {
      try {
        mod = await found();
      } catch (err) {
        root.append(h("p", {class: "error", text: `cannot load this page: ${err.message || err}`}));
        return;
      }
      if (mine !== routing) return;   // another route started meanwhile
    }
    for (const a of document.querySelectorAll("#nav a")) {
      a.classList.toggle("active", a.dataset.view === nav);
    }
    const params = Object.fromEntries(names.map((n, i) => [n, m[i + 1] ? decodeURIComponent(m[i + 1]) : null]));
    const own = new Set();
    const timers = [];
    const ctx = {
      params,
      operator: auth.role === "operator",
      on(fn) { listeners.add(fn); own.add(fn); },
      every(ms, fn) { timers.push(setInterval(fn, ms)); },
    };
    let done = null;
    try {
      done = mod.render(root, ctx);
    } catch (err) {
      root.append(h("p", {class: "error", text: String(err.message || err)}));
    }
    cleanup = () => {
      for (const fn of own) listeners.delete(fn);
      for (const t of timers) clearInterval(t);
      if (typeof done === "function") done();
    };
    return;
  }
  root.append(h("p", {text: "No such page. "}, h("a", {href: "#/", text: "Back to the agents"})));
}

async function signedIn() {
  $("signin").hidden = true;
  $("nav").hidden = false;
  $("signout").hidden = false;
  $("who").textContent = `${auth.name} (${auth.role})`;
  $("who").dataset.role = auth.role;
  document.body.dataset.role = auth.role;
  startEvents();
  refreshApprovalCount();
  route();
}

function signedOut(message = "") {
  auth.role = null;
  routing++;   // a page still loading does not render after this
  if (stopEvents) { stopEvents(); stopEvents = null; }
  if (cleanup) { cleanup(); cleanup = null; }
  auth.token = null;
  $("nav").hidden = true;
  $("signout").hidden = true;
  $("who").textContent = "";
  replace($("view"));
  $("signin").hidden = false;
  $("signin-error").textContent = message;
  $("token").focus();
}

async function start() {
  $("signin").addEventListener("submit", async (e) => {
    e.preventDefault();
    auth.token = $("token").value.trim();
    $("token").value = "";
    try {
      await whoami();
      await signedIn();
    } catch (err) {
      signedOut(err instanceof ApiError ? err.message : `cannot reach the kernel: ${err}`);
    }
  });
  $("signout").addEventListener("click", () => signedOut());
  window.addEventListener("agentix:unauthenticated", (e) => { if (auth.role) signedOut(e.detail); });
  window.addEventListener("hashchange", () => { if (auth.role) route(); });
  if (!auth.token) { signedOut(); return; }
  try {
    await whoami();
    await signedIn();
  } catch (err) {
    signedOut(err instanceof ApiError ? err.message : String(err));
  }
}

start();
