// The dashboard's own script (no inline scripts: the Content-Security-Policy forbids
// them). Every htmx request carries the session's CSRF token, and a signed-in page
// clears itself when the session has gone idle on the server (automatic logoff), so
// patient data does not stay on an unattended screen.
document.addEventListener("htmx:configRequest", (event) => {
  const token = document.body.dataset.csrf;
  if (token) {
    event.detail.headers["X-CSRF-Token"] = token;
  }
});

(() => {
  const idle = Number(document.body.dataset.idleSeconds || 0);
  if (!idle) {
    return;
  }
  let timer = 0;
  const arm = () => {
    window.clearTimeout(timer);
    // The server counts requests, not keystrokes: re-arm on each one. A second of
    // slack lets the server's clock pass the limit first.
    timer = window.setTimeout(() => {
      window.location.assign("/dashboard/sign-in?ended=session_idle_expired");
    }, (idle + 1) * 1000);
  };
  document.addEventListener("htmx:afterRequest", arm);
  arm();
})();

// A queue action answers its item's row even when refused (403, 409...): show it.
document.addEventListener("htmx:beforeSwap", (event) => {
  if (event.detail.xhr.getResponseHeader("X-Dashboard-Fragment")) {
    event.detail.shouldSwap = true;
    event.detail.isError = false;
  }
});
