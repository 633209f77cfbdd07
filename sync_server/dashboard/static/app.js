// The dashboard's own script (no inline scripts: the Content-Security-Policy forbids
// them). Every htmx request carries the session's CSRF token.
document.addEventListener("htmx:configRequest", (event) => {
  const token = document.body.dataset.csrf;
  if (token) {
    event.detail.headers["X-CSRF-Token"] = token;
  }
});
