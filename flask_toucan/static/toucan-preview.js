// flask_toucan preview: stand-ins for <tc-dashboard> and <tc-ai-assistant>.
// No Toucan, no CDN, no chart library: a dashboard draws a small SVG chart with sample
// numbers derived from the token's Row-Level-Security attributes (so switching users
// visibly changes the data), the assistant a sample question and an answer scoped to
// them; a footer shows the token's facts. Clearly labelled PREVIEW.
// Every auth-token value an element is given is kept in window.toucanPreview.tokens.

const registry = (window.toucanPreview = window.toucanPreview || { tokens: [] });
// Served by FakeToucan (`flask toucan fake`) as Toucan's embed.js, preview mode is off:
// say where the stand-ins come from instead of "PREVIEW".
const FAKE = import.meta.url.includes("/embed/embed.js");
const BADGE = FAKE ? "FAKE TOUCAN" : "PREVIEW";
const ORIGIN = FAKE
  ? "served by FakeToucan (flask toucan fake), not Toucan AI"
  : "flask_toucan preview mode, not connected to Toucan AI";
const SVG = "http://www.w3.org/2000/svg";
const REGIONS = ["EU", "US", "APAC"];
const QUARTERS = ["Q1", "Q2", "Q3", "Q4"];

function decode(token) {
  const parts = (token || "").split(".");
  if (parts.length !== 3 || parts[0] !== "fake") return null;
  try {
    const b64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch (e) {
    return null;
  }
}

// Deterministic sample numbers: the same attributes always draw the same chart.
function seeded(text) {
  let h = 2166136261;
  for (const ch of text) h = Math.imul(h ^ ch.codePointAt(0), 16777619) >>> 0;
  return () => {
    h = Math.imul(h ^ (h >>> 15), 2246822507) >>> 0;
    h = Math.imul(h ^ (h >>> 13), 3266489909) >>> 0;
    return ((h ^= h >>> 16) >>> 0) / 4294967296;
  };
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  node.append(...children);
  return node;
}

function svg(tag, attrs = {}, text = null) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  if (text !== null) node.textContent = text;
  return node;
}

function scopeOf(attributes) {
  const a = attributes || {};
  const tenant = a.tenant ?? a.tenant_id ?? null;
  const regions = a.region ? [String(a.region)] : REGIONS;
  return { tenant: tenant === null ? "all tenants" : String(tenant), regions };
}

function chart(id, attributes) {
  const { tenant, regions } = scopeOf(attributes);
  const random = seeded(`${id}|${tenant}|${regions.join(",")}`);
  const width = 480, height = 200, left = 36, bottom = 28, top = 12;
  const groupWidth = (width - left) / QUARTERS.length;
  const barWidth = Math.min(34, (groupWidth - 12) / regions.length);
  const values = QUARTERS.map(() => regions.map(() => Math.round(20 + random() * 80)));
  const max = Math.max(...values.flat());
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img",
                            "aria-label": `Sample revenue for ${tenant}, ${regions.join(" and ")}` });
  root.append(svg("line", { x1: left, y1: height - bottom, x2: width, y2: height - bottom,
                            class: "axis" }));
  QUARTERS.forEach((quarter, q) => {
    const x0 = left + q * groupWidth + (groupWidth - barWidth * regions.length) / 2;
    regions.forEach((region, r) => {
      const h = ((height - bottom - top) * values[q][r]) / max;
      const x = x0 + r * barWidth;
      root.append(svg("rect", { x: x + 2, y: height - bottom - h, width: barWidth - 4, height: h,
                                class: `bar r${REGIONS.indexOf(region) >= 0 ? REGIONS.indexOf(region) : 0}` }));
      root.append(svg("text", { x: x + barWidth / 2, y: height - bottom - h - 3, class: "value" },
                      String(values[q][r])));
    });
    root.append(svg("text", { x: left + q * groupWidth + groupWidth / 2, y: height - 8,
                              class: "label" }, quarter));
  });
  const legend = el("p", { className: "legend" });
  regions.forEach((region) => {
    const index = REGIONS.indexOf(region) >= 0 ? REGIONS.indexOf(region) : 0;
    legend.append(el("span", { className: `swatch r${index}` }), ` ${tenant} · ${region}  `);
  });
  return el("figure", {}, el("figcaption", { textContent: `Revenue by quarter — ${tenant}` }),
            root, legend);
}

