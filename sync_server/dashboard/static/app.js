// The dashboard's own script (no inline scripts: the Content-Security-Policy forbids
// them). Every htmx request carries the session's CSRF token.
document.addEventListener("htmx:configRequest", (event) => {
  const token = document.body.dataset.csrf;
  if (token) {
    event.detail.headers["X-CSRF-Token"] = token;
  }
});

// A queue action answers its item's row even when refused (403, 409...): show it.
document.addEventListener("htmx:beforeSwap", (event) => {
  if (event.detail.xhr.getResponseHeader("X-Dashboard-Fragment")) {
    event.detail.shouldSwap = true;
    event.detail.isError = false;
  }
});
