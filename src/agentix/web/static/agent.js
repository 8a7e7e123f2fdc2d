// One agent: manifest, grants and remaining invocations, the log following live, its system
// calls, children, inference use, and stop/kill/pause/resume (operator tokens only: for a
// viewer the buttons are disabled, and the server refuses the call anyway).

import {call, stream} from "./api.js";
import {h, replace, badge, json, fmtTime, fmtDuration} from "./dom.js";
import {isolation, spent} from "./tree.js";
import {actionButton, actionForm, done, lines, parseMessage, VIEWER_NOTE} from "./ops.js";

const MAX_LOG = 200_000;     // characters of log kept on the page
const MAX_CALLS = 300;       // system-call rows kept on the page

function callRow(ev) {
  const d = ev.data || {};
  const what = d.tool || d.method || "";
  const outcome = d.error ? badge(d.error, "bad") : (d.ok === false ? badge("failed", "bad") : badge("ok", "ok"));
  return h("tr", {"data-seq": ev.seq},
    h("td", {class: "num", text: String(ev.seq)}),
    h("td", {text: fmtTime(ev.ts)}),
    h("td", {text: ev.kind}),
    h("td", {text: what}),
    h("td", {}, outcome),
    h("td", {}, (ev.taint || []).map((t) => badge(t, "taint"))));
}

