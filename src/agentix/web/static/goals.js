// Goal runs: each `agent.submit_goal` root, and its plan drawn as a graph (subtasks as nodes,
// dependencies as arrows, columns by wave) with each subtask's state and outcome, from the
// orchestrator's `loop.progress` events. The plan comes from the model: it is data, shown as
// text only.

import {call} from "./api.js";
import {h, replace, badge, fmtTime} from "./dom.js";
import {actionForm} from "./ops.js";

const NODE_W = 170, NODE_H = 54, COL = 220, ROW = 74;

export function planState(progress) {
  // progress: loop.progress entries of one root, oldest first -> {subtasks, state by id}
  let subtasks = [];
  const state = new Map();
  for (const ev of progress) {
    const d = ev.data || {};
    if (d.stage === "plan" && Array.isArray(d.subtasks)) {
      subtasks = d.subtasks;
      for (const s of subtasks) if (!state.has(s.id)) state.set(s.id, {state: "pending"});
    } else if (d.stage === "wave") {
      for (const id of d.subtasks || []) state.set(id, {state: "running"});
      for (const id of d.skipped || []) state.set(id, {state: "skipped", outcome: "dependency failed"});
    } else if (d.stage === "subtask") {
      state.set(d.id, {state: d.ok ? "done" : "failed", outcome: d.outcome});
    }
  }
  return {subtasks, state};
}

function graph(subtasks, state) {
  const ids = new Set(subtasks.map((s) => s.id));
  const level = new Map();
  const depth = (s, seen = new Set()) => {
    if (level.has(s.id)) return level.get(s.id);
    if (seen.has(s.id)) return 0;
    seen.add(s.id);
    const deps = (s.depends_on || []).filter((d) => ids.has(d));
    const l = deps.length ? 1 + Math.max(...deps.map((d) => depth(subtasks.find((x) => x.id === d), seen))) : 0;
    level.set(s.id, l);
    return l;
  };
  subtasks.forEach((s) => depth(s));
  const rows = new Map();
  const pos = new Map();
  for (const s of subtasks) {
    const l = level.get(s.id);
    const r = rows.get(l) || 0;
    rows.set(l, r + 1);
    pos.set(s.id, {x: 10 + l * COL, y: 10 + r * ROW});
  }
  const width = 20 + (Math.max(0, ...level.values()) + 1) * COL;
  const height = 20 + Math.max(1, ...rows.values()) * ROW;
  const edges = [];
  for (const s of subtasks) {
    for (const d of s.depends_on || []) {
      if (!pos.has(d)) continue;
      const a = pos.get(d), b = pos.get(s.id);
      edges.push(h("line", {x1: a.x + NODE_W, y1: a.y + NODE_H / 2, x2: b.x, y2: b.y + NODE_H / 2, class: "edge", "marker-end": "url(#arrow)"}));
    }
  }
  const nodes = subtasks.map((s) => {
    const p = pos.get(s.id);
    const st = state.get(s.id) || {state: "pending"};
    return h("g", {transform: `translate(${p.x},${p.y})`, class: `node st-${st.state}`, "data-subtask": s.id, "data-state": st.state},
      h("title", {text: `${s.id} (${s.role || "agent"}): ${s.goal}`}),
      h("rect", {width: NODE_W, height: NODE_H, rx: 6}),
      h("text", {x: 8, y: 20, class: "id", text: s.id.length > 20 ? `${s.id.slice(0, 19)}…` : s.id}),
      h("text", {x: 8, y: 40, class: "state", text: st.outcome ? `${st.state} · ${st.outcome}` : st.state}));
  });
  return h("svg", {viewBox: `0 0 ${width} ${height}`, class: "plan", role: "img", "aria-label": "the plan"},
    h("defs", {}, h("marker", {id: "arrow", viewBox: "0 0 10 10", markerWidth: 8, markerHeight: 8, "refX": 10, "refY": 5, orient: "auto"},
      h("path", {d: "M0,0 L10,5 L0,10 z", class: "arrowhead"}))),
    edges, nodes);
}

// the override is checked here only for being a JSON object; the kernel parses it as a manifest
function orchestratorManifest(text) {
  let m;
  try {
    m = JSON.parse(text);
  } catch (e) {
    throw Object.assign(new Error(`the orchestrator manifest is not JSON: ${e.message}`), {code: "invalid_request"});
  }
  if (m === null || typeof m !== "object" || Array.isArray(m)) {
    throw Object.assign(new Error("the orchestrator manifest must be a JSON object"), {code: "invalid_request"});
  }
  return m;
}

