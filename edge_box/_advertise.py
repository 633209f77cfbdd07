"""Advertising the box on the clinic LAN: `Advertiser` (python-zeroconf).

The box registers ``<box_id>._coherency._tcp.local.`` with TXT keys ``clinic``,
``box``, ``fp`` (its certificate's SHA-256) and ``proto``, on every address the
machine has (loopback only when it has nothing else). What devices make of it is a
hint: they connect only if the certificate matches the fingerprint central gave them.

The traps python-zeroconf's issues name, and what is done about them:

- Several interfaces, and interfaces that come and go (a Wi-Fi link dropping, a
  container's veth appearing after start): zeroconf opens its sockets for the
  interfaces that exist when it starts, and nothing later. A daemon thread polls
  `ifaddr` every `poll_seconds`; when the set of addresses changes, the service is
  unregistered (goodbye packets) and registered again on a fresh `Zeroconf` bound to
  the current addresses. An interface error is logged and tried again at the next
  poll; it never ends the thread or the box.
- Containers and hosts without IPv6 multicast: mDNS goes over IPv4 multicast; the
  records still carry the box's global IPv6 addresses.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from types import TracebackType
from typing import Any

__all__ = ["PROTOCOL_VERSION", "SERVICE_TYPE", "Advertiser", "current_addresses"]

log = logging.getLogger("edge_box.advertise")

SERVICE_TYPE = "_coherency._tcp.local."
"""The mDNS service type (the one `edge_sdk.discover_edge_boxes` browses)."""
PROTOCOL_VERSION = 1
"""The sync protocol version a box advertises."""


def current_addresses() -> tuple[list[str], list[str]]:
    """The machine's IPv4 and global IPv6 addresses (``ifaddr``), sorted; loopback
    only when there is nothing else."""
    import ifaddr

    v4: set[str] = set()
    v6: set[str] = set()
    loopback: set[str] = set()
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            text = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
            try:
                address = ipaddress.ip_address(text)
            except ValueError:
                continue
            if address.is_loopback:
                if address.version == 4:
                    loopback.add(text)
            elif address.version == 4:
                v4.add(text)
            elif not address.is_link_local:  # a link-local address needs a zone
                v6.add(text)
    if not v4:
        v4 = loopback
    return sorted(v4), sorted(v6)


class Advertiser:
    """Advertises one box with mDNS while open; follows the machine's addresses.

    Use as a context manager, or `start()` and `close()`.

    Args:
        port: The box's HTTPS port.
        clinic_id: The box's clinic.
        box_id: The box's id (also the service instance name).
        fingerprint: Lowercase hex SHA-256 of the box's certificate.
        protocol: The sync protocol version.
        poll_seconds: How often the machine's addresses are checked.
    """

    def __init__(
        self,
        *,
        port: int,
        clinic_id: str,
        box_id: str,
        fingerprint: str,
        protocol: int = PROTOCOL_VERSION,
        poll_seconds: float = 3.0,
    ) -> None:
        self.port = port
        self.clinic_id = clinic_id
        self.box_id = box_id
        self.fingerprint = fingerprint
        self.protocol = protocol
        self.poll_seconds = poll_seconds
        self.addresses: tuple[str, ...] = ()
        """The addresses currently advertised."""
        self.registrations = 0
        """How many times the service was registered (1 + re-registrations)."""
        self._zeroconf: Any = None
        self._info: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> Advertiser:
        """Register the service on the current addresses and start following them.

        Raises:
            ImportError: zeroconf (the ``[edge]`` extra) is not installed.
        """
        import zeroconf  # noqa: F401  (fail here, not in the thread)

        self._refresh()
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._follow, name=f"advertise-{self.box_id}", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop following addresses and withdraw the service (goodbye packets)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.poll_seconds + 10)
            self._thread = None
        with self._lock:
            self._withdraw()

    def __enter__(self) -> Advertiser:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # ---------------------------------------------------------------- the work
    def _follow(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self._refresh()
            except Exception:  # an interface error must not end the advertising
                log.exception("re-advertising edge box %s failed; trying again", self.box_id)

    def _refresh(self) -> None:
        """(Re-)register if the machine's addresses changed since the last time."""
        v4, v6 = current_addresses()
        addresses = (*v4, *v6)
        with self._lock:
            if addresses == self.addresses and self._zeroconf is not None:
                return
            if self._stop.is_set() and self._thread is not None:
                return
            self._withdraw()
            self._register(v4, v6)
            self.addresses = addresses

    def _register(self, v4: list[str], v6: list[str]) -> None:
        from zeroconf import IPVersion, ServiceInfo, Zeroconf

        info = ServiceInfo(
            SERVICE_TYPE,
            f"{self.box_id}.{SERVICE_TYPE}",
            port=self.port,
            properties={
                "clinic": self.clinic_id,
                "box": self.box_id,
                "fp": self.fingerprint,
                "proto": str(self.protocol),
            },
            server=f"{_host_label(self.box_id)}.local.",
            parsed_addresses=[*v4, *v6],
        )
        # Sockets for exactly the current IPv4 addresses: a fresh instance per change,
        # since zeroconf never opens sockets for interfaces that appear later.
        zc = Zeroconf(interfaces=list(v4), ip_version=IPVersion.V4Only)
        try:
            zc.register_service(info, allow_name_change=False)
        except BaseException:
            zc.close()
            raise
        self._zeroconf, self._info = zc, info
        self.registrations += 1
        log.info("advertising edge box %s on %s", self.box_id, ", ".join([*v4, *v6]))

    def _withdraw(self) -> None:
        zc, info = self._zeroconf, self._info
        self._zeroconf = self._info = None
        if zc is None:
            return
        try:
            zc.unregister_service(info)
        except Exception:  # the interface may be gone already
            log.info("withdrawing edge box %s: goodbye not sent", self.box_id, exc_info=True)
        finally:
            zc.close()


def _host_label(box_id: str) -> str:
    """A DNS label for the box's mDNS host name (letters, digits and hyphens)."""
    label = "".join(c if c.isalnum() else "-" for c in box_id).strip("-")[:50]
    return f"coherency-{label or socket.gethostname()}"
