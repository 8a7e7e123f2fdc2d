// The kernel: `agentix info` (version, uptime, counts, isolation backend), `agentix tools`,
// and the MCP servers behind `mcp:` grants (`agentix mcp servers|tools|approve|restart`).

import {call} from "./api.js";
import {h, replace, json} from "./dom.js";
import {actionButton, actionForm, done, showError} from "./ops.js";

export function render(root, ctx) {
  const info = h("div", {id: "kernel-info"});
  const tools = h("tbody", {id: "tool-rows"});
  const servers = h("div", {id: "mcp-servers"});
  const mcpTools = h("div", {id: "mcp-tools"});
  const msg = h("p", {class: "error", role: "alert", id: "kernel-msg"});
  const result = h("p", {class: "result", role: "status", hidden: true});
  const approve = actionForm(ctx, {
    id: "mcp-approve-form", title: "Approve an MCP tool (pin its description)", method: "mcp.approve", submit: "Approve",
    fields: [{name: "tool", label: "SERVER/TOOL or SERVER/*", required: true}],
    params: (v) => ({tool: v.tool.trim()}),
    onDone: (r) => { done(result, `approved: ${JSON.stringify(r.approved)}`); load(); },
  });
  root.append(
    h("div", {class: "toolbar"}, h("h1", {text: "Kernel"})), msg, result,
    h("div", {class: "grid"},
      h("section", {class: "card"}, h("h2", {text: "Kernel"}), info),
      h("section", {class: "card"}, h("h2", {text: "Tools"}),
        h("table", {}, h("thead", {}, h("tr", {}, h("th", {text: "tool"}), h("th", {text: "description"}))), tools)),
      h("section", {class: "card wide"}, h("h2", {text: "MCP servers"}), servers),
      h("section", {class: "card wide"}, h("h2", {text: "MCP tools"}), mcpTools),
      approve));

  async function load() {
    try {
      replace(info, json(await call("kernel.info", {})));
      const t = await call("tool.list", {});
      const list = Array.isArray(t) ? t : (t.tools || []);
      replace(tools, list.map((x) => h("tr", {}, h("td", {}, h("code", {text: x.name})), h("td", {text: x.description || ""}))));
      const s = await call("mcp.servers", {});
      const rows = Array.isArray(s.servers) ? s.servers : Object.values(s.servers || {});
      replace(servers, rows.length ? h("table", {}, h("tbody", {}, rows.map((srv) => h("tr", {},
        h("td", {}, h("code", {text: srv.name || ""})), h("td", {}, json(srv)),
        h("td", {}, actionButton(ctx, "Restart", "mcp.restart", {server: srv.name}, {cls: "small", msg, onDone: load}))))))
        : h("p", {class: "muted", text: "no MCP server is declared in the kernel's config"}));
      if (rows.length) replace(mcpTools, json((await call("mcp.tools", {})).tools));
      else replace(mcpTools, h("p", {class: "muted", text: "—"}));
    } catch (err) {
      showError(msg, err);
    }
  }
  load();
}
