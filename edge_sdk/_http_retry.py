"""Retries as an httpx transport wrapper: `RetryTransport(inner, policy)`.

Connection failures and 408/429/5xx answers are tried again with exponential
backoff and full jitter (`RetryPolicy`), waiting at least what a ``Retry-After``
header asks (up to the policy's cap). When the attempts run out the request fails
with `ServerUnreachableError`, which names the count and the last problem.

The answer's body is read inside the retry loop, so a connection cut mid-body is
retried like any other failure; a request carrying the `STREAM` extension is answered
with its body unread instead (a blob download, which resumes by itself).

What retrying cannot fix fails at once: any other 4xx answer comes back as it is,
and a TLS certificate that does not verify is `ServerCertificateError`.

An `Interrupter` shared with the transport lets another thread abandon the requests in
flight (`edge_sdk._http_cancel`): they, and the backoff waits, raise
`SyncCancelledError` instead of being tried again.

A request carrying the `NO_RETRY` extension is sent once, whatever happens: a refresh
token must never be sent twice (a second use of one whose answer was lost looks like
theft and revokes its family), and a device-key login is signed anew per attempt by
its sender. Those still fail as `ServerUnreachableError`, after one attempt.
"""

from __future__ import annotations

import logging
import random
import ssl
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from edge_sdk._errors import ServerCertificateError, ServerUnreachableError
from edge_sdk._http_cancel import TRACE, Interrupter
from edge_sdk._http_errors import error_text
from edge_sdk._sync_types import RetryPolicy

__all__ = [
    "NO_RETRY",
    "RETRYABLE_STATUS",
    "STREAM",
    "Counters",
    "RetryTransport",
    "certificate_error",
]

log = logging.getLogger("edge_sdk.sync")

NO_RETRY = "coherency.no_retry"
"""Request extension: send this request once, never again."""

STREAM = "coherency.stream"
"""Request extension: the caller reads the body as it arrives; leave it unread."""

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(slots=True)
class Counters:
    """Requests sent (every attempt) and attempts repeated, for `SyncResult`."""

    requests: int = 0
    retries: int = 0


class RetryTransport(httpx.BaseTransport):
    """Wraps another httpx transport, retrying what is worth retrying."""

    def __init__(
        self,
        inner: httpx.BaseTransport,
        policy: RetryPolicy,
        *,
        counters: Counters | None = None,
        sleep: Callable[[float], None] | None = None,
        interrupter: Interrupter | None = None,
    ) -> None:
        self._inner = inner
        self._policy = policy
        self.counters = counters if counters is not None else Counters()
        self.interrupter = interrupter or Interrupter()
        self._sleep = sleep or self.interrupter.sleep
        self._rng = random.Random()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request`, again after failures; the first answer not worth retrying.

        Raises:
            ServerUnreachableError: Every attempt failed to connect or got a
                retryable status.
            ServerCertificateError: The server's TLS certificate did not verify.
            SyncCancelledError: The transport was interrupted.
        """
        tries = 1 if request.extensions.get(NO_RETRY) else self._policy.attempts
        what = f"{request.method} {request.url.path}"
        request.extensions = {
            **request.extensions,
            TRACE: self.interrupter.trace(request.extensions.get(TRACE)),
        }
        attempt = 0
        while True:
            self.interrupter.check(what)
            self.counters.requests += 1
            retry_after = 0.0
            try:
                response = self._inner.handle_request(request)
                if response.status_code not in RETRYABLE_STATUS:
                    if not request.extensions.get(STREAM):
                        _read(response)
                    return response
                problem, retry_after = _refusal(response)
            except httpx.TransportError as exc:
                self.interrupter.check(what)  # the interruption is what cut it
                if _certificate_refused(exc):
                    raise ServerCertificateError(
                        f"{request.url.host}: the server's TLS certificate did not verify "
                        f"({_reason(exc)}); check the URL, or the device's clock and CA "
                        "certificates"
                    ) from None
                problem = f"{type(exc).__name__}: {exc}"
            if attempt + 1 >= tries:
                raise ServerUnreachableError(
                    f"{request.method} {request.url.path} failed {attempt + 1} times; "
                    f"last: {problem}"
                )
            delay = self._policy.delay(attempt, self._rng)
            if retry_after:
                delay = max(delay, min(retry_after, self._policy.cap_seconds))
            attempt += 1
            self.counters.retries += 1
            log.info(
                "retrying %s %s in %.2fs (%s)", request.method, request.url.path, delay, problem
            )
            self._sleep(delay)

    def close(self) -> None:
        """Close the wrapped transport."""
        self._inner.close()


def _certificate_refused(exc: BaseException) -> bool:
    return certificate_error(exc) is not None


def _reason(exc: BaseException) -> str:
    found = certificate_error(exc)
    return str(getattr(found, "verify_message", None) or found or exc)


def certificate_error(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate verification failure behind `exc` (its causes), if any."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None


def _read(response: httpx.Response) -> None:
    """Read the whole body (the connection is released either way)."""
    try:
        response.read()
    finally:
        response.close()


def _refusal(response: httpx.Response) -> tuple[str, float]:
    """What a retryable answer said, and the seconds its ``Retry-After`` asks for."""
    _read(response)
    try:
        retry_after = max(0.0, float(response.headers.get("retry-after", "")))
    except ValueError:
        retry_after = 0.0
    return f"HTTP {response.status_code}: {error_text(response)}", retry_after
