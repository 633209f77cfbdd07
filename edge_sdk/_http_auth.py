"""A device's credentials as an `httpx.Auth`: `DeviceAuth`.

Each request gets the device's bearer token. The token is renewed before it expires,
and once more when the server answers 401:

1. with the refresh token kept in the replica: taken out of the store before it is
   sent, and sent once (never retried: resending one whose answer was lost would be
   reuse, which revokes its whole family); the new refresh token the server answers
   is stored before the new access token is used;
2. when there is none, or the server refused it, or its answer was lost: with a login
   signed by the device key, a fresh nonce per attempt (a nonce is single-use, so a
   resent assertion would be refused as a replay), retried with the retry policy's
   backoff.

In login-only mode (``login_only=True``, for a clinic edge box) the refresh token is
never taken or kept: it belongs to the central server, and a box must not see it. Each
renewal is a login signed by the device key at the box (``POST /v1/auth/device``), and
the answer's refresh token, if any, is ignored.

The refresh and login requests are not yielded into the flow but sent through `post`
(the same client and transport stack, marked `NO_RETRY` so the retry wrapper sends
them once): httpx ends a flow when a yielded request fails to connect, and the
fallback from a lost refresh to a login, and the fresh nonce per login attempt, must
happen here. For a synchronous `httpx.Client`.

`post_signed` is that retry loop for any request that carries a proof signed by the
device key (a device login, an enrolment): each attempt is signed anew, with the time
and a new nonce, since the server accepts a proof once.
"""

from __future__ import annotations

import base64
import logging
import random
import secrets
import threading
import time
from collections.abc import Callable, Generator, Mapping
from datetime import datetime
from typing import Any

import httpx

from crdt import device_login_message
from edge_sdk._errors import AuthenticationError, DeviceRevokedError, ServerUnreachableError
from edge_sdk._http_errors import error_code, error_text
from edge_sdk._http_retry import Counters
from edge_sdk._replica import Replica
from edge_sdk._sync_types import RetryPolicy
from edge_sdk._token_keys import TokenKeyLink

__all__ = ["DeviceAuth", "Post", "post_signed"]

log = logging.getLogger("edge_sdk.sync")

Post = Callable[[str, Mapping[str, Any]], httpx.Response]
"""Sends a JSON body to a path of the server once, without this auth."""

Signed = Callable[[int, str], Mapping[str, Any]]
"""Builds a request body signed for a time (unix seconds) and a nonce."""


def post_signed(
    post: Post,
    path: str,
    signed: Signed,
    *,
    retry: RetryPolicy,
    counters: Counters,
    what: str,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> httpx.Response:
    """POST a body signed afresh for each attempt (`signed(issued_at, nonce)`), again
    with the policy's backoff while no answer comes; the first answer.

    Raises:
        ServerUnreachableError: No answer within the policy's attempts; names `what`.
    """
    rng = rng or random.Random()
    attempt = 0
    while True:
        try:
            return post(path, signed(int(time.time()), secrets.token_hex(16)))
        except ServerUnreachableError as exc:
            if attempt + 1 >= retry.attempts:
                raise ServerUnreachableError(
                    f"{what} failed {attempt + 1} times; last: {exc}"
                ) from None
            counters.retries += 1
            sleep(retry.delay(attempt, rng))
            attempt += 1


_REFRESH_MARGIN_SECONDS = 30


class DeviceAuth(httpx.Auth):
    """Bearer tokens for one enrolled replica, refreshed and renewed as needed.

    With `login_only`, tokens come from device-key logins alone: the replica's refresh
    token (central's) is neither sent nor replaced.
    """

    def __init__(
        self,
        replica: Replica,
        *,
        post: Post,
        retry: RetryPolicy,
        counters: Counters,
        sleep: Callable[[float], None] = time.sleep,
        login_only: bool = False,
    ) -> None:
        self._replica = replica
        self._login_only = login_only
        self._post = post
        self._retry = retry
        self._counters = counters
        self._sleep = sleep
        self._rng = random.Random()
        self._token: str | None = None
        self._expires = 0.0
        self._lock = threading.Lock()

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Add the bearer token; on a 401, renew it and send the request once more.

        Raises:
            DeviceRevokedError: The server revoked this device.
            AuthenticationError: The server refused the device's key.
            ServerUnreachableError: No token could be had within the retry budget.
        """
        token = self._current(stale=None)
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            response.read()
            request.headers["Authorization"] = f"Bearer {self._current(stale=token)}"
            yield request

    def _current(self, *, stale: str | None) -> str:
        """A usable access token: the kept one unless it expired or was refused."""
        with self._lock:
            if self._token is None or self._token == stale or time.time() > self._expires:
                self._token, self._expires = self._renew()
            return self._token

    def _renew(self) -> tuple[str, float]:
        if self._login_only:
            return self._device_login()
        refresh = self._replica.take_refresh_token()
        if refresh:
            try:
                response = self._post("/v1/auth/refresh", {"refresh_token": refresh})
            except ServerUnreachableError as exc:
                log.info("refresh failed (%s); logging in with the device key", exc)
            else:
                if response.status_code == 200:
                    return self._keep(response.json())
                _raise_if_revoked(response)
                # Unknown, expired, revoked or reused: a new family from the device key.
                log.info(
                    "refresh refused (%s); logging in with the device key", error_text(response)
                )
        return self._device_login()

    def _device_login(self) -> tuple[str, float]:
        identity = self._replica.identity

        def signed(issued_at: int, nonce: str) -> Mapping[str, Any]:
            message = device_login_message(identity.device_id, issued_at, nonce)
            return {
                "device_id": identity.device_id,
                "issued_at": issued_at,
                "nonce": nonce,
                "signature": base64.b64encode(identity.sign(message)).decode(),
            }

        response = post_signed(
            self._post,
            "/v1/auth/device",
            signed,
            retry=self._retry,
            counters=self._counters,
            what="device login",
            sleep=self._sleep,
            rng=self._rng,
        )
        if response.status_code == 200:
            return self._keep(response.json())
        _raise_if_revoked(response)
        raise AuthenticationError(f"the server refused the device: {error_text(response)}")

    def _keep(self, answer: Mapping[str, Any]) -> tuple[str, float]:
        # The new refresh token is stored before the access token is used: losing it
        # would only mean a device-key login next time.
        if not self._login_only:
            self._replica.keep_refresh_token(str(answer["refresh_token"]))
        self._replica.learn_token_key(_token_key_chain(answer.get("token_keys")))
        expires = datetime.fromisoformat(answer["access_token_expires_at"]).timestamp()
        return str(answer["access_token"]), expires - _REFRESH_MARGIN_SECONDS


def _token_key_chain(listed: Any) -> list[TokenKeyLink]:
    """The server's token keys from a token answer (oldest first); entries that do not
    parse are left out (they could only fail to verify)."""
    chain: list[TokenKeyLink] = []
    for entry in listed if isinstance(listed, list) else []:
        try:
            endorsement = entry.get("endorsement")
            chain.append(
                TokenKeyLink(
                    public_key=base64.b64decode(entry["public_key"], validate=True),
                    endorsement=None
                    if endorsement is None
                    else base64.b64decode(endorsement, validate=True),
                )
            )
        except (AttributeError, KeyError, TypeError, ValueError):
            continue
    return chain


def _raise_if_revoked(response: httpx.Response) -> None:
    if response.status_code == 403 and error_code(response) == "device_revoked":
        raise DeviceRevokedError("the server has revoked this device")
