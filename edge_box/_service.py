"""`BoxService`: a running box: its HTTPS server, its relay to central, its advertisement."""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Any

from edge_box._advertise import Advertiser
from edge_box._box import EdgeBox
from edge_box._relay import Relay
from edge_box._server import box_app
from sync_server import ThreadedServer

__all__ = ["BoxService"]

log = logging.getLogger("edge_box")


class BoxService:
    """Serve an enrolled box over HTTPS, relay it to central, and (optionally)
    advertise it on the LAN with zeroconf.

    Args:
        box: The enrolled box.
        host: The address to listen on (``0.0.0.0`` for the clinic LAN).
        port: The port (0: a free one).
        relay: Run the upstream relay (False: a box cut off from central on purpose).
        advertise: Announce the box as ``_coherency._tcp.local.``.
        long_poll: Seconds the relay's pull from central waits for news.
    """

    def __init__(
        self,
        box: EdgeBox,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        relay: bool = True,
        advertise: bool = False,
        long_poll: float = 10.0,
    ) -> None:
        self.box = box
        self.relay = Relay(box, long_poll=long_poll)
        self._run_relay = relay
        self._advertise = advertise
        self._host = host
        self._port = port
        self._server: ThreadedServer | None = None
        self._advertiser: Any = None
        if relay:
            box._relay_audit = self.relay.relay_audit
            box._refresh_directory = self.relay.refresh_directory

    @property
    def url(self) -> str:
        """``https://host:port`` the box serves on."""
        assert self._server is not None, "start the service first"
        return self._server.url

    @property
    def port(self) -> int:
        """The port the box listens on."""
        assert self._server is not None, "start the service first"
        return self._server.port

    def start(self) -> None:
        """Start serving, relaying and advertising."""
        app = box_app(self.box, relay=self.relay if self._run_relay else None)
        # The key file exists (encrypted, one-time password) only while uvicorn loads it.
        with self.box.tls_files() as (cert, key, password):
            self._server = ThreadedServer(
                app,
                host=self._host,
                port=self._port,
                ssl_certfile=cert,
                ssl_keyfile=key,
                ssl_keyfile_password=password,
            )
            self._server.start()
        if self._run_relay:
            self.relay.start()
        if self._advertise:
            self._advertiser = Advertiser(
                port=self._server.port,
                clinic_id=self.box.clinic_id,
                box_id=self.box.box_id,
                fingerprint=self.box.fingerprint,
            )
            self._advertiser.start()

    def stop(self) -> None:
        """Stop advertising, relaying and serving."""
        if self._advertiser is not None:
            self._advertiser.close()
            self._advertiser = None
        if self._run_relay:
            self.relay.stop()
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> BoxService:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