function conversation(attributes) {
  const { tenant, regions } = scopeOf(attributes);
  const random = seeded(`assistant|${tenant}|${regions.join(",")}`);
  const products = ["Starter plan", "Pro plan", "Add-on seats", "Support"];
  const best = products[Math.floor(random() * products.length)];
  const growth = Math.round(5 + random() * 30);
  return el("div", { className: "chat" },
    el("p", { className: "q", textContent: "What sold best last quarter?" }),
    el("p", { className: "a", textContent:
      `For ${tenant} in ${regions.join(" and ")}: ${best}, up ${growth}% on the quarter before. ` +
      "(Sample answer: only the rows your token's attributes allow.)" }));
}

function fact(label, value, title) {
  return el("span", { className: "fact", title }, el("b", { textContent: `${label} ` }),
            el("code", { textContent: value }));
}

const STYLE = `
  :host { display: block; box-sizing: border-box; border: 2px dashed #d9822b; border-radius: 10px;
          padding: 12px 16px; font: 14px/1.45 system-ui, sans-serif; background: #fffaf3;
          color: #2a2118; overflow: hidden; min-width: 0; }
  :host([data-theme="dark"]) { background: #1f2228; color: #e8e4de; border-color: #e0a060; }
  header { display: flex; flex-wrap: wrap; align-items: center; gap: 6px 10px; }
  .badge { background: #d9822b; color: #fff; font-weight: 700; letter-spacing: .08em;
           padding: 2px 8px; border-radius: 4px; font-size: 12px; }
  h3 { margin: 0; font-size: 16px; overflow-wrap: anywhere; }
  figure { margin: 10px 0 4px; }
  figcaption { font-weight: 600; margin-bottom: 4px; overflow-wrap: anywhere; }
  svg { width: 100%; height: auto; display: block; max-height: 260px; }
  .axis { stroke: #b9a58f; }
  .bar.r0 { fill: #4c72b0; } .bar.r1 { fill: #dd8452; } .bar.r2 { fill: #55a868; }
  .swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; }
  .swatch.r0 { background: #4c72b0; } .swatch.r1 { background: #dd8452; }
  .swatch.r2 { background: #55a868; }
  .value, .label { font-size: 11px; text-anchor: middle; fill: currentColor; }
  .legend { margin: 2px 0 0; font-size: 13px; overflow-wrap: anywhere; }
  .chat { margin: 10px 0 4px; display: grid; gap: 8px; }
  .chat p { margin: 0; padding: 8px 10px; border-radius: 10px; max-width: 90%; }
  .q { justify-self: end; background: #d9822b; color: #fff; }
  .a { background: rgba(127, 127, 127, .15); }
  footer { margin-top: 10px; padding-top: 8px; border-top: 1px solid rgba(127, 127, 127, .35);
           display: flex; flex-wrap: wrap; gap: 4px 14px; font-size: 12px; }
  .fact { overflow-wrap: anywhere; min-width: 0; }
  .fact code { font-family: ui-monospace, monospace; }
  .note { margin: 6px 0 0; font-size: 12px; opacity: .8; }
  .expired { color: #d0312d; font-weight: 700; }
`;

let sharedSheet = null;
function sheet() {
  if (!sharedSheet) {
    sharedSheet = new CSSStyleSheet();
    sharedSheet.replaceSync(STYLE);
  }
  return sharedSheet;
}

class PreviewElement extends HTMLElement {
  static get observedAttributes() {
    return ["auth-token", "dashboard-id", "chart-id", "data-theme", "data-toucan-expires-at"];
  }

  constructor() {
    super();
    this.tokenHistory = [];
    this.attachShadow({ mode: "open" });
    // A constructed sheet, not a <style> element, so a strict CSP has nothing to block.
    this.shadowRoot.adoptedStyleSheets = [sheet()];
  }

  connectedCallback() {
    this.render();
    this.timer = setInterval(() => this.updateTimeLeft(), 1000);
  }

  disconnectedCallback() {
    clearInterval(this.timer);
  }

  attributeChangedCallback(name, oldValue, value) {
    if (name === "auth-token" && value && value !== oldValue) {
      this.tokenHistory.push(value);
      registry.tokens.push({ element: this.id || this.tagName.toLowerCase(), token: value, at: Date.now() });
    }
    if (this.isConnected) this.render();
  }

  subject() {
    const chartId = this.getAttribute("chart-id");
    if (chartId) return ["Chart", chartId];
    return ["Dashboard", this.getAttribute("dashboard-id") || "(none)"];
  }