export function render(root, ctx) {
  const id = ctx.params.id;
  const title = h("h1", {text: id});
  const stateEl = h("span");
  const actions = h("div", {class: "actions"});
  const message = h("p", {class: "error", role: "alert"});
  const facts = h("dl", {class: "facts"});
  const grants = h("tbody");
  const children = h("ul");
  const inferenceEl = h("div");
  const manifest = h("div");
  const log = h("pre", {class: "log", id: "log", "aria-live": "polite"});
  const calls = h("tbody", {id: "calls"});
  const grantMsg = h("p", {class: "error", role: "alert", id: "grant-msg"});
  const sent = h("p", {class: "result", id: "send-result", role: "status", hidden: true});
  const snapDone = h("p", {class: "result", id: "snapshot-result", role: "status", hidden: true});

  // `agentix send AGENT MESSAGE`; its replies are what it prints (the log) and its result
  const sendForm = actionForm(ctx, {
    id: "send-form", title: "Send a message", method: "agent.send", submit: "Send",
    fields: [{name: "message", label: "Message (JSON or text)", type: "textarea", rows: 3, required: true}],
    params: (v) => ({to: agentId, message: parseMessage(v.message) ?? ""}),
    onDone: (r) => { done(sent, `delivered to ${r.to} (${r.queued} queued); its replies appear in the log below`); },
  });
  // `cap.grant`: mint a new token for this agent from the kernel's root key
  const grantForm = actionForm(ctx, {
    id: "grant-form", title: "Grant a capability", method: "cap.grant", submit: "Grant",
    fields: [
      {name: "grants", label: "Grants (one per line)", type: "textarea", rows: 2, required: true, placeholder: "tool: echo"},
      {name: "max_invocations", label: "Max invocations", type: "number", placeholder: "unlimited"},
      {name: "expires", label: "Expires after", placeholder: "e.g. 1h (default: never)"},
    ],
    params: (v) => ({agent_id: agentId, grants: lines(v.grants),
                     ...(v.max_invocations.trim() ? {max_invocations: Number(v.max_invocations)} : {}),
                     ...(v.expires.trim() ? {expires: v.expires.trim()} : {})}),
    onDone: () => load(),
  });
  // `agentix snapshot AGENT` and `agentix fork AGENT`
  const snapForm = actionForm(ctx, {
    id: "snapshot-form", title: "Snapshot", method: "snapshot.create", submit: "Snapshot",
    fields: [{name: "tag", label: "Tag (NAME:TAG)", placeholder: "default snapshots/NAME:snap-<digest>"}],
    params: (v) => ({agent: agentId, ...(v.tag.trim() ? {tag: v.tag.trim()} : {})}),
    onDone: (r) => done(snapDone, `snapshot ${r.ref} ${r.digest}`, "#/packages", "packages and snapshots"),
  });
  const forkForm = actionForm(ctx, {
    id: "fork-form", title: "Fork", method: "snapshot.fork", submit: "Fork",
    fields: [{name: "name", label: "The fork's name", placeholder: "optional"},
             {name: "grants", label: "Narrower grants (one per line; none: the same)", type: "textarea", rows: 2}],
    params: (v) => ({agent: agentId, ...(v.name.trim() ? {name: v.name.trim()} : {}),
                     ...(lines(v.grants).length ? {grants: lines(v.grants)} : {})}),
    onDone: (r) => done(snapDone, `forked as ${r.name} ${r.agent_id}`, `#/agent/${encodeURIComponent(r.agent_id)}`, "open the fork"),
  });

  root.append(
    h("p", {}, h("a", {href: "#/", text: "← all agents"})),
    h("div", {class: "toolbar"}, title, stateEl, actions),
    message,
    h("div", {class: "grid"},
      h("section", {class: "card"}, h("h2", {text: "Status"}), facts),
      h("section", {class: "card"}, h("h2", {text: "Inference use"}), inferenceEl),
      h("section", {class: "card"}, h("h2", {text: "Children"}), children),
      h("section", {class: "card wide"}, h("h2", {text: "Grants"}),
        h("table", {}, h("thead", {}, h("tr", {}, ["token", "grants", "remaining", "expires", "state", ""].map((t) => h("th", {text: t})))), grants),
        grantMsg),
      h("section", {class: "card wide"}, h("h2", {text: "Log (following)"}), log),
      ctx.operator ? h("div", {class: "wide ops"}, sendForm, sent, grantForm, snapForm, forkForm, snapDone)
                   : h("section", {class: "card wide", id: "ops-viewer"},
                       h("p", {class: "muted", text: `Send a message, grant a capability, snapshot, fork: ${VIEWER_NOTE}.`})),
      h("section", {class: "card wide"}, h("h2", {text: "System calls"}),
        h("div", {class: "scroll short"}, h("table", {},
          h("thead", {}, h("tr", {}, ["seq", "time", "event", "tool / method", "outcome", "taint"].map((t) => h("th", {text: t})))),
          calls))),
      h("section", {class: "card wide"}, h("h2", {text: "Manifest"}), manifest)));

  let agentId = id;
  let live = false;

  function button(label, method, cls = "") {
    const b = h("button", {type: "button", class: cls, "data-action": method, text: label});
    if (!ctx.operator) {
      b.disabled = true;
      b.title = "your token has the viewer role: only an operator token may change agents";
    }
    b.addEventListener("click", async () => {
      message.textContent = "";
      try {
        await call(method, {agent_id: agentId});
        load();
      } catch (err) {
        message.textContent = `${method}: ${err.message}`;
        message.dataset.code = err.code;
      }
    });
    return b;
  }

  async function load() {
    let st;
    try {
      st = await call("agent.status", {agent_id: id});
    } catch (err) {
      message.textContent = `cannot read agent ${id}: ${err.message}`;
      return;
    }
    agentId = st.agent_id;
    live = !st.exit;
    title.textContent = st.name;
    replace(stateEl, badge(st.exit ? `${st.state} (${st.exit.reason || ""})` : st.state, `st-${st.state}`));
    stateEl.dataset.state = st.state;
    replace(actions,
      st.state === "paused" ? button("Resume", "agent.resume") : button("Pause", "agent.pause"),
      button("Stop", "agent.stop", "danger"), button("Kill", "agent.kill", "danger"));
    for (const b of actions.querySelectorAll("button")) if (!live) b.disabled = true;
    const dt = (k, v) => [h("dt", {text: k}), h("dd", {}, v)];
    replace(facts,
      dt("id", st.agent_id), dt("pid", String(st.pid ?? "")), dt("program", st.program),
      dt("parent", st.parent ? h("a", {href: `#/agent/${encodeURIComponent(st.parent)}`, text: st.parent}) : "—"),
      dt("runtime", fmtDuration(st.runtime_s)), dt("system calls", String(st.syscalls)),
      dt("created", fmtTime(st.created_at)),
      dt("taint", (st.taint || []).length ? st.taint.map((t) => badge(t, "taint")) : "none"),
      dt("isolation", isolation(st.isolation)),
      dt("exit", st.exit ? `${st.exit.reason} code=${st.exit.code ?? ""} signal=${st.exit.signal ?? ""} ${st.exit.detail || ""}` : "—"),
      dt("result", st.result === null || st.result === undefined ? "—" : json(st.result)));
    replace(children, st.children.length
      ? st.children.map((c) => h("li", {}, h("a", {href: `#/agent/${encodeURIComponent(c)}`, text: c})))
      : h("li", {class: "muted", text: "none"}));
    replace(manifest, json(st.manifest));
    const b = st.budget;
    replace(inferenceEl,
      h("p", {text: `spent: ${spent(b)}`}),
      b ? h("table", {}, h("tbody", {},
        Object.keys(b.used || {}).map((k) => h("tr", {},
          h("th", {text: k}), h("td", {class: "num", text: String(b.used[k])}),
          h("td", {class: "muted", text: b.limits[`max_${k}`] === null ? "no limit" : `of ${b.limits[`max_${k}`]}`})))))
        : h("p", {class: "muted", text: "no budget"}));
    try {
      const caps = await call("cap.list", {agent_id: agentId});
      replace(grants, caps.tokens.length ? caps.tokens.map((t) => h("tr", {},
        h("td", {}, h("code", {text: t.id.slice(0, 12)})),
        h("td", {}, t.grants.map((g) => h("div", {text: g}))),
        h("td", {class: "num", text: t.remaining === null ? "unlimited" : `${t.remaining} of ${t.max_invocations}`}),
        h("td", {text: t.expires_at ? fmtTime(t.expires_at) : "never"}),
        h("td", {}, t.revoked ? badge("revoked", "bad") : badge("live", "ok")),
        h("td", {}, t.revoked ? null : actionButton(ctx, "Revoke", "cap.revoke", {token_id: t.id},
          {cls: "small danger", msg: grantMsg, onDone: () => load()})))) :
        h("tr", {}, h("td", {colspan: 6, class: "muted", text: "holds no capability"})));
    } catch (err) {
      replace(grants, h("tr", {}, h("td", {colspan: 6, class: "error", text: err.message})));
    }
  }

  function addCall(ev) {
    calls.prepend(callRow(ev));
    while (calls.childElementCount > MAX_CALLS) calls.lastElementChild.remove();
  }

  let stopLog = null;
  (async () => {
    await load();
    try {
      const hist = await call("events.tail", {agent: agentId, limit: 200});
      for (const ev of hist.events) addCall(ev);
    } catch { /* the live tail still works */ }
    stopLog = stream(`/v1/agents/${encodeURIComponent(agentId)}/logs`, (ev) => {
      if (ev.event === "message" && ev.data) {
        log.append(document.createTextNode(ev.data.data));
        if (log.textContent.length > MAX_LOG) log.textContent = log.textContent.slice(-MAX_LOG);
        log.scrollTop = log.scrollHeight;
      } else if (ev.event === "end") {
        log.dataset.ended = "true";
      }
    }, {lastId: 0});
  })();
  ctx.on((ev) => {
    if (ev.agent !== agentId) return;
    addCall(ev);
    if (/^(agent|capability|taint|budget)\./.test(ev.kind)) load();
  });
  ctx.every(3000, () => { if (live) load(); });
  return () => { if (stopLog) stopLog(); };
}
