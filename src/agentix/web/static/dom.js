// Building the page without ever parsing data as HTML.
//
// Every string that reaches the page goes through a text node (textContent) or
// setAttribute on an attribute name from ALLOWED_ATTRS; nothing here parses a string as HTML
// (tests/dashboard/test_static.py greps for the APIs that do), and the
// server's Content-Security-Policy refuses inline scripts anyway.

const ALLOWED_ATTRS = new Set([
  "class", "id", "href", "title", "type", "name", "value", "placeholder", "for", "role",
  "disabled", "hidden", "download", "colspan", "aria-label", "aria-live", "aria-disabled",
  "autocomplete", "inputmode", "rows", "min", "max", "step", "accept", "required", "spellcheck",
  "maxlength", "checked", "selected", "open",
  // SVG
  "viewBox", "width", "height", "x", "y", "x1", "y1", "x2", "y2", "cx", "cy", "r", "rx", "d",
  "points", "fill", "stroke", "stroke-width", "text-anchor", "dominant-baseline", "transform",
  "marker-end", "preserveAspectRatio", "refX", "refY", "orient", "markerWidth", "markerHeight",
]);
const SVG_NS = "http://www.w3.org/2000/svg";
const SVG_TAGS = new Set(["svg", "g", "rect", "line", "circle", "path", "text", "title", "polyline",
                          "defs", "marker"]);

function setAttr(el, key, value) {
  if (value === undefined || value === null || value === false) return;
  if (key.startsWith("data-")) { el.setAttribute(key, String(value)); return; }
  if (!ALLOWED_ATTRS.has(key)) throw new Error(`attribute ${key} is not allowed`);
  if (key === "href") {
    const s = String(value);
    // only in-app routes, same-origin paths and blob: downloads; never javascript: or data:
    if (!(s.startsWith("#") || s.startsWith("/") || s.startsWith("blob:"))) {
      throw new Error(`href ${s} is not allowed`);
    }
  }
  el.setAttribute(key, value === true ? "" : String(value));
}

// h("div", {class: "x", onclick: fn}, "text", child, [more children])
export function h(tag, props = {}, ...children) {
  const el = SVG_TAGS.has(tag) ? document.createElementNS(SVG_NS, tag) : document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "text") {
      el.textContent = value === null || value === undefined ? "" : String(value);
    } else {
      setAttr(el, key, value);
    }
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export function replace(el, ...children) {
  clear(el);
  return append(el, children);
}

export function fmtTime(ts) {
  if (ts === null || ts === undefined) return "";
  const d = typeof ts === "number" ? new Date(ts * 1000) : new Date(ts);
  return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

export function fmtDuration(s) {
  if (s === null || s === undefined) return "";
  if (s < 60) return `${s.toFixed(1)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} m ${Math.floor(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} m`;
}

export function json(value) {
  return h("pre", {class: "json", text: JSON.stringify(value, null, 2)});
}

export function badge(text, kind = "") {
  return h("span", {class: `badge ${kind}`.trim(), text});
}