export function render(root, ctx) {
  const list = h("ul", {class: "goals", id: "goal-list"});
  const detail = h("div", {id: "goal-detail"});
  // `agentix run --goal`: the orchestrator decomposes it; its plan appears here as it is made
  const submit = actionForm(ctx, {
    id: "goal-form", title: "Submit a goal", method: "agent.submit_goal", idempotent: true, submit: "Submit goal",
    fields: [
      {name: "goal", label: "Goal", type: "textarea", rows: 3, required: true,
       placeholder: "what the team of agents should achieve"},
      {name: "output", label: "Copy the results to (an absolute directory on the kernel's host)", placeholder: "optional"},
      {name: "manifest", label: "Orchestrator manifest (JSON), replacing the built-in one", type: "textarea", rows: 3,
       placeholder: "optional, as `agentix run --goal GOAL MANIFEST`",
       help: "its program is always the orchestrator; name its model grants yourself"},
    ],
    params: (v) => ({goal: v.goal, ...(v.output.trim() ? {output: v.output.trim()} : {}),
                     ...(v.manifest.trim() ? {manifest: orchestratorManifest(v.manifest)} : {})}),
    onDone: (r) => { location.hash = `#/goals/${encodeURIComponent(r.agent_id)}`; },
  });
  root.append(h("div", {class: "toolbar"}, h("h1", {text: "Goal runs"})),
    h("details", {class: "submit", open: !ctx.params.id}, h("summary", {text: "Submit a goal"}), submit),
    h("div", {class: "split"}, h("section", {class: "card"}, h("h2", {text: "Goals"}), list), detail));

  async function loadList() {
    try {
      const [sub, fin] = await Promise.all([call("events.tail", {kind: "goal.submitted", limit: 200}),
                                            call("events.tail", {kind: "goal.finished", limit: 200})]);
      const done = new Map(fin.events.map((e) => [e.agent, e]));
      replace(list, sub.events.length ? sub.events.slice().reverse().map((e) => h("li", {class: e.agent === ctx.params.id ? "active" : ""},
        h("a", {href: `#/goals/${encodeURIComponent(e.agent)}`, text: String((e.data || {}).goal || e.agent).slice(0, 120)}),
        " ", done.has(e.agent) ? badge((done.get(e.agent).data || {}).reason || "finished", "ok") : badge("running", "warn"),
        h("small", {class: "muted", text: ` ${fmtTime(e.ts)}`}))) : h("li", {class: "muted", text: "no goal has been submitted (above, or agentix run --goal \"…\")"}));
    } catch (err) {
      replace(list, h("li", {class: "error", text: err.message}));
    }
  }

  async function loadDetail() {
    const id = ctx.params.id;
    if (!id) { replace(detail, h("p", {class: "muted", text: "Pick a goal to see its plan."})); return; }
    try {
      const r = await call("events.tail", {agent: id, kind: "loop.progress", limit: 1000});
      const {subtasks, state} = planState(r.events);
      replace(detail, h("section", {class: "card wide"},
        h("h2", {}, "plan of ", h("a", {href: `#/agent/${encodeURIComponent(id)}`, text: id})),
        subtasks.length ? graph(subtasks, state) : h("p", {class: "muted", text: "no plan yet"}),
        subtasks.length ? h("table", {}, h("thead", {}, h("tr", {}, ["subtask", "role", "depends on", "state", "goal"].map((t) => h("th", {text: t})))),
          h("tbody", {}, subtasks.map((s) => {
            const st = state.get(s.id) || {state: "pending"};
            return h("tr", {}, h("td", {text: s.id}), h("td", {text: s.role || ""}), h("td", {text: (s.depends_on || []).join(", ")}),
              h("td", {}, badge(st.outcome ? `${st.state} · ${st.outcome}` : st.state, `st-${st.state}`)), h("td", {text: s.goal}));
          }))) : null));
    } catch (err) {
      replace(detail, h("p", {class: "error", text: err.message}));
    }
  }

  ctx.on((ev) => {
    if (ev.kind.startsWith("goal.")) loadList();
    if (ev.kind === "loop.progress" && ev.agent === ctx.params.id) loadDetail();
  });
  loadList();
  loadDetail();
}
