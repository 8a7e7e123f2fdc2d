// The live process tree: every agent with its state, runtime, calls, budget spent, taint
// labels and isolation layers. It is read whole once (one `dashboard.agents` call) and again
// when an agent appears; an event about an agent already shown re-reads only that agent's row
// (`dashboard.agents {agents: [...]}`, coalesced while a read is in flight). Between events a
// 1 s timer only advances the runtimes of live agents on the page (no request).

import {call} from "./api.js";
import {h, replace, badge, fmtDuration} from "./dom.js";

const REFRESH_KINDS = /^(agent|budget|taint|capability|isolation|tool|goal)\./;

export function order(agents) {
  // parents before children, depth-first, siblings by creation time
  const byId = new Map(agents.map((a) => [a.agent_id, a]));
  const kids = new Map();
  const roots = [];
  for (const a of agents) {
    if (a.parent && byId.has(a.parent)) {
      if (!kids.has(a.parent)) kids.set(a.parent, []);
      kids.get(a.parent).push(a);
    } else {
      roots.push(a);
    }
  }
  const out = [];
  const walk = (a, depth) => {
    out.push([a, depth]);
    for (const c of kids.get(a.agent_id) || []) walk(c, depth + 1);
  };
  for (const r of roots) walk(r, 0);
  return out;
}

export function spent(budget) {
  if (!budget) return "";
  const u = budget.used || {};
  const parts = [];
  if (u.input_tokens || u.output_tokens) parts.push(`${u.input_tokens || 0}+${u.output_tokens || 0} tok`);
  if (u.cost_usd) parts.push(`$${Number(u.cost_usd).toFixed(4)}`);
  if (budget.tool_calls) parts.push(`${budget.tool_calls} tools`);
  return parts.join(" · ") || "—";
}

export function isolation(iso) {
  if (!iso || !iso.backend) return badge("—");
  if (iso.degraded) {
    return badge(`degraded: missing ${(iso.missing_layers || []).join(", ")}`, "warn");
  }
  const el = badge(`${iso.backend} · ${(iso.layers || []).length} layers`, "ok");
  el.title = (iso.layers || []).join(", ");
  return el;
}

function row(a, depth) {
  const state = a.exit ? `${a.state} (${a.exit.reason || ""})` : a.state;
  return h("tr", {"data-agent-id": a.agent_id, "data-state": a.state, "data-depth": depth, class: `state-${a.state}`},
    h("td", {class: "name"},
      h("span", {class: "indent", text: "  ".repeat(depth) + (depth ? "└ " : "")}),
      h("a", {href: `#/agent/${encodeURIComponent(a.agent_id)}`, text: a.name}),
      h("small", {class: "id", text: ` ${a.agent_id}`})),
    h("td", {}, badge(state, `st-${a.state}`)),
    h("td", {class: "num runtime", "data-runtime": a.exit ? null : a.runtime_s, "data-at": Date.now() / 1000,
             text: fmtDuration(a.runtime_s)}),
    h("td", {class: "num", text: String(a.syscalls)}),
    h("td", {text: spent(a.budget)}),
    h("td", {}, (a.taint || []).map((t) => badge(t, "taint"))),
    h("td", {}, isolation(a.isolation)));
}

export function render(root, ctx) {
  const status = h("p", {class: "muted", text: "loading…"});
  const showExited = h("input", {type: "checkbox", id: "show-exited"});
  showExited.checked = true;
  const body = h("tbody", {id: "tree-body"});
  root.append(
    h("div", {class: "toolbar"},
      h("h1", {text: "Agents"}),
      h("label", {for: "show-exited"}, showExited, " show exited"),
      status,
      // `agentix spawn`: absent for a viewer (the server refuses a viewer's spawn anyway)
      ctx.operator ? h("a", {href: "#/spawn", class: "button", id: "spawn-link", text: "Spawn an agent"}) : null),
    h("div", {class: "scroll"},
      h("table", {class: "tree", id: "tree"},
        h("thead", {}, h("tr", {},
          ["agent", "state", "runtime", "calls", "budget spent", "taint", "isolation"].map((t) => h("th", {text: t})))),
        body)));

  let inFlight = false;
  let again = false;
  let whole = true;           // the next read is of every agent
  const dirty = new Set();    // else: only these agents' rows

  function counts() {
    const rows = body.querySelectorAll("tr[data-agent-id]");
    const live = [...rows].filter((r) => r.dataset.state !== "exited").length;
    status.textContent = `${live} live · ${rows.length} total`;
    root.dataset.loaded = String(rows.length);
  }

  async function readAll() {
    const r = await call("dashboard.agents", {all: showExited.checked});
    const rows = order(r.agents).map(([a, d]) => row(a, d));
    replace(body, rows.length ? rows : h("tr", {}, h("td", {colspan: 7, class: "muted", text: "no agents"})));
  }

  async function readSome(ids) {
    const r = await call("dashboard.agents", {all: true, agents: ids});
    for (const a of r.agents) {
      const old = body.querySelector(`tr[data-agent-id="${CSS.escape(a.agent_id)}"]`);
      if (!old) { whole = true; continue; }
      if (a.exit && !showExited.checked) { old.remove(); continue; }
      old.replaceWith(row(a, Number(old.dataset.depth || 0)));
    }
  }

  async function refresh() {
    if (inFlight) { again = true; return; }
    inFlight = true;
    try {
      do {
        again = false;
        if (whole) {
          whole = false;
          dirty.clear();
          await readAll();
        } else if (dirty.size) {
          const ids = [...dirty];
          dirty.clear();
          await readSome(ids);
          if (whole) again = true;
        }
        counts();
      } while (again);
    } catch (err) {
      status.textContent = `cannot list agents: ${err.message}`;
      status.className = "error";
    } finally {
      inFlight = false;
    }
  }
  showExited.addEventListener("change", () => { whole = true; refresh(); });
  ctx.on((ev) => {
    if (!REFRESH_KINDS.test(ev.kind)) return;
    const shown = ev.agent && body.querySelector(`tr[data-agent-id="${CSS.escape(ev.agent)}"]`);
    if (!shown || ev.kind === "agent.spawned" || ev.kind.startsWith("agent.respawn")) whole = true;
    else dirty.add(ev.agent);
    refresh();
  });
  ctx.every(1000, () => {   // runtimes move without events: advance them locally
    const now = Date.now() / 1000;
    for (const td of body.querySelectorAll("td[data-runtime]")) {
      td.textContent = fmtDuration(Number(td.dataset.runtime) + now - Number(td.dataset.at));
    }
  });
  refresh();
}
