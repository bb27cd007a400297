// flask_toucan: hands each <tc-result-renderer data-toucan-result> the payload that
// toucan_result() rendered next to it as <script type="application/json">. The payload
// is data, never markup: it is parsed with JSON.parse and set as a DOM property.
// Results added later (a chat answer inserted by fetch or htmx) are picked up too.

function wire(root) {
  const elements = root.querySelectorAll
    ? root.querySelectorAll("tc-result-renderer[data-toucan-result]")
    : [];
  for (const element of elements) {
    if (element.toucanPayloadSet) continue;
    const holder = element.nextElementSibling;
    if (!holder || holder.tagName !== "SCRIPT" || !holder.hasAttribute("data-toucan-payload")) {
      continue;
    }
    try {
      element.payload = JSON.parse(holder.textContent);
      element.toucanPayloadSet = true;
      element.dispatchEvent(new CustomEvent("toucan:result", { bubbles: true }));
    } catch (error) {
      console.error("flask_toucan: a result payload is not JSON", error);
    }
  }
}

function start() {
  wire(document);
  new MutationObserver((changes) => {
    for (const change of changes) {
      for (const node of change.addedNodes) {
        if (node.nodeType === Node.ELEMENT_NODE) wire(node.parentNode || node);
      }
    }
  }).observe(document.documentElement, { childList: true, subtree: true });
}

// Custom elements are upgraded later than this module may run: wait for them, so the
// payload lands on the upgraded element (its setter), not a plain HTMLElement property.
customElements.whenDefined("tc-result-renderer").then(start);
