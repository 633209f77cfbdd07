"""Finding clinic edge boxes on the LAN: `discover_edge_boxes` (python-zeroconf).

A box advertises ``_coherency._tcp.local.`` with TXT keys ``clinic`` (its clinic id),
``box`` (its id), ``fp`` (its certificate's SHA-256) and ``proto`` (the sync protocol
version). Browsing listens on every interface for `timeout` seconds and resolves each
service named; an advertisement with a missing or garbled TXT record is skipped, never
raised. What is found is a hint: `EdgeClient.find_edge_boxes` offers only the boxes
central pinned, and the TLS connection trusts only the pinned certificate.

mDNS goes over IPv4 multicast on every interface (hosts and containers without IPv6
multicast are common); the records still carry a box's IPv6 addresses. zeroconf is
imported when a browse starts (the ``[edge]`` extra), so `import edge_sdk` works
without it.
"""

from __future__ import annotations

import logging
import queue
import time
from typing import TYPE_CHECKING, Any

from edge_sdk._edge_boxes import DiscoveredBox

if TYPE_CHECKING:
    from zeroconf import ServiceInfo

__all__ = ["SERVICE_TYPE", "discover_edge_boxes", "parse_advertisement"]

log = logging.getLogger("edge_sdk.sync")

SERVICE_TYPE = "_coherency._tcp.local."
"""The mDNS service type edge boxes advertise."""

_RESOLVE_MS = 1500


def discover_edge_boxes(
    *, timeout: float = 3.0, clinic_id: str | None = None
) -> list[DiscoveredBox]:
    """Browse the LAN for edge boxes for `timeout` seconds.

    Args:
        timeout: Seconds to listen (advertisements are answered within about a second
            of the first query; a busy network may want more).
        clinic_id: Keep only boxes advertising this clinic.

    Returns:
        One entry per advertised service that resolved with a well-formed TXT record
        (nothing in it is trusted), in the order they were found.

    Raises:
        ImportError: zeroconf (the ``[edge]`` extra) is not installed.
    """
    from zeroconf import IPVersion, ServiceBrowser, ServiceStateChange, Zeroconf

    names: queue.Queue[str] = queue.Queue()

    def on_change(
        zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        # Called on zeroconf's thread: resolving (which waits) happens on ours.
        if state_change in (ServiceStateChange.Added, ServiceStateChange.Updated):
            names.put(name)

    found: dict[str, DiscoveredBox] = {}
    zeroconf = Zeroconf(ip_version=IPVersion.V4Only)
    try:
        browser = ServiceBrowser(zeroconf, SERVICE_TYPE, handlers=[on_change])
        try:
            deadline = time.monotonic() + timeout
            while (left := deadline - time.monotonic()) > 0:
                try:
                    name = names.get(timeout=left)
                except queue.Empty:
                    break
                box = _resolve(zeroconf, name)
                if box is not None and (clinic_id is None or box.clinic_id == clinic_id):
                    found[name] = box
        finally:
            browser.cancel()
    finally:
        zeroconf.close()
    return list(found.values())


def _resolve(zeroconf: Any, name: str) -> DiscoveredBox | None:
    from zeroconf import ServiceInfo

    info = ServiceInfo(SERVICE_TYPE, name)
    try:
        if not info.request(zeroconf, _RESOLVE_MS):
            log.info("edge box %s did not resolve", name)
            return None
    except Exception as exc:  # a garbled record must not end the browse
        log.info("edge box %s could not be resolved: %s", name, exc)
        return None
    return parse_advertisement(info)


def parse_advertisement(info: ServiceInfo) -> DiscoveredBox | None:
    """The box a resolved service describes, or None if its TXT record or address is
    missing or garbled."""
    try:
        txt = {
            key.decode(): value.decode()
            for key, value in info.properties.items()
            if isinstance(key, bytes) and isinstance(value, bytes)
        }
        clinic, box, fingerprint = txt["clinic"], txt["box"], txt["fp"].lower()
        protocol = int(txt["proto"])
        addresses = tuple(info.parsed_scoped_addresses())
        port = info.port
    except (KeyError, ValueError, UnicodeDecodeError, AttributeError, TypeError):
        log.info("ignoring edge box advertisement %s: missing or garbled TXT", info.name)
        return None
    if not (clinic and box and _is_sha256_hex(fingerprint)) or not addresses or not port:
        log.info("ignoring edge box advertisement %s: incomplete", info.name)
        return None
    return DiscoveredBox(
        box_id=box,
        clinic_id=clinic,
        fingerprint=fingerprint,
        protocol=protocol,
        addresses=addresses,
        port=int(port),
    )


def _is_sha256_hex(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)
