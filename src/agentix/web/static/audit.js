// The audit log: `verify` status with the signed tree head, a live tail with filters, and an
// inclusion proof for any entry, downloaded as JSON (check it offline: docs/audit.md).

import {call} from "./api.js";
import {h, replace, badge, fmtTime} from "./dom.js";

const MAX_ROWS = 500;

function download(name, value) {
  const url = URL.createObjectURL(new Blob([JSON.stringify(value, null, 2)], {type: "application/json"}));
  const a = h("a", {href: url, download: name, hidden: true});
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

function summary(ev) {
  const d = ev.data || {};
  const bits = [];
  for (const k of ["name", "tool", "method", "error", "reason", "approval_id", "to_name", "by", "stage"]) {
    if (d[k] !== undefined && d[k] !== null && typeof d[k] !== "object") bits.push(`${k}=${d[k]}`);
  }
  return bits.join(" ");
}

export function render(root, ctx) {
  const verifyEl = h("div", {id: "verify", class: "card"});
  const agentF = h("input", {type: "text", id: "f-agent", placeholder: "agent id", autocomplete: "off"});
  const kindF = h("input", {type: "text", id: "f-kind", placeholder: "kind (e.g. tool.call or agent.)", autocomplete: "off"});
  const textF = h("input", {type: "text", id: "f-text", placeholder: "text in the entry", autocomplete: "off"});
  const rows = h("tbody", {id: "audit-rows"});
  const msg = h("p", {class: "error", role: "alert"});
  root.append(
    h("div", {class: "toolbar"}, h("h1", {text: "Audit log"})),
    verifyEl,
    h("form", {class: "filters", id: "audit-filters"}, agentF, kindF, textF,
      h("button", {type: "submit", text: "Filter"})),
    msg,
    h("div", {class: "scroll"}, h("table", {class: "audit"},
      h("thead", {}, h("tr", {}, ["seq", "time", "agent", "kind", "details", "taint", ""].map((t) => h("th", {text: t})))),
      rows)));

  async function verify() {
    replace(verifyEl, h("p", {class: "muted", text: "verifying…"}));
    try {
      const [rep, head] = await Promise.all([call("audit.verify"), call("audit.head", {sign: true})]);
      verifyEl.dataset.ok = String(rep.ok);
      replace(verifyEl,
        h("h2", {}, rep.ok ? badge("chain verified", "ok") : badge("VERIFICATION FAILED", "bad")),
        rep.ok ? h("p", {text: `${rep.entries} entries; every hash links to the one before it and the Merkle root matches.`})
               : h("p", {class: "error", id: "verify-failure",
                         text: `first bad entry: ${rep.first_bad_seq ?? "?"} (${rep.reason || "unknown"}) ${rep.detail || ""}`}),
        h("dl", {class: "facts"},
          h("dt", {text: "signed head"}), h("dd", {text: `size ${head.size} at ${head.timestamp}`}),
          h("dt", {text: "root"}), h("dd", {}, h("code", {class: "hash", text: head.root})),
          h("dt", {text: "signature"}), h("dd", {}, h("code", {class: "hash", text: head.signature || "unsigned"})),
          h("dt", {text: "public key"}), h("dd", {}, h("code", {class: "hash", text: head.public_key}))),
        h("div", {class: "buttons"},
          h("button", {type: "button", text: "Verify again", onclick: verify}),
          h("button", {type: "button", text: "Download signed head", onclick: () => download(`audit-head-${head.size}.json`, head)})));
    } catch (err) {
      verifyEl.dataset.ok = "false";
      replace(verifyEl, h("h2", {}, badge("cannot verify", "bad")), h("p", {class: "error", text: err.message}));
    }
  }

  function matches(ev) {
    const a = agentF.value.trim(), k = kindF.value.trim(), t = textF.value.trim().toLowerCase();
    if (a && ev.agent !== a) return false;
    if (k && !(k.endsWith(".") ? ev.kind.startsWith(k) : ev.kind === k)) return false;
    if (t && !JSON.stringify(ev).toLowerCase().includes(t)) return false;
    return true;
  }

  function row(ev) {
    return h("tr", {"data-seq": ev.seq},
      h("td", {class: "num", text: String(ev.seq)}),
      h("td", {text: fmtTime(ev.ts)}),
      h("td", {}, ev.agent ? h("a", {href: `#/agent/${encodeURIComponent(ev.agent)}`, text: ev.agent}) : "kernel"),
      h("td", {text: ev.kind}),
      h("td", {class: "details", text: summary(ev)}),
      h("td", {}, (ev.taint || []).map((t) => badge(t, "taint"))),
      h("td", {}, h("button", {type: "button", class: "small", "data-action": "prove", text: "proof",
        onclick: async () => {
          try {
            download(`audit-proof-${ev.seq}.json`, await call("audit.prove", {seq: ev.seq}));
          } catch (err) { msg.textContent = `proof of ${ev.seq}: ${err.message}`; }
        }})));
  }

  async function load() {
    msg.textContent = "";
    const params = {limit: MAX_ROWS};
    if (agentF.value.trim()) params.agent = agentF.value.trim();
    const k = kindF.value.trim();
    if (k && !k.endsWith(".")) params.kind = k;
    try {
      const r = await call("events.tail", params);
      replace(rows, r.events.filter(matches).reverse().map(row));
    } catch (err) {
      msg.textContent = `cannot read the log: ${err.message}`;
    }
  }

  root.querySelector("#audit-filters").addEventListener("submit", (e) => { e.preventDefault(); load(); });
  ctx.on((ev) => {
    if (!matches(ev)) return;
    rows.prepend(row(ev));
    while (rows.childElementCount > MAX_ROWS) rows.lastElementChild.remove();
  });
  verify();
  load();
}
