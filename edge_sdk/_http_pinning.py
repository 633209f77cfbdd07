"""TLS to a clinic edge box that trusts exactly the certificate central pinned.

A box's certificate is self-signed and its address comes from mDNS, so neither the
system's CAs nor a host name check mean anything. The context built here trusts the
pinned certificate alone (``VERIFY_X509_PARTIAL_CHAIN``: the certificate itself is the
trust anchor), checks no host name, and speaks TLS 1.2 or later. A box presenting any
other certificate fails the handshake, before a byte of the request is sent;
`PinnedTransport` turns that failure into `UntrustedEdgeBoxError`, which the retry
wrapper lets through (it is no transport error: another try meets the same box).
"""

from __future__ import annotations

import socket
import ssl
from urllib.parse import urlsplit

import httpx

from edge_sdk._edge_boxes import EdgeBoxPin, certificate_fingerprint
from edge_sdk._errors import ServerUnreachableError, UntrustedEdgeBoxError
from edge_sdk._http_retry import certificate_error

__all__ = ["PinnedTransport", "handshake", "pinned_context"]


def pinned_context(pin: EdgeBoxPin) -> ssl.SSLContext:
    """A client context trusting only `pin`'s certificate.

    Raises:
        UntrustedEdgeBoxError: The pinned certificate does not hash to the pin's
            fingerprint (or is not a certificate).
    """
    try:
        matches = certificate_fingerprint(pin.certificate) == pin.fingerprint
    except ValueError:
        matches = False
    if not matches:
        raise UntrustedEdgeBoxError(
            f"the certificate pinned for edge box {pin.box_id} does not match its fingerprint",
            box_id=pin.box_id,
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False  # the address came from mDNS; the pin is the identity
    context.verify_mode = ssl.CERT_REQUIRED
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    context.load_verify_locations(cadata=pin.certificate)
    return context


def _refused(pin: EdgeBoxPin, where: str) -> UntrustedEdgeBoxError:
    return UntrustedEdgeBoxError(
        f"refusing edge box {pin.name or pin.box_id} ({pin.box_id}) at {where}: its TLS "
        "certificate is not the one the central server pinned (a rogue box?)",
        box_id=pin.box_id,
    )


class PinnedTransport(httpx.BaseTransport):
    """An httpx transport to one pinned box: certificate failures become
    `UntrustedEdgeBoxError` (never retried); everything else passes through."""

    def __init__(self, pin: EdgeBoxPin, inner: httpx.BaseTransport | None = None) -> None:
        self._pin = pin
        self._inner = inner or httpx.HTTPTransport(verify=pinned_context(pin))

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request` to the box.

        Raises:
            UntrustedEdgeBoxError: The box's certificate is not the pinned one.
        """
        try:
            return self._inner.handle_request(request)
        except httpx.ConnectError as exc:
            if certificate_error(exc) is not None:
                raise _refused(self._pin, f"{request.url.host}:{request.url.port}") from None
            raise

    def close(self) -> None:
        """Close the wrapped transport."""
        self._inner.close()


def handshake(pin: EdgeBoxPin, url: str, *, timeout: float = 5.0) -> None:
    """Open a TLS connection to `url` trusting only `pin`, and close it: no request is
    sent.

    Raises:
        UntrustedEdgeBoxError: The box there presented another certificate.
        ServerUnreachableError: Nothing answered there.
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 443
    context = pinned_context(pin)
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=None),
        ):
            return
    except ssl.SSLCertVerificationError:
        raise _refused(pin, f"{host}:{port}") from None
    except (OSError, ssl.SSLError) as exc:
        raise ServerUnreachableError(f"edge box {pin.box_id} at {url}: {exc}") from None
