"""A clinic with an edge box, for tests: the box's uplink to central can be cut.

`Uplink` is a real TCP forwarder on loopback between the box and the live central
server: `cut()` closes it and every connection through it (the clinic's uplink goes
down: the box's requests are refused, as a dead link's are), `restore()` listens on
the same port again. Devices reach the box over HTTPS with the certificate central
pinned for them, and central directly over its own URL.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edge_box import BoxService, EdgeBox
from edge_sdk import Argon2Params, EdgeClient, PassphraseKeyProvider
from sync_server.identity.enrolment import create_enrolment_token


class Uplink:
    """A TCP forwarder from a loopback port to `target_url`'s host and port."""

    def __init__(self, target_url: str) -> None:
        parts = urlsplit(target_url)
        self._target = (parts.hostname or "127.0.0.1", parts.port or 80)
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.url = f"http://127.0.0.1:{self.port}"
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.restore()

    def restore(self) -> None:
        """Listen (again) and forward."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        with self._lock:
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        """Close the listener and every open connection: the uplink is down."""
        with self._lock:  # from here no new connection is let through
            listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            for sock in list(self._open):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._listener is not listener:  # cut meanwhile: this one is cut too
                    client.close()
                    upstream.close()
                    continue
                self._open.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:  # the other side closed, or the uplink was cut: the pump ends
            return
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
                with self._lock:
                    self._open.discard(sock)


def token(server: Any, clinic_id: str, *, kind: str = "device") -> str:
    """A one-time enrolment token for the clinic (an edge token with kind="edge")."""
    with server.db.write() as session:
        issued, _ = create_enrolment_token(
            session=session, clinic_id=clinic_id, ttl=timedelta(minutes=10), kind=kind
        )
    return issued


def tablet(server: Any, clinic_id: str, folder: Path, name: str) -> EdgeClient:
    """A device enrolled with central directly (it learns the clinic's boxes there)."""
    client = EdgeClient.init(
        folder / name,
        PassphraseKeyProvider("pass phrase", params=Argon2Params.fast()),
        clinic_id=clinic_id,
    )
    client.enroll(server.url, token(server, clinic_id), name=name)
    return client


@dataclass
class Clinic:
    """A clinic of the live server with a running edge box behind a cuttable uplink."""

    server: Any
    clinic_id: str
    folder: Path
    uplink: Uplink
    box: EdgeBox
    service: BoxService
    tablets: list[EdgeClient] = field(default_factory=list)

    def tablet(self, name: str) -> EdgeClient:
        client = tablet(self.server, self.clinic_id, self.folder, name)
        self.tablets.append(client)
        return client

    def via_box(self, client: EdgeClient, **options: Any) -> Any:
        """Sync `client` through the box (its pinned certificate)."""
        with client.edge_transport(self.service.url, self.box.box_id) as transport:
            return client.sync(transport=transport, **options)

    def relay_now(self) -> None:
        """One round of the box with central, now (beside the relay's own loop)."""
        self.service.relay.sync_once()

    def close(self) -> None:
        for client in self.tablets:
            client.close()
        self.service.stop()
        self.box.close()
        self.uplink.cut()


@contextlib.contextmanager
def clinic_with_box(
    server: Any, folder: Path, *, clinic_id: str | None = None, long_poll: float = 1.0
) -> Iterator[Clinic]:
    """A clinic whose edge box is enrolled through an uplink and serving on loopback."""
    clinic_id = clinic_id or server.new_clinic()
    uplink = Uplink(server.url)
    box = EdgeBox.init(folder / "box", folder / "box.key")
    box.enroll(uplink.url, token(server, clinic_id, kind="edge"), name="front desk")
    service = BoxService(box, long_poll=long_poll)
    service.start()
    world = Clinic(server, clinic_id, folder, uplink, box, service)
    try:
        yield world
    finally:
        world.close()


def until(predicate: Callable[[], bool], *, timeout: float = 60.0, what: str = "") -> None:
    """Wait (polling) until `predicate()` holds; fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.05)
