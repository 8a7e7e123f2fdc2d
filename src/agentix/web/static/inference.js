// Inference: per provider the queue, in-flight requests, tokens/s and fairness; per agent its
// share of tokens against its fair share by weight, its waits, and its cost. Simple SVG bars.

import {call} from "./api.js";
import {h, replace} from "./dom.js";

const W = 560, BAR = 16, GAP = 10, LEFT = 150;

function shareChart(agents, names) {
  // two bars per agent: the share it got (filled) and the share its weight entitles it to (outline)
  const wsum = agents.reduce((s, a) => s + a.weight, 0) || 1;
  const height = agents.length * (2 * BAR + GAP) + 24;
  const scale = (v) => Math.max(0, Math.min(1, v)) * (W - LEFT - 50);
  const g = [];
  agents.forEach((a, i) => {
    const y = 20 + i * (2 * BAR + GAP);
    const fair = a.weight / wsum;
    g.push(h("text", {x: LEFT - 6, y: y + BAR, "text-anchor": "end", class: "label", text: names.get(a.agent_id) || a.agent_id}));
    g.push(h("rect", {x: LEFT, y, width: scale(a.share), height: BAR - 2, class: "got"},
      h("title", {text: `share ${(a.share * 100).toFixed(1)}%`})));
    g.push(h("text", {x: LEFT + scale(a.share) + 4, y: y + BAR - 4, class: "value", text: `${(a.share * 100).toFixed(1)}%`}));
    g.push(h("rect", {x: LEFT, y: y + BAR, width: scale(fair), height: BAR - 2, class: "fair"},
      h("title", {text: `fair share by weight ${a.weight}: ${(fair * 100).toFixed(1)}%`})));
    g.push(h("text", {x: LEFT + scale(fair) + 4, y: y + 2 * BAR - 4, class: "value", text: `w=${a.weight}`}));
  });
  return h("svg", {viewBox: `0 0 ${W} ${height}`, class: "chart", role: "img", "aria-label": "share of tokens vs fair share"},
    h("text", {x: LEFT, y: 12, class: "legend", text: "filled: share of tokens · outline: fair share by weight"}), g);
}

export function render(root, ctx) {
  const body = h("div", {id: "inference"});
  root.append(h("div", {class: "toolbar"}, h("h1", {text: "Inference"})), body);

  async function refresh() {
    try {
      const [stats, agents] = await Promise.all([call("inference.stats"), call("dashboard.agents", {all: true})]);
      const names = new Map(agents.agents.map((a) => [a.agent_id, a.name]));
      const cost = new Map(agents.agents.map((a) => [a.agent_id, a.budget ? a.budget.used : {}]));
      const sections = Object.entries(stats.providers).map(([name, p]) => h("section", {class: "card wide", "data-provider": name},
        h("h2", {text: `provider ${name}${p.scripted ? " (scripted)" : ""}`}),
        h("dl", {class: "facts row"}, [
          ["queue", p.queue_length], ["in flight", p.in_flight],
          ["cap", p.limiter ? p.limiter.concurrency_cap : "—"], ["served", p.served],
          ["tokens/s", p.tokens_per_s.toFixed(1)], ["output tokens", p.output_tokens],
          ["fairness (Jain)", p.fairness.toFixed(3)], ["failures", p.failures],
        ].map(([k, v]) => [h("dt", {text: k}), h("dd", {text: String(v)})])),
        p.agents.length ? shareChart(p.agents, names) : h("p", {class: "muted", text: "no agent has asked this provider yet"}),
        p.agents.length ? h("table", {},
          h("thead", {}, h("tr", {}, ["agent", "weight", "waiting", "running", "served", "tokens", "mean wait", "p99 wait", "cost"].map((t) => h("th", {text: t})))),
          h("tbody", {}, p.agents.map((a) => h("tr", {},
            h("td", {}, h("a", {href: `#/agent/${encodeURIComponent(a.agent_id)}`, text: names.get(a.agent_id) || a.agent_id})),
            [a.weight, a.waiting, a.running, a.served, a.tokens].map((v) => h("td", {class: "num", text: String(v)})),
            h("td", {class: "num", text: `${(a.mean_wait * 1000).toFixed(0)} ms`}),
            h("td", {class: "num", text: `${(a.p99_wait * 1000).toFixed(0)} ms`}),
            h("td", {class: "num", text: `$${Number((cost.get(a.agent_id) || {}).cost_usd || 0).toFixed(4)}`}))))) : null));
      replace(body, sections.length ? sections : h("p", {class: "muted", text: "no inference provider is configured"}));
    } catch (err) {
      replace(body, h("p", {class: "error", text: `cannot read inference stats: ${err.message}`}));
    }
  }
  ctx.every(2000, refresh);
  refresh();
}
