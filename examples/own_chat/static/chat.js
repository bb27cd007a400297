// The chat page, enhanced: a question is posted with fetch and its answer streams in as
// newline-delimited JSON events (status and Toucan's progress, text as it comes, then the
// sanitized answer and its charts). Without JavaScript the same form posts normally.
// Nothing here builds HTML from text: text goes in as textContent; only the server's
// sanitized answer and its toucan_result() markup are inserted as HTML.

const form = document.getElementById("ask-form");
const conversation = document.getElementById("conversation");
const liveNotice = document.getElementById("live-notice");
const csrfToken = document.querySelector('meta[name="csrf-token"]').content;

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function notify(text) {
  liveNotice.textContent = text;
  liveNotice.hidden = !text;
}

function newTurn(question) {
  const previous = document.getElementById("latest");
  if (previous) previous.removeAttribute("id");
  const turn = element("article", "turn");
  turn.id = "latest";
  turn.append(element("p", "question", question));
  const progress = element("ul", "steps");
  const answer = element("div", "answer");
  const results = element("div", "results");
  turn.append(progress, answer, results);
  conversation.append(turn);
  return { turn, progress, answer, results };
}

function showError(parts, text, question) {
  parts.answer.remove();
  const box = element("div", "error");
  box.setAttribute("role", "alert");
  box.append(element("p", "", text));
  const retry = element("button", "", "Retry");
  retry.type = "button";
  retry.addEventListener("click", () => {
    parts.turn.remove();
    ask(question);
  });
  box.append(retry);
  parts.turn.append(box);
}

function handle(parts, event, question) {
  switch (event.event) {
    case "status":
    case "progress":
      parts.progress.append(element("li", event.event, event.text));
      break;
    case "delta":
      parts.answer.textContent += event.text;
      break;
    case "done":
      parts.answer.innerHTML = event.answer_html; // sanitized by nh3 on the server
      parts.results.innerHTML = event.results_html; // toucan_result(): payloads as JSON data
      break;
    case "error":
      showError(parts, event.text, question);
      break;
  }
}

async function ask(question) {
  notify("");
  const body = new FormData(form);
  body.set("question", question);
  let response;
  try {
    response = await fetch(form.action, {
      method: "POST",
      body,
      headers: { Accept: "application/x-ndjson", "X-CSRFToken": csrfToken },
      credentials: "same-origin",
    });
  } catch (error) {
    notify("The chat could not reach the server. Try again.");
    return;
  }
  if (!response.ok) {
    let text = "The question could not be asked.";
    try {
      text = (await response.json()).error || text;
    } catch (error) {
      // not JSON (a CSRF refusal page, say): the generic message stands
    }
    notify(text);
    return;
  }
  const parts = newTurn(question);
  form.question.value = "";
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffered += value;
    const lines = buffered.split("\n");
    buffered = lines.pop();
    for (const line of lines) {
      if (line.trim()) handle(parts, JSON.parse(line), question);
    }
  }
}

form.addEventListener("submit", (submitted) => {
  submitted.preventDefault();
  const question = form.question.value.trim();
  if (question) ask(question);
});

// A "Retry" rendered by the server (a failed turn before a reload) asks again in place.
for (const retry of document.querySelectorAll("form.retry")) {
  retry.addEventListener("submit", (submitted) => {
    submitted.preventDefault();
    retry.closest(".turn").remove();
    ask(retry.question.value);
  });
}
