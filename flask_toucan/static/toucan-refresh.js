// flask_toucan refresh controller: keeps the tokens of <tc-dashboard> and
// <tc-ai-assistant> fresh while the page stays open.
//
// Tokens are opaque, so expiry comes from data the server rendered
// (data-toucan-expires-at on each element, data-server-now on this script for
// clock skew) and from the refresh endpoint's answers. Events on `document`:
//   toucan:token-refreshed  detail {expiresAt, expiresIn, elements, strategy}
//   toucan:token-error      detail {status, attempt, retryIn, expired, code}
//   toucan:session-ended    detail {status}        (401: nobody is signed in any more)
//   toucan:access-revoked   detail {code, elements} (403 for one page variant: those
//                                                    elements stop renewing, others go on)
// An origin refusal (403 origin_refused) logs a console error naming the fix and stops
// renewing; the elements stay. No event detail ever carries a token.

const SELECTOR = "tc-dashboard, tc-ai-assistant";
const MAX_BACKOFF_MS = 60000;
// 403 codes that concern one variant of the page (see flask_toucan.errors.InvalidVariant).
const REVOKED = new Set(["access_revoked", "variant_expired", "variant_invalid"]);

function start(script) {
  const endpoint = script.dataset.toucanRefresh;
  const strategy = script.dataset.strategy === "remount" ? "remount" : "attribute";
  // The server reuses a cached token while it has more than min(margin, lifetime / 4)
  // seconds left (flask_toucan.tokens.serving_margin), so renewing later than that is
  // what yields a new token.
  const marginMs = Math.max(0, Number(script.dataset.margin) || 0) * 1000;
  const MARGIN_SHARE = 0.25;
  const serverNow = Number(script.dataset.serverNow);
  const skewMs = Number.isFinite(serverNow) ? serverNow * 1000 - Date.now() : 0;

  const groups = new Map(); // variant reference ("" = default) -> state
  const waiting = new Set(); // groups due while another request was in flight
  let inFlight = null; // the group whose request is under way
  let stopped = false;

  const toClient = (serverEpochSeconds) => serverEpochSeconds * 1000 - skewMs;
  const toServer = (clientMs) => ((clientMs + skewMs) / 1000).toFixed(3);
  const variantOf = (el) => el.getAttribute("data-toucan-variant") || "";

  function emit(name, detail) {
    document.dispatchEvent(new CustomEvent(name, { detail, bubbles: true }));
  }

  function membersOf(group) {
    return Array.from(document.querySelectorAll(SELECTOR)).filter(
      (el) => variantOf(el) === group.key,
    );
  }

  function give(el, group) {
    if (el.getAttribute("auth-token") === group.token) return false;
    const fresh = {
      "auth-token": group.token,
      "data-toucan-expires-at": String(toServer(group.expiresAt)),
    };
    if (strategy === "attribute") {
      for (const [name, value] of Object.entries(fresh)) el.setAttribute(name, value);
      return true;
    }
    // remount: a new element that never saw the old token, in the same place.
    const copy = document.createElement(el.localName);
    for (const attr of Array.from(el.attributes)) {
      copy.setAttribute(attr.name, fresh[attr.name] ?? attr.value);
    }
    for (const [name, value] of Object.entries(fresh)) copy.setAttribute(name, value);
    el.childNodes.forEach((child) => copy.append(child.cloneNode(true)));
    el.replaceWith(copy);
    return true;
  }

  function leadMs(group) {
    const life = group.lifetimeMs || Math.max(0, group.expiresAt - Date.now());
    const share = life * MARGIN_SHARE;
    return marginMs ? Math.min(marginMs, share) : share;
  }

  function schedule(group, delayMs) {
    clearTimeout(group.timer);
    if (stopped || group.revoked) return;
    let wait = delayMs;
    if (wait === undefined) {
      // Renew between 75% and 95% of the lead before expiry: inside the server's
      // margin (so it mints rather than hands back the cached token), and
      // jittered so many open tabs do not renew in the same second.
      const lead = leadMs(group) * (0.75 + 0.2 * Math.random());
      wait = group.expiresAt - lead - Date.now();
    }
    wait = Math.max(0, wait);
    group.dueAt = Date.now() + wait;
    group.timer = setTimeout(() => renew(group), wait);
  }

  function track(el) {
    if (stopped) return;
    const key = variantOf(el);
    const token = el.getAttribute("auth-token");
    const expiresAt = toClient(Number(el.getAttribute("data-toucan-expires-at")));
    const lifetimeMs = Math.max(0, Number(el.getAttribute("data-toucan-lifetime")) || 0) * 1000;
    let group = groups.get(key);
    if (!group) {
      if (!token || !Number.isFinite(expiresAt)) return;
      // key: the reference the page was rendered with (it groups the elements);
      // reference: the latest one the server signed, sent with the next refresh.
      group = {
        key,
        reference: key,
        token,
        expiresAt,
        lifetimeMs,
        failures: 0,
        timer: null,
        dueAt: 0,
      };
      groups.set(key, group);
      schedule(group);
      return;
    }
    if (token && Number.isFinite(expiresAt) && expiresAt > group.expiresAt) {
      // A fragment arrived with a newer token than ours: adopt it everywhere.
      group.token = token;
      group.expiresAt = expiresAt;
      membersOf(group).forEach((member) => give(member, group));
      schedule(group);
    } else {
      give(el, group);
    }
  }

  async function renew(group) {
    if (stopped || group.revoked || inFlight === group) return; // revoked or under way
    if (inFlight) {
      waiting.add(group);
      return;
    }
    inFlight = group;
    clearTimeout(group.timer);
    let response = null;
    let data = null;
    let code = null;
    try {
      response = await fetch(endpoint, {
        method: "POST",
        credentials: "same-origin",
        cache: "no-store",
        headers: {
          "X-Toucan-Refresh": "1",
          "Content-Type": "application/json",
          Accept: "application/json",
        },
        body: JSON.stringify(group.reference ? { variant: group.reference } : {}),
      });
      if (response.ok) {
        data = await response.json();
      } else if (response.status === 403) {
        code = ((await response.json().catch(() => null)) || {}).error || null;
      }
    } catch (error) {
      data = null;
    }
    inFlight = null;
    const status = response ? response.status : 0;
    if (data && typeof data.token === "string" && Number(data.expiresIn) > 0) {
      succeeded(group, data);
    } else if (status === 403 && REVOKED.has(code)) {
      revoke(group, code);
    } else if (status === 403 && code === "origin_refused") {
      refused(group, code);
    } else if (status === 401 || status === 403) {
      end(status);
    } else {
      // The server's back-off for this identity (Retry-After, seconds): retrying sooner
      // would only be told the same.
      const hint = response ? Number(response.headers.get("Retry-After")) : NaN;
      failed(group, status, Number.isFinite(hint) && hint > 0 ? hint * 1000 : 0);
    }
    const next = waiting.values().next().value;
    if (next) {
      waiting.delete(next);
      // It may have been served meanwhile (a newer token adopted from a fragment).
      if (Date.now() >= next.dueAt) renew(next);
    }
  }

  function succeeded(group, data) {
    group.failures = 0;
    if (group.reference && typeof data.variant === "string" && data.variant) {
      group.reference = data.variant; // signed anew: the variant outlives the page's own
    }
    // The absolute expiry (server clock, corrected for skew) is more precise
    // than the whole seconds of expiresIn.
    const absolute = Date.parse(data.expiresAt) - skewMs;
    const expiresAt = Number.isFinite(absolute)
      ? absolute
      : Date.now() + Number(data.expiresIn) * 1000;
    if (data.token === group.token) {
      // Handed back the token we hold: the server still finds it fresh enough.
      // Ask again a little later instead of spinning.
      schedule(group, Math.max(1000, (group.expiresAt - Date.now() - leadMs(group)) / 2));
      return;
    }
    group.token = data.token;
    group.expiresAt = expiresAt;
    group.lifetimeMs = Number(data.expiresIn) * 1000;
    let updated = 0;
    membersOf(group).forEach((el) => {
      if (give(el, group)) updated += 1;
    });
    schedule(group);
    emit("toucan:token-refreshed", {
      expiresAt: data.expiresAt,
      expiresIn: Number(data.expiresIn),
      elements: updated,
      strategy,
    });
  }

  function failed(group, status, retryAfterMs) {
    group.failures += 1;
    const left = group.expiresAt - Date.now();
    const base = Math.min(MAX_BACKOFF_MS, 500 * 2 ** (group.failures - 1));
    let delay = base / 2 + Math.random() * (base / 2);
    // Never give up while the token is still valid: keep a few tries before expiry.
    if (left > 0) delay = Math.min(delay, Math.max(250, left / 3));
    if (retryAfterMs) delay = retryAfterMs + Math.random() * 100;
    schedule(group, delay);
    emit("toucan:token-error", {
      status,
      attempt: group.failures,
      retryIn: Math.round(delay),
      expired: left <= 0,
      code: null,
    });
  }

  // This variant may no longer be renewed (the user lost access, or the page is too
  // old): its elements keep their current token and stop renewing; other groups go on.
  function revoke(group, code) {
    clearTimeout(group.timer);
    group.revoked = true;
    emit("toucan:access-revoked", { code, elements: membersOf(group).length });
  }

  function refused(group, code) {
    clearTimeout(group.timer);
    group.revoked = true;
    console.error(
      "flask_toucan: the token refresh endpoint refused this page's origin (" +
        location.origin +
        "). Behind a TLS-terminating proxy, wrap the app in werkzeug's ProxyFix; for " +
        "another origin of yours, list it in TOUCAN_TRUSTED_ORIGINS.",
    );
    emit("toucan:token-error", { status: 403, attempt: 1, retryIn: null, expired: false, code });
  }

  function end(status) {
    stopped = true;
    groups.forEach((group) => clearTimeout(group.timer));
    observer.disconnect();
    emit("toucan:session-ended", { status });
  }

  // After sleep or a hidden tab, timers fire late or not at all: catch up at once.
  function catchUp() {
    if (stopped || document.visibilityState === "hidden") return;
    groups.forEach((group) => {
      if (Date.now() >= group.dueAt) renew(group);
    });
  }

  const observer = new MutationObserver((mutations) => {
    for (const mutation of mutations) {
      for (const node of mutation.addedNodes) {
        if (node.nodeType !== Node.ELEMENT_NODE) continue;
        if (node.matches(SELECTOR)) track(node);
        node.querySelectorAll(SELECTOR).forEach(track);
      }
    }
  });

  document.querySelectorAll(SELECTOR).forEach(track);
  observer.observe(document.documentElement, { childList: true, subtree: true });
  document.addEventListener("visibilitychange", catchUp);
  window.addEventListener("online", catchUp);
  window.addEventListener("pageshow", catchUp);
  setInterval(catchUp, 15000);
}

const script = document.querySelector("script[data-toucan-refresh]");
if (script && !window.__toucanRefreshStarted) {
  window.__toucanRefreshStarted = true;
  start(script);
}
