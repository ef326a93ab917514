// The campaign editor's backtest panel (templates/campaigns/backtest.html): posts the editor's form, shows the
// progress the server streams (NDJSON lines), then the result it draws; Cancel (or leaving the page) closes the
// connection, which stops the work on the server. A file of its own: the Content-Security-Policy allows no inline
// script.
"use strict";

let runningBacktest = null;

document.addEventListener("click", (event) => {
  if (event.target.closest("[data-backtest-cancel]")) {
    runningBacktest?.abort();
    return;
  }
  const button = event.target.closest("[data-backtest-run]");
  if (!button) {
    return;
  }
  const panel = button.closest("#backtest");
  const body = new FormData(document.querySelector(panel.dataset.form));
  for (const field of panel.querySelectorAll("input[name]")) {
    body.set(field.name, field.value);
  }
  runBacktest(panel, body);
});

function showProgress(panel, progress) {
  const bar = panel.querySelector("progress");
  const numbers = new Intl.NumberFormat(document.documentElement.lang || undefined);
  bar.value = progress.percent;
  panel.querySelector("[data-backtest-status]").textContent = panel.dataset.progress
    .replace("{percent}", `${numbers.format(Math.floor(progress.percent))} %`)
    .replace("{processed}", numbers.format(progress.processed));
}

async function runBacktest(panel, body) {
  runningBacktest?.abort();
  const controller = new AbortController();
  runningBacktest = controller;
  const run = panel.querySelector("[data-backtest-run]");
  const cancel = panel.querySelector("[data-backtest-cancel]");
  const bar = panel.querySelector("progress");
  const status = panel.querySelector("[data-backtest-status]");
  const result = panel.querySelector("[data-backtest-result]");
  run.disabled = true;
  cancel.hidden = false;
  bar.hidden = false;
  bar.removeAttribute("value"); // indeterminate until the first progress line
  result.replaceChildren();
  status.textContent = panel.dataset.starting;
  try {
    const answer = await fetch(panel.dataset.url, {
      method: "POST",
      body,
      headers: { "x-csrf-token": body.get("csrf_token") },
      signal: controller.signal,
    });
    if (!answer.ok) {
      result.innerHTML = await answer.text(); // the refusal, drawn by the server
      status.textContent = "";
      return;
    }
    const reader = answer.body.pipeThrough(new TextDecoderStream()).getReader();
    let pending = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) {
        break;
      }
      const lines = (pending + value).split("\n");
      pending = lines.pop();
      for (const line of lines.filter((l) => l.trim())) {
        const item = JSON.parse(line);
        if (item.progress) {
          showProgress(panel, item.progress);
        } else if (item.html !== undefined) {
          result.innerHTML = item.html; // the result (or why it stopped), drawn by the server
          status.textContent = "";
        }
      }
    }
  } catch (error) {
    status.textContent = error.name === "AbortError" ? panel.dataset.cancelled : panel.dataset.failed;
  } finally {
    run.disabled = false;
    cancel.hidden = true;
    bar.hidden = true;
    if (runningBacktest === controller) {
      runningBacktest = null;
    }
  }
}
