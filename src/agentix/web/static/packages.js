// Packages and snapshots (`agentix packages ls|inspect|verify|rm`, `pull`, `build`, `sign`,
// `push`, `run REF --accept`, `restore`), the trust policy (`agentix trust list|add|
// allow-unsigned`) and the signing keys (`agentix keys list`).
//
// Running a package shows the capabilities it declares, each with a box to tick: nothing is
// granted unless the operator ticks it (the CLI's --accept), and the kernel grants at most
// what was declared and accepted.

import {call} from "./api.js";
import {h, replace, badge, json} from "./dom.js";
import {actionButton, actionForm, done, lines, parseMessage, showError} from "./ops.js";

export function render(root, ctx) {
  const rows = h("tbody", {id: "package-rows"});
  const msg = h("p", {class: "error", role: "alert", id: "package-msg"});
  const detail = h("div", {id: "package-detail"});
  const result = h("p", {class: "result", id: "package-result", role: "status", hidden: true});
  const trustEl = h("div", {id: "trust"});
  const keysEl = h("tbody", {id: "key-rows"});

  const simple = (id, title, method, fields, params, text) => actionForm(ctx, {
    id, title, method, fields, params, submit: title,
    onDone: (r) => { done(result, text(r)); loadList(); loadTrust(); },
  });

  root.append(
    h("div", {class: "toolbar"}, h("h1", {text: "Packages and snapshots"})),
    result,
    h("section", {class: "card wide"}, h("h2", {text: "Local packages"}), msg,
      h("div", {class: "scroll"}, h("table", {},
        h("thead", {}, h("tr", {}, ["reference", "digest", "signed", ""].map((t) => h("th", {text: t})))), rows))),
    detail,
    h("div", {class: "grid ops"},
      simple("pull-form", "Pull", "package.pull",
        [{name: "ref", label: "Reference (NAME:TAG or NAME@sha256:…)", required: true},
         {name: "allow_rollback", label: "accept a version older than one seen before", type: "checkbox"}],
        (v) => ({ref: v.ref.trim(), allow_rollback: v.allow_rollback}),
        (r) => `pulled ${r.ref} ${r.digest} (${r.verdict.basis === "signed" ? `signed by ${r.verdict.keyid}` : "unsigned, allowed by policy"})`),
      simple("build-form", "Build", "package.build",
        [{name: "context", label: "Build directory (absolute, on the kernel's host)", required: true},
         {name: "tag", label: "Tag (NAME:TAG)", required: true},
         {name: "agentfile", label: "Agentfile (default: in the directory)", placeholder: "optional"}],
        (v) => ({context: v.context.trim(), tag: v.tag.trim(), ...(v.agentfile.trim() ? {agentfile: v.agentfile.trim()} : {})}),
        (r) => `built ${r.ref} ${r.digest}`),
      simple("sign-form", "Sign", "package.sign",
        [{name: "ref", label: "Reference", required: true}, {name: "key", label: "Signing key", value: "default", required: true}],
        (v) => ({ref: v.ref.trim(), key: v.key.trim()}),
        (r) => `signed ${r.name} ${r.version} with key ${r.keyid}`),
      simple("push-form", "Push", "package.push",
        [{name: "ref", label: "Reference (with its registry host)", required: true}],
        (v) => ({ref: v.ref.trim()}),
        (r) => `pushed ${r.ref} (${r.blobs_sent} blobs sent)`)),
    h("section", {class: "card wide"}, h("h2", {text: "Trust policy"}), trustEl),
    h("div", {class: "grid ops"},
      simple("trust-form", "Trust a key", "trust.add",
        [{name: "key", label: "Public key (ed25519:…), key file or local key name", required: true},
         {name: "pattern", label: "For names matching", placeholder: "registry.example/team/*", required: true}],
        (v) => ({key: v.key.trim(), pattern: v.pattern.trim()}),
        (r) => `trusted the key for ${r.pattern ?? "the pattern"}`),
      simple("unsigned-form", "Allow unsigned", "trust.allow_unsigned",
        [{name: "pattern", label: "Accept unsigned packages for names matching", required: true}],
        (v) => ({pattern: v.pattern.trim()}),
        () => "unsigned packages accepted for the pattern (each acceptance is audited)")),
    h("section", {class: "card wide"}, h("h2", {text: "Signing keys"}),
      h("table", {}, h("thead", {}, h("tr", {}, ["name", "key id", "public key"].map((t) => h("th", {text: t})))), keysEl)));

  function runPanel(info) {
    // the accept step: one box per declared capability, none ticked
    const boxes = info.capabilities.map((g, i) => {
      const box = h("input", {type: "checkbox", id: `accept-${i}`, name: "accept", value: g});
      return {g, box, el: h("div", {}, h("label", {for: `accept-${i}`, class: "check"}, box, " ", h("code", {text: g})))};
    });
    const intro = h("div", {class: "accept", id: "accept-step"},
      h("p", {text: info.capabilities.length
        ? `${info.ref} declares ${info.capabilities.length} capabilit${info.capabilities.length === 1 ? "y" : "ies"}. ` +
          "Tick the ones you grant: nothing is granted unless ticked."
        : `${info.ref} declares no capability: it runs with its workspace only.`}),
      boxes.map((b) => b.el));
    return actionForm(ctx, {
      id: "run-form", title: `Run ${info.ref}`, method: "package.run", idempotent: true, submit: "Run with the ticked capabilities",
      intro,
      fields: [{name: "name", label: "Agent name", placeholder: "default: the package's"},
               {name: "message", label: "First message (JSON or text)", type: "textarea", rows: 2}],
      params: (v) => ({ref: info.ref, accept: boxes.filter((b) => b.box.checked).map((b) => b.g),
                       ...(v.name.trim() ? {name: v.name.trim()} : {}),
                       ...(parseMessage(v.message) !== null ? {message: parseMessage(v.message)} : {})}),
      onDone: (r, {replayed}) => done(result,
        `${replayed ? "already started by this same request: " : ""}${r.name || ""} ${r.agent_id} verified (${r.verdict.basis}); granted: ${r.granted.map((g) => typeof g === "string" ? g : JSON.stringify(g)).join(", ") || "nothing"}`,
        `#/agent/${encodeURIComponent(r.agent_id)}`, "open the agent"),
    });
  }

  function restorePanel(info) {
    return actionForm(ctx, {
      id: "restore-form", title: `Restore ${info.ref}`, method: "snapshot.restore", submit: "Restore as a new agent",
      intro: h("div", {}, h("p", {text: "Recorded grants:"}),
        h("ul", {}, (info.grants || []).flatMap((g) => g.grants || [g]).map((g) => h("li", {}, h("code", {text: typeof g === "string" ? g : JSON.stringify(g)}))))),
      fields: [{name: "name", label: "New agent's name", placeholder: "default: the snapshot's"},
               {name: "grants", label: "Only these grants (one per line; each covered by a recorded one)", type: "textarea", rows: 2},
               {name: "accept_all", label: "a snapshot this kernel did not make: grant everything it records", type: "checkbox"}],
      params: (v) => ({ref: info.ref, ...(v.name.trim() ? {name: v.name.trim()} : {}),
                       ...(lines(v.grants).length ? {grants: lines(v.grants)} : {}),
                       ...(v.accept_all ? {accept_all: true} : {})}),
      onDone: (r) => done(result, `restored ${r.ref} as ${r.name} ${r.agent_id}`, `#/agent/${encodeURIComponent(r.agent_id)}`, "open the agent"),
    });
  }

  async function show(ref, what) {
    const dmsg = h("p", {class: "error", role: "alert"});
    replace(detail, h("section", {class: "card wide", id: "package-inspect"}, h("h2", {text: ref}), dmsg));
    try {
      if (what === "verify") {
        const r = await call("package.verify", {ref});
        replace(detail, h("section", {class: "card wide", id: "package-inspect"},
          h("h2", {}, `verify ${ref} `, badge("accepted", "ok")), json(r)));
        return;
      }
      const info = await call("package.inspect", {ref});
      const snap = info.kind === "snapshot";
      replace(detail, h("div", {class: "grid"},
        h("section", {class: "card wide", id: "package-inspect", "data-kind": snap ? "snapshot" : "package"},
          h("h2", {}, `${ref} `, badge(snap ? "snapshot" : "package")),
          snap ? null : h("h3", {text: "declared capabilities"}),
          snap ? null : h("ul", {}, info.capabilities.length ? info.capabilities.map((g) => h("li", {}, h("code", {text: g})))
                                                             : h("li", {class: "muted", text: "none"})),
          h("h3", {text: "everything"}), json(info)),
        what === "run" ? (snap ? restorePanel(info) : runPanel(info)) : null));
    } catch (err) {
      showError(dmsg, err, what === "verify" ? "package.verify" : "package.inspect");
    }
  }

  async function loadList() {
    try {
      const r = await call("package.list", {});
      replace(rows, r.packages.length ? r.packages.map((p) => h("tr", {"data-ref": p.ref},
        h("td", {}, h("code", {text: p.ref})), h("td", {}, h("code", {class: "hash", text: p.digest})),
        h("td", {}, p.signed ? badge("signed", "ok") : badge("unsigned", "warn")),
        h("td", {class: "buttons"},
          h("button", {type: "button", class: "small", "data-action": "package.inspect", text: "Inspect", onclick: () => show(p.ref, "inspect")}),
          h("button", {type: "button", class: "small", "data-action": "package.verify", text: "Verify", onclick: () => show(p.ref, "verify")}),
          (() => {
            const b = h("button", {type: "button", class: "small ok", "data-action": "run", text: "Run / restore…", onclick: () => show(p.ref, "run")});
            if (!ctx.operator) { b.disabled = true; b.title = "your token has the viewer role: only an operator token may run packages"; }
            return b;
          })(),
          actionButton(ctx, "Remove", "package.rm", {ref: p.ref}, {cls: "small danger", msg,
            confirmText: `Remove ${p.ref} from the local store?`,
            onDone: (x) => { done(result, `removed ${x.ref} (${x.blobs_removed} blobs freed)`); loadList(); }}))))
        : h("tr", {}, h("td", {colspan: 4, class: "muted", text: "no local packages (agentix build / pull)"})));
    } catch (err) {
      showError(msg, err, "package.list");
    }
  }

  async function loadTrust() {
    try {
      replace(trustEl, json(await call("trust.list", {})));
    } catch (err) {
      replace(trustEl, h("p", {class: "error", text: `${err.code}: ${err.message}`}));
    }
    try {
      const r = await call("keys.list", {});
      replace(keysEl, r.keys.length ? r.keys.map((k) => h("tr", {}, h("td", {text: k.name}), h("td", {}, h("code", {text: k.keyid})),
        h("td", {}, h("code", {class: "hash", text: k.public_key}))))
        : h("tr", {}, h("td", {colspan: 3, class: "muted", text: "no signing keys (agentix keys generate, at the kernel's host)"})));
    } catch (err) {
      replace(keysEl, h("tr", {}, h("td", {colspan: 3, class: "error", text: `${err.code}: ${err.message}`})));
    }
  }

  ctx.on((ev) => { if (ev.kind.startsWith("package.") || ev.kind.startsWith("snapshot.") || ev.kind.startsWith("trust.")) loadList(); });
  loadList();
  loadTrust();
}
