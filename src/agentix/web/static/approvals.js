// The approvals queue: the exact action (tool and arguments, as the kernel holds them), who
// asks, why (the manifest's approval_required, or the taint that triggered it), and
// approve / deny with a reason. Laid out as cards so it works on a phone.

import {call} from "./api.js";
import {h, replace, badge, json, fmtTime} from "./dom.js";

function countdown(deadline) {
  const s = Math.max(0, deadline - Date.now() / 1000);
  return s > 3600 ? `${(s / 3600).toFixed(1)} h left` : s > 60 ? `${Math.floor(s / 60)} min left` : `${Math.floor(s)} s left`;
}

// Where each taint label entered the asking agent's context: the first of its audit entries
// that carries the label (a message received, a page fetched, a tool's output…).
function entered(ev) {
  const d = ev.data || {};
  if (ev.kind === "message.delivered") return `a message from ${d.from_name || "?"} (${d.from || "operator"})`;
  const what = d.tool ? `${ev.kind} ${d.tool}` : ev.kind;
  const arg = d.url || d.path || (d.args && (d.args.url || d.args.path));
  return arg ? `${what} ${arg}` : what;
}

function origins(agent, taint) {
  const dd = h("dd", {class: "origins"}, h("span", {class: "muted", text: "…"}));
  call("events.tail", {agent, limit: 1000}).then((r) => {
    const rows = taint.map((label) => {
      const first = r.events.find((ev) => (ev.taint || []).includes(label));
      return h("div", {}, badge(label, "taint"), " ",
        first ? `${entered(first)} (audit seq ${first.seq})` : "(before the entries shown)");
    });
    replace(dd, rows);
  }).catch((err) => replace(dd, h("span", {class: "error", text: `${err.code}: ${err.message}`})));
  return dd;
}

export function render(root, ctx) {
  const list = h("div", {class: "cards", id: "approvals"});
  const status = h("p", {class: "muted"});
  const showAll = h("input", {type: "checkbox", id: "show-answered"});
  root.append(
    h("div", {class: "toolbar"}, h("h1", {text: "Approvals"}),
      h("label", {for: "show-answered"}, showAll, " show answered"), status),
    list);

  function card(a, req, names) {
    const reason = h("input", {type: "text", name: "reason", placeholder: "reason (recorded in the audit log)",
                               "aria-label": "reason", autocomplete: "off"});
    const msg = h("p", {class: "error", role: "alert"});
    const answer = (approve) => async () => {
      msg.textContent = "";
      try {
        const body = {id: a.id, approve};
        if (reason.value.trim()) body.reason = reason.value.trim();
        await call("approval.respond", body);
        refresh();
      } catch (err) {
        msg.textContent = err.message;
        msg.dataset.code = err.code;
      }
    };
    const pending = a.state === "pending";
    const approveBtn = h("button", {type: "button", class: "ok", "data-action": "approve", text: "Approve", onclick: answer(true)});
    const denyBtn = h("button", {type: "button", class: "danger", "data-action": "deny", text: "Deny", onclick: answer(false)});
    for (const b of [approveBtn, denyBtn]) {
      if (!ctx.operator) {
        b.disabled = true;
        b.title = "your token has the viewer role: only an operator token may answer";
      }
    }
    const why = req ? req.data.why : null;
    const taint = req ? req.taint || [] : [];
    return h("article", {class: `card approval state-${a.state}`, "data-approval-id": a.id, "data-state": a.state},
      h("header", {},
        h("h2", {}, h("code", {text: a.tool})),
        badge(a.state, a.state === "pending" ? "warn" : a.state === "granted" ? "ok" : "bad")),
      h("dl", {class: "facts"},
        h("dt", {text: "asked by"}),
        h("dd", {}, h("a", {href: `#/agent/${encodeURIComponent(a.agent)}`, text: names.get(a.agent) || a.agent}),
          h("small", {class: "id", text: ` ${a.agent}`})),
        h("dt", {text: "why"}),
        h("dd", {text: why === "taint" ? "its context is tainted (the taint policy asks a human)" :
                        why === "approval_required" ? "the manifest lists this tool under approval_required" : (why || "—")}),
        h("dt", {text: "taint"}),
        h("dd", {}, taint.length ? taint.map((t) => badge(t, "taint")) : "none"),
        taint.length ? [h("dt", {text: "tainted by"}), origins(a.agent, taint)] : null,
        h("dt", {text: "asked"}), h("dd", {text: fmtTime(a.created_at)}),
        h("dt", {text: pending ? "deadline" : "answer"}),
        h("dd", {text: pending ? `${fmtTime(a.deadline)} (${countdown(a.deadline)}; no answer = deny)`
                               : `${a.state}${a.reason ? `: ${a.reason}` : ""}${a.answered_by ? ` by ${a.answered_by}` : ""}`}),
        h("dt", {text: "action hash"}), h("dd", {}, h("code", {class: "hash", text: a.action_hash}))),
      h("h3", {text: "exact action (arguments)"}),
      json(a.args),
      pending ? h("div", {class: "answer"}, reason, h("div", {class: "buttons"}, approveBtn, denyBtn)) : null,
      msg);
  }

  async function refresh() {
    try {
      const [r, reqs, agents] = await Promise.all([
        call("approval.list", {all: showAll.checked}),
        call("events.tail", {kind: "approval.requested", limit: 1000}),
        call("agent.list", {all: true}),
      ]);
      const byId = new Map(reqs.events.map((e) => [e.data.approval_id, e]));
      const names = new Map(agents.agents.map((a) => [a.agent_id, a.name]));
      const items = r.approvals.slice().sort((x, y) => y.created_at - x.created_at);
      // keep a card that did not change (a reason being typed survives a refresh)
      const kept = new Map([...list.querySelectorAll("article[data-approval-id]")]
        .map((el) => [`${el.dataset.approvalId}:${el.dataset.state}`, el]));
      replace(list, items.length ? items.map((a) => kept.get(`${a.id}:${a.state}`) || card(a, byId.get(a.id), names))
                                 : h("p", {class: "muted", id: "no-approvals", text: "Nothing is waiting for you."}));
      status.textContent = `${r.approvals.filter((a) => a.state === "pending").length} pending`;
    } catch (err) {
      status.textContent = `cannot list approvals: ${err.message}`;
      status.className = "error";
    }
  }
  showAll.addEventListener("change", refresh);
  ctx.on((ev) => { if (ev.kind.startsWith("approval.")) refresh(); });
  ctx.every(10000, refresh);
  refresh();
}
