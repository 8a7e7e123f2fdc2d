// Spawn an agent (`agentix spawn`): paste or upload a manifest (YAML or JSON, sent as text:
// the kernel parses it exactly as it parses a manifest file), or fill in a small form. Both
// call `agent.spawn` with an Idempotency-Key, so a double click starts one agent.

import {h} from "./dom.js";
import {actionForm, done, lines, parseMessage, InputError} from "./ops.js";

const EXAMPLE = `name: helper
program: /srv/agents/helper.py
capabilities:
  - "file_write: /workspace/*"
  - "tool: echo"
budget:
  max_tool_calls: 20
`;

function num(v, what) {
  if (!v.trim()) return null;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new InputError(`${what} must be a number >= 0, not ${JSON.stringify(v)}`);
  return n;
}

export function manifestFrom(v) {
  // the form's values -> a manifest object (the same fields a manifest file has)
  const m = {name: v.name.trim()};
  if (!m.name) throw new InputError("the agent needs a name");
  if (v.program.trim()) m.program = v.program.trim();
  if (v.model.trim()) m.model = v.model.trim();
  if (v.system_prompt.trim()) m.system_prompt = v.system_prompt;
  if (!m.program && !m.model) throw new InputError("give a program (an absolute path on the kernel's host, or module:…) or a model");
  if (!m.program) m.program = "module:agentix.agents.loop";   // a model alone: the built-in LLM tool loop
  const grants = lines(v.grants);
  if (grants.length) m.capabilities = grants;
  const asks = v.approval_required.split(",").map((s) => s.trim()).filter(Boolean);
  if (asks.length) m.approval_required = asks;
  const budget = {};
  const calls = num(v.max_tool_calls, "max tool calls");
  if (calls !== null) budget.max_tool_calls = calls;
  const cost = num(v.max_cost_usd, "max cost");
  if (cost !== null) budget.max_cost_usd = cost;
  if (Object.keys(budget).length) m.budget = budget;
  const limits = {};
  const wall = num(v.wall_clock, "wall clock");
  if (wall !== null) limits.wall_clock = wall;
  if (v.memory.trim()) limits.memory = /^\d+$/.test(v.memory.trim()) ? Number(v.memory.trim()) : v.memory.trim();
  if (Object.keys(limits).length) m.limits = limits;
  if (v.degraded) m.isolation = "degraded";
  return m;
}

export function render(root, ctx) {
  const result = h("p", {class: "result", id: "spawn-result", role: "status", hidden: true});
  const spawned = (r, {replayed}) => done(result,
    replayed ? `already spawned by this same request (the Idempotency-Key matched): ${r.name} ${r.agent_id}`
             : `spawned ${r.name} ${r.agent_id} (pid ${r.pid ?? "?"})`,
    `#/agent/${encodeURIComponent(r.agent_id)}`, "open its page");

  const file = h("input", {type: "file", id: "manifest-file", accept: ".yaml,.yml,.json,text/yaml,application/json"});
  const fromText = actionForm(ctx, {
    id: "spawn-manifest", title: "From a manifest", method: "agent.spawn", idempotent: true, submit: "Spawn",
    intro: ctx.operator ? h("div", {class: "field"}, h("label", {for: "manifest-file", text: "Upload a manifest file"}), file,
      h("small", {class: "muted", text: "or paste it below. Program paths must be absolute (on the kernel's host) or module:…"})) : null,
    fields: [
      {name: "text", label: "Manifest (YAML or JSON)", type: "textarea", rows: 12, placeholder: EXAMPLE, required: true},
      {name: "name", label: "Name (overrides the manifest's)", placeholder: "optional"},
      {name: "message", label: "First message (JSON or text)", type: "textarea", rows: 2, placeholder: "optional"},
    ],
    params: (v) => {
      const p = {manifest_text: v.text};
      if (v.name.trim()) p.name = v.name.trim();
      const msg = parseMessage(v.message);
      if (msg !== null) p.message = msg;
      return p;
    },
    onDone: spawned,
  });
  file.addEventListener("change", async () => {
    const f = file.files && file.files[0];
    if (!f) return;
    fromText.fields.text.value = await f.text();
    fromText.dispatchEvent(new Event("input"));   // a new request: a new Idempotency-Key
  });

  const fromForm = actionForm(ctx, {
    id: "spawn-form", title: "From a form", method: "agent.spawn", idempotent: true, submit: "Spawn",
    fields: [
      {name: "name", label: "Name", placeholder: "letters, digits, _ . -", required: true},
      {name: "program", label: "Program", placeholder: "/abs/path/agent.py or module:agentix.agents.loop"},
      {name: "model", label: "Model (for the built-in LLM loop)", placeholder: "a model the kernel's config names (default: its default model)"},
      {name: "system_prompt", label: "System prompt", type: "textarea", rows: 3},
      {name: "grants", label: "Grants (one per line)", type: "textarea", rows: 4,
       placeholder: "tool: echo\nfile_read: /data/*", help: "the manifest's capabilities: syntax as in docs/security.md"},
      {name: "approval_required", label: "Tools that need approval (comma-separated)", placeholder: "e.g. exec, send_email"},
      {name: "max_tool_calls", label: "Budget: max tool calls", type: "number"},
      {name: "max_cost_usd", label: "Budget: max cost (USD)", type: "number"},
      {name: "wall_clock", label: "Limit: wall clock (s)", type: "number"},
      {name: "memory", label: "Limit: memory", placeholder: "e.g. 256M"},
      {name: "degraded", label: "accept degraded isolation (docs/isolation.md)", type: "checkbox"},
      {name: "message", label: "First message (JSON or text)", type: "textarea", rows: 2},
    ],
    params: (v) => {
      const p = {manifest: manifestFrom(v)};
      const msg = parseMessage(v.message);
      if (msg !== null) p.message = msg;
      return p;
    },
    onDone: spawned,
  });

  root.append(
    h("p", {}, h("a", {href: "#/", text: "← all agents"})),
    h("div", {class: "toolbar"}, h("h1", {text: "Spawn an agent"})),
    result,
    h("div", {class: "grid"}, fromText, fromForm));
}
