// flask_toucan preview: stand-ins for <tc-dashboard> and <tc-ai-assistant>.
// They draw no charts; they show which token each element holds (user, role,
// attributes, time left), read from the FakeToucan token, clearly marked PREVIEW.
// Every auth-token value an element is given is kept in window.toucanPreview.tokens.

const registry = (window.toucanPreview = window.toucanPreview || { tokens: [] });

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

function row(label, value) {
  const tr = document.createElement("tr");
  const th = document.createElement("th");
  const td = document.createElement("td");
  th.textContent = label;
  td.textContent = value;
  tr.append(th, td);
  return tr;
}

const STYLE = `
  :host { display: block; box-sizing: border-box; border: 2px dashed #d9822b;
          border-radius: 8px; padding: 12px 16px; font: 14px/1.4 system-ui, sans-serif;
          background: repeating-linear-gradient(45deg, #fffaf3, #fffaf3 12px, #fff3e4 12px, #fff3e4 24px);
          color: #33261a; overflow: auto; }
  .badge { display: inline-block; background: #d9822b; color: #fff; font-weight: 700;
           letter-spacing: .08em; padding: 2px 8px; border-radius: 4px; font-size: 12px; }
  h3 { margin: 8px 0; font-size: 16px; }
  table { border-collapse: collapse; }
  th { text-align: left; padding: 2px 12px 2px 0; color: #7a5a3a; font-weight: 600; }
  td { font-family: ui-monospace, monospace; word-break: break-all; }
  .expired { color: #b00020; font-weight: 700; }
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
    const chart = this.getAttribute("chart-id");
    if (chart) return ["Chart", chart];
    return ["Dashboard", this.getAttribute("dashboard-id") || "(none)"];
  }

  render() {
    const claims = decode(this.getAttribute("auth-token"));
    const root = this.shadowRoot;
    root.replaceChildren();
    const badge = document.createElement("span");
    badge.className = "badge";
    badge.textContent = "PREVIEW";
    const title = document.createElement("h3");
    const [label, id] = this.subject();
    title.textContent = `${label}: ${id}`;
    const note = document.createElement("p");
    note.textContent = "flask_toucan stand-in: not connected to Toucan AI, no real data.";
    const table = document.createElement("table");
    if (claims) {
      table.append(
        row("User", claims.sub),
        row("Role", claims.role),
        row("Attributes", JSON.stringify(claims.attributes)),
      );
      if (claims.permissions) table.append(row("Permissions", JSON.stringify(claims.permissions)));
    } else {
      table.append(row("Token", this.getAttribute("auth-token") ? "opaque (not a preview token)" : "none"));
    }
    this.timeLeft = row("Time left", "");
    this.timeLeft.dataset.role = "time-left";
    table.append(this.timeLeft, row("Tokens received", String(this.tokenHistory.length)));
    root.append(badge, title, note, table);
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
    return ["AI assistant", "chat"];
  }
}

if (!customElements.get("tc-dashboard")) customElements.define("tc-dashboard", PreviewElement);
if (!customElements.get("tc-ai-assistant")) customElements.define("tc-ai-assistant", PreviewAssistant);
