"""Clinic edge boxes as the device knows them: pinned by central, found on the LAN.

- `EdgeBoxPin`: a box the central server vouched for (its id, name, and the SHA-256
  fingerprint and PEM text of its self-signed TLS certificate). Central lists the
  clinic's boxes in its enrolment answer and in every directory answer
  (``"edge_boxes": [{"box_id", "name", "fingerprint", "certificate"}]``); the replica
  keeps them (`Replica.edge_boxes`). A pin whose certificate does not hash to its
  fingerprint is dropped: it could not be checked.
- `DiscoveredBox`: what an mDNS advertisement claimed (``_coherency._tcp.local.``).
  It is a hint, never trust: only a box whose advertised fingerprint equals a pin is
  offered (`EdgeBoxRoute`), and the connection itself trusts only the pinned
  certificate.

No network code here (`edge_sdk._discovery` browses, `edge_sdk._http_pinning` makes
the TLS context).
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

__all__ = [
    "DiscoveredBox",
    "EdgeBoxPin",
    "EdgeBoxRoute",
    "certificate_fingerprint",
    "pins_from_answer",
    "routes_to_pinned",
]

log = logging.getLogger("edge_sdk.sync")


def certificate_fingerprint(pem: str) -> str:
    """The lowercase hex SHA-256 of a PEM certificate's DER bytes (what central and a
    box's mDNS advertisement name it by).

    Raises:
        ValueError: `pem` is not a PEM certificate.
    """
    certificate = x509.load_pem_x509_certificate(pem.encode())
    return hashlib.sha256(certificate.public_bytes(Encoding.DER)).hexdigest()


@dataclass(frozen=True, slots=True)
class EdgeBoxPin:
    """A clinic edge box the central server vouched for.

    Attributes:
        box_id: The box's id.
        name: A label for people.
        fingerprint: Lowercase hex SHA-256 of the certificate's DER bytes.
        certificate: The box's self-signed certificate (PEM): the only one trusted
            when talking to it.
    """

    box_id: str
    name: str
    fingerprint: str
    certificate: str

    def checks_out(self) -> bool:
        """True if the certificate parses and hashes to the fingerprint."""
        try:
            return certificate_fingerprint(self.certificate) == self.fingerprint
        except ValueError:
            return False

    def to_json(self) -> dict[str, str]:
        """The pin as central sends it."""
        return {
            "box_id": self.box_id,
            "name": self.name,
            "fingerprint": self.fingerprint,
            "certificate": self.certificate,
        }


def pins_from_answer(entries: Any) -> list[EdgeBoxPin]:
    """The pins of a server's ``edge_boxes`` list that check out (a malformed entry, or
    one whose certificate does not hash to its fingerprint, is dropped and logged)."""
    pins: list[EdgeBoxPin] = []
    for entry in entries if isinstance(entries, list) else []:
        try:
            pin = EdgeBoxPin(
                box_id=str(entry["box_id"]),
                name=str(entry.get("name") or ""),
                fingerprint=str(entry["fingerprint"]).lower(),
                certificate=str(entry["certificate"]),
            )
        except (KeyError, TypeError, AttributeError):
            log.warning("ignoring a malformed edge box entry from the server")
            continue
        if not pin.checks_out():
            log.warning("dropping edge box %s: its certificate does not match", pin.box_id)
            continue
        pins.append(pin)
    return pins


@dataclass(frozen=True, slots=True)
class DiscoveredBox:
    """An edge box's mDNS advertisement (a hint: nothing in it is trusted).

    Attributes:
        box_id: The ``box`` TXT value.
        clinic_id: The ``clinic`` TXT value.
        fingerprint: The ``fp`` TXT value (lowercase hex SHA-256 of its certificate).
        protocol: The ``proto`` TXT value (the sync protocol version).
        addresses: The addresses it advertised (IPv4 and IPv6 text).
        port: Its HTTPS port.
    """

    box_id: str
    clinic_id: str
    fingerprint: str
    protocol: int
    addresses: tuple[str, ...]
    port: int

    @property
    def urls(self) -> tuple[str, ...]:
        """``https://<address>:<port>`` per address (IPv6 bracketed)."""
        return tuple(_url(address, self.port) for address in self.addresses)


@dataclass(frozen=True, slots=True)
class EdgeBoxRoute:
    """A pinned box found on the LAN, and where to reach it.

    Attributes:
        pin: The box as central vouched for it.
        urls: ``https://`` URLs to try in order.
    """

    pin: EdgeBoxPin
    urls: tuple[str, ...]


def routes_to_pinned(
    found: Iterable[DiscoveredBox], pins: Iterable[EdgeBoxPin], *, clinic_id: str
) -> list[EdgeBoxRoute]:
    """The discovered boxes of `clinic_id` whose advertised fingerprint is pinned, one
    route per box (the addresses of all its advertisements, in order)."""
    by_fingerprint: Mapping[str, EdgeBoxPin] = {pin.fingerprint: pin for pin in pins}
    urls: dict[str, list[str]] = {}
    for box in found:
        pin = by_fingerprint.get(box.fingerprint)
        if box.clinic_id != clinic_id or pin is None:
            continue
        known = urls.setdefault(pin.fingerprint, [])
        known.extend(url for url in box.urls if url not in known)
    return [EdgeBoxRoute(by_fingerprint[fp], tuple(u)) for fp, u in urls.items() if u]


def _url(address: str, port: int) -> str:
    try:
        version = ipaddress.ip_address(address.split("%")[0]).version
    except ValueError:
        version = 4  # a host name
    # A scoped (link-local) IPv6 address keeps its zone, escaped as RFC 6874 says.
    host = f"[{address.replace('%', '%25')}]" if version == 6 else address
    return f"https://{host}:{port}"
