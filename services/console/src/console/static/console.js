// The console's few behaviours that are not htmx attributes, in a file of its own: the Content-Security-Policy
// allows no inline script and no event handler attribute (onclick=...). Delegated from the document, so they work
// on what htmx swaps in too. Each is declared in the templates by a data- attribute.
"use strict";

// <button data-close-dialog>: removes the dialog it is in (the status property dialog's close and cancel).
document.addEventListener("click", (event) => {
  const closer = event.target.closest("[data-close-dialog]");
  if (closer) {
    closer.closest("dialog")?.remove();
  }
});

// <button data-remove="fieldset">: removes the closest such element (a filter row), then tells its form that it
// changed, so the campaign editor's live preview follows.
document.addEventListener("click", (event) => {
  const remover = event.target.closest("[data-remove]");
  if (!remover) {
    return;
  }
  const form = remover.form || remover.closest("form");
  const removed = remover.closest(remover.dataset.remove);
  // a journey's step block: the focus goes to the block that takes its place (or the one before), not to the page
  const neighbour = removed?.matches(".step-block")
    ? removed.nextElementSibling || removed.previousElementSibling
    : null;
  removed?.remove();
  neighbour?.querySelector("button, summary")?.focus();
  form?.dispatchEvent(new Event("change", { bubbles: true }));
});

// <select data-submit-on-change>: submits its form when the choice changes (the campaigns list's state filter).
document.addEventListener("change", (event) => {
  if (event.target.matches("[data-submit-on-change]")) {
    event.target.form.requestSubmit();
  }
});

// <form data-confirm="question">: asks before submitting (archiving a campaign, which cannot be undone).
document.addEventListener("submit", (event) => {
  const question = event.target.dataset.confirm;
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});

// The Status property dialog's "Allowed next statuses" follow its Type: only the chosen type's statuses are shown
// and sent (a status may only lead to one of its own type).
document.addEventListener("change", (event) => {
  if (!event.target.matches('#status-dialog input[name="type"]')) {
    return;
  }
  for (const group of event.target.form.querySelectorAll("[data-next-type]")) {
    const chosen = group.dataset.nextType === event.target.value;
    group.hidden = !chosen;
    for (const box of group.querySelectorAll("input")) {
      box.disabled = !chosen;
    }
  }
});

// <button data-copy="#field" data-copied="Copied">: copies the field's text (a secret shown once) to the clipboard
// and says so on the button; where the Clipboard API is missing (no secure context), the text is selected instead,
// for the user to copy.
document.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) {
    return;
  }
  const field = document.querySelector(button.dataset.copy);
  if (!field) {
    return;
  }
  field.select();
  try {
    await navigator.clipboard.writeText(field.value);
    button.textContent = button.dataset.copied;
  } catch {
    // selected: the user copies it with the keyboard
  }
});

// <button data-insert-variable="#select" data-into="#textarea">: inserts the chosen variable, as {{ variable }}, into
// the text box where its cursor is (replacing what is selected there), puts the cursor after it and tells the text
// box it changed, so that its count and the live preview follow (the campaign editor's variable picker).
document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-insert-variable]");
  if (!button) {
    return;
  }
  const chosen = document.querySelector(button.dataset.insertVariable);
  const box = document.querySelector(button.dataset.into);
  if (!chosen || !box) {
    return;
  }
  box.setRangeText(`{{ ${chosen.value} }}`, box.selectionStart, box.selectionEnd, "end");
  box.focus();
  box.dispatchEvent(new Event("input", { bubbles: true }));
});

// <button data-move="up|down"> in a journey's step block (.step-block): moves the block before the previous block or
// after the next one, in place, keeps the focus on the button pressed (so the keyboard can press it again) and tells
// the form it changed, so the preview and the sentence follow. The block's "Add step" menu moves with it.
document.addEventListener("click", (event) => {
  const mover = event.target.closest("[data-move]");
  const block = mover?.closest(".step-block");
  if (!block) {
    return;
  }
  const up = mover.dataset.move === "up";
  const neighbour = up ? block.previousElementSibling : block.nextElementSibling;
  if (!neighbour?.matches(".step-block")) {
    return;
  }
  neighbour.insertAdjacentElement(up ? "beforebegin" : "afterend", block);
  mover.focus();
  block.closest("form")?.dispatchEvent(new Event("change", { bubbles: true }));
});

// The flow drawn again by the server (a step added, a campaign turned into a journey) or a condition added to the
// form: the preview follows. An added row changes the form without a change event of its own, and the change that
// clicking "Add condition" causes (the text box's blur) may reach the server before the row is in the form.
document.addEventListener("htmx:afterSwap", (event) => {
  const form = document.getElementById("campaign-form");
  const target = event.detail.target;
  if (!form || !target || event.detail.elt === form || target.closest("#preview")) {
    return;  // the preview's own answer
  }
  if (form.contains(target) || target.id === "flow" || event.detail.elt?.id === "flow") {
    form.dispatchEvent(new Event("change", { bubbles: true }));
  }
});
