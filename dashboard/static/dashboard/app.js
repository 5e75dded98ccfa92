// The few behaviours of the dashboard that htmx does not cover: copy, show/hide a key, confirm
// before a destructive form, and the Server URL field only for Custom destinations.
"use strict";

document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-copy], button[data-reveal]");
  if (!button) return;
  const input = document.getElementById(button.dataset.copy || button.dataset.reveal);
  if (button.dataset.reveal) {
    const show = input.type === "password";
    input.type = show ? "text" : "password";
    button.textContent = show ? "Hide" : "Show";
    button.setAttribute("aria-pressed", String(show));
    return;
  }
  try {
    await navigator.clipboard.writeText(input.value);
  } catch {
    const type = input.type;
    input.type = "text";
    input.select();
    document.execCommand("copy");
    input.type = type;
  }
  const label = button.textContent;
  button.textContent = "Copied";
  setTimeout(() => { button.textContent = label; }, 1500);
});

document.addEventListener("submit", (event) => {
  const message = event.target.dataset.confirm;
  if (message && !window.confirm(message)) event.preventDefault();
});

function showServerUrl() {
  const service = document.getElementById("service");
  const field = document.querySelector("[data-custom-only]");
  if (service && field) field.hidden = service.value !== "Custom";
}
document.addEventListener("change", (event) => {
  if (event.target.id === "service") showServerUrl();
});
document.addEventListener("DOMContentLoaded", showServerUrl);
