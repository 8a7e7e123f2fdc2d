// Tokens: the agents' capability tokens (`agentix caps ls|revoke`; `cap.grant` is on each
// agent's page) and the HTTP API's operator tokens (`agentix tokens list|create|revoke`).
// A created HTTP token is shown once (the kernel keeps only its hash).

import {auth, call} from "./api.js";
import {h, replace, badge, fmtTime} from "./dom.js";
import {actionButton, actionForm, showError} from "./ops.js";

export function render(root, ctx) {
  const capRows = h("tbody", {id: "cap-rows"});
  const capMsg = h("p", {class: "error", role: "alert", id: "cap-msg"});
  const holder = h("input", {type: "text", id: "cap-holder", placeholder: "only this agent (id or name)", autocomplete: "off"});
  const httpRows = h("tbody", {id: "http-token-rows"});
  const httpMsg = h("p", {class: "error", role: "alert", id: "http-token-msg"});
  const created = h("div", {id: "created-token", class: "result", hidden: true});

  const createForm = actionForm(ctx, {
    id: "token-form", title: "Create an HTTP token", method: "tokens.create", submit: "Create",
    fields: [
      {name: "name", label: "Name", required: true, placeholder: "letters, digits, _ . -"},
      {name: "role", label: "Role", type: "select", options: ["viewer", "operator"]},
      {name: "ttl", label: "Expires after", placeholder: "e.g. 12h, 7d (default: never)"},
    ],
    params: (v) => ({name: v.name.trim(), role: v.role, ...(v.ttl.trim() ? {ttl: v.ttl.trim()} : {})}),
    onDone: (t) => {
      replace(created, h("p", {text: `${t.role} token ${t.name} — copy it now, it is not shown again:`}),
        h("code", {class: "secret", id: "new-token", text: t.token}));
      created.hidden = false;
      loadHttp();
    },
  });

  root.append(
    h("div", {class: "toolbar"}, h("h1", {text: "Tokens"})),
    h("section", {class: "card wide"}, h("h2", {text: "Capability tokens held by agents"}),
      h("form", {class: "filters", id: "cap-filter"}, holder, h("button", {type: "submit", text: "Filter"})),
      capMsg,
      h("div", {class: "scroll"}, h("table", {},
        h("thead", {}, h("tr", {}, ["token", "holder", "parent", "left", "expires", "state", "grants", ""].map((t) => h("th", {text: t})))),
        capRows)),
      h("p", {class: "muted", text: "Revoking a token revokes every token derived from it. Grant new ones on an agent's page."})),
    h("section", {class: "card wide"}, h("h2", {text: "HTTP API tokens"}),
      httpMsg,
      h("table", {}, h("thead", {}, h("tr", {}, ["name", "role", "state", "created", "expires", ""].map((t) => h("th", {text: t})))),
        httpRows)),
    createForm, created);

  async function loadCaps() {
    try {
      const who = holder.value.trim();
      const [r, agents] = await Promise.all([call("cap.list", who ? {agent_id: who} : {}), call("agent.list", {all: true})]);
      const names = new Map(agents.agents.map((a) => [a.agent_id, a.name]));
      replace(capRows, r.tokens.length ? r.tokens.map((t) => h("tr", {"data-token-id": t.id, "data-state": t.revoked ? "revoked" : "live"},
        h("td", {}, h("code", {class: "hash", text: t.id})),
        h("td", {}, h("a", {href: `#/agent/${encodeURIComponent(t.holder)}`, text: names.get(t.holder) || t.holder}),
          h("small", {class: "id", text: ` ${t.holder}`})),
        h("td", {}, t.parent_id ? h("code", {class: "hash", text: t.parent_id.slice(0, 12)}) : "—"),
        h("td", {class: "num", text: t.remaining === null ? "unlimited" : String(t.remaining)}),
        h("td", {text: t.expires_at ? fmtTime(t.expires_at) : "never"}),
        h("td", {}, t.revoked ? badge("revoked", "bad") : badge("live", "ok")),
        h("td", {}, t.grants.map((g) => h("div", {text: g}))),
        h("td", {}, t.revoked ? null : actionButton(ctx, "Revoke", "cap.revoke", {token_id: t.id},
          {cls: "small danger", msg: capMsg, onDone: loadCaps}))))
        : h("tr", {}, h("td", {colspan: 8, class: "muted", text: "no capability tokens"})));
    } catch (err) {
      showError(capMsg, err, "cap.list");
    }
  }

  async function loadHttp() {
    try {
      const r = await call("tokens.list", {});
      replace(httpRows, r.tokens.map((t) => h("tr", {"data-token-name": t.name, "data-state": t.state},
        h("td", {text: t.name}), h("td", {text: t.role}),
        h("td", {}, badge(t.state, t.state === "active" ? "ok" : "bad")),
        h("td", {text: fmtTime(t.created_at)}), h("td", {text: t.expires_at ? fmtTime(t.expires_at) : "never"}),
        h("td", {}, t.state === "active" ? actionButton(ctx, "Revoke", "tokens.revoke", {name: t.name},
          {cls: "small danger", msg: httpMsg, onDone: loadHttp,
           confirmText: t.name === auth.name ? "This is the token this page is signed in with. Revoke it?" : null}) : null))));
    } catch (err) {
      showError(httpMsg, err, "tokens.list");
    }
  }

  root.querySelector("#cap-filter").addEventListener("submit", (e) => { e.preventDefault(); loadCaps(); });
  ctx.on((ev) => {
    if (ev.kind.startsWith("capability.") || ev.kind === "agent.spawned") loadCaps();
    const m = (ev.data || {}).method;
    if (ev.kind.startsWith("tokens.") || (ev.kind === "http.call" && typeof m === "string" && m.startsWith("tokens."))) loadHttp();
  });
  loadCaps();
  loadHttp();
}

