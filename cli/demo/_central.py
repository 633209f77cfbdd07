"""What the demo's parts that run a central sync server share (the ``server`` extra):
settings on embedded defaults, quiet logs while they run, and a check that nothing
answers any more at a stopped server's address.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from sync_server import Settings

__all__ = ["answers", "embedded_settings", "quiet_logs"]


class _EmbeddedSettings(Settings):
    """Settings from arguments only: the demo ignores ``COHERENCY_SERVER_*`` variables,
    so it runs on embedded defaults whatever the environment says."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def embedded_settings(data_dir: Path) -> Settings:
    """SQLite and local blobs under `data_dir`, nothing else configured."""
    return _EmbeddedSettings(data_dir=data_dir, log_level="WARNING")


@contextlib.contextmanager
def quiet_logs(*, errors_only: Sequence[str] = ()) -> Iterator[None]:
    """Keep the server's and the SDK's info lines (access lines, retries) out of the
    demo's output: warnings and errors only, while the demo runs.

    Args:
        errors_only: Loggers that only say errors meanwhile: those whose warnings
            the part provokes on purpose (the edge part stops central, and the box's
            relay warns each time it cannot reach it).
    """
    levels = {name: logging.WARNING for name in ("sync_server", "edge_sdk", "uvicorn")}
    levels.update(dict.fromkeys(errors_only, logging.ERROR))
    loggers = {logging.getLogger(name): level for name, level in levels.items()}
    saved = {logger: logger.level for logger in loggers}
    for logger, level in loggers.items():
        logger.setLevel(max(logger.getEffectiveLevel(), level))
    try:
        yield
    finally:
        for logger, level in saved.items():
            logger.setLevel(level)


def answers(url: str) -> bool:
    """Whether anything still accepts connections at `url`'s host and port."""
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=1):
            return True
    except OSError:
        return False