  body(claims) {
    return chart(this.subject()[1], claims ? claims.attributes : null);
  }

  render() {
    const claims = decode(this.getAttribute("auth-token"));
    const [label, id] = this.subject();
    const header = el("header", {}, el("span", { className: "badge", textContent: BADGE }),
                      el("h3", { textContent: id ? `${label}: ${id}` : label }));
    const footer = el("footer");
    if (claims) {
      footer.append(
        fact("User", claims.sub, "the token's distinctId"),
        fact("Role", claims.role, "the token's role"),
        fact("Attributes", JSON.stringify(claims.attributes),
             "what Row-Level Security filters on: the chart above follows them"),
      );
      if (claims.permissions) {
        footer.append(fact("Permissions", JSON.stringify(claims.permissions), "passed to Toucan"));
      }
      if (claims.instance) footer.append(fact("Instance", claims.instance, "TOUCAN_INSTANCES"));
    } else {
      const opaque = this.getAttribute("auth-token") ? "opaque (not a preview token)" : "none";
      footer.append(fact("Token", opaque, ""));
    }
    this.timeLeft = fact("Time left", "", "until this token expires; it is renewed before then");
    footer.append(this.timeLeft,
                  fact("Tokens received", String(this.tokenHistory.length),
                       "1 is the page's own token; each renewal adds one"));
    const note = el("p", { className: "note", textContent:
      `Stand-in ${ORIGIN}: sample data shaped by the token.` });
    this.shadowRoot.replaceChildren(header, this.body(claims), footer, note);
    this.updateTimeLeft();
  }

  updateTimeLeft() {
    if (!this.timeLeft) return;
    const claims = decode(this.getAttribute("auth-token"));
    const exp = Number(this.getAttribute("data-toucan-expires-at")) || (claims && claims.exp);
    const cell = this.timeLeft.lastChild;
    if (!exp) {
      cell.textContent = "unknown";
      return;
    }
    const left = Math.round(exp - Date.now() / 1000);
    cell.className = left <= 0 ? "expired" : "";
    cell.textContent = left <= 0 ? "expired" : `${Math.floor(left / 60)} min ${left % 60} s`;
  }
}

class PreviewAssistant extends PreviewElement {
  subject() {
    return ["AI assistant", ""];
  }

  body(claims) {
    return conversation(claims ? claims.attributes : null);
  }
}

if (!customElements.get("tc-dashboard")) customElements.define("tc-dashboard", PreviewElement);
if (!customElements.get("tc-ai-assistant")) customElements.define("tc-ai-assistant", PreviewAssistant);

// <tc-result-renderer>: Toucan renders an assistant answer's visualization from its
// `payload` property. The stand-in draws the payload's title and series as bars.
class PreviewResult extends HTMLElement {
  constructor() {
    super();
    this.attachShadow({ mode: "open" });
    this.shadowRoot.adoptedStyleSheets = [sheet()];
  }

  set payload(value) {
    this._payload = value;
    this.render();
  }

  get payload() {
    return this._payload;
  }

  connectedCallback() {
    this.render();
  }

  render() {
    const p = this._payload || {};
    const series = Array.isArray(p.series) ? p.series : [];
    const header = el("header", {}, el("span", { className: "badge", textContent: BADGE }),
                      el("h3", { textContent: String(p.title || "Result") }));
    const width = 480, height = 160, bottom = 24, top = 14;
    const values = series.map((s) => Number(s && s.value) || 0);
    const max = Math.max(1, ...values);
    const step = width / Math.max(1, series.length);
    const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img",
                              "aria-label": String(p.title || "Result") });
    series.forEach((s, i) => {
      const h = ((height - bottom - top) * values[i]) / max;
      root.append(svg("rect", { x: i * step + 8, y: height - bottom - h, width: step - 16,
                                height: h, class: `bar r${i % 3}` }));
      root.append(svg("text", { x: i * step + step / 2, y: height - bottom - h - 3,
                                class: "value" }, String(values[i])));
      root.append(svg("text", { x: i * step + step / 2, y: height - 8, class: "label" },
                      String((s && s.name) || "")));
    });
    const note = el("p", { className: "note", textContent:
      "flask_toucan stand-in for <tc-result-renderer>: the payload your assistant answered." });
    this.shadowRoot.replaceChildren(header, el("figure", {}, root), note);
  }
}

if (!customElements.get("tc-result-renderer")) {
  customElements.define("tc-result-renderer", PreviewResult);
}
