"""One token signing identity per deployment, and its rotation (SQLite and PostgreSQL).

Instances on one database share the deployment's key (a file, a secret or the
database); one holding another key refuses to start. A rotation keeps the old key
verifying through its window; devices learn the new key vouched for by the one they
pinned, and their sync peer id does not change.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from sqlalchemy import select

from cli.main import cli
from edge_sdk import HttpTransport, TokenKeyLink, follow_token_keys, token_key_statement
from edge_sdk._sync_types import server_peer_id
from sync_server import (
    Conflict,
    Invalid,
    Settings,
    ThreadedServer,
    Unavailable,
    create_app,
    issue_enrolment_token,
    migrate,
    rotate_signing_key,
    signing_keys,
)
from sync_server.audit.tables import AuditEvent
from sync_server.db import utcnow
from sync_server.identity.keyring import rotate_key

pytestmark = pytest.mark.slow


def _settings(data_dir: Path, url: str, **overrides: Any) -> Settings:
    return Settings(data_dir=data_dir, database_url=url, **overrides)


@contextmanager
def _app(settings: Settings) -> Iterator[FastAPI]:
    """An app whose keys are checked, as before it serves (or its refusal)."""
    app = create_app(settings)
    try:
        app.state.signing_key.establish()
        yield app
    finally:
        app.state.db.dispose()


async def _startup(app: FastAPI) -> None:
    async with app.router.lifespan_context(app):
        pass


def _start(settings: Settings) -> None:
    with _app(settings):
        pass


def _pem(key: Ed25519PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_instances_with_another_key_refuse_to_start(empty_database: str, tmp_path: Path) -> None:
    first = _settings(tmp_path / "a", empty_database)
    migrate(first)
    with _app(first) as app:
        kid = app.state.signing_key.kid
    [key] = signing_keys(first)
    assert (key.kid, key.state, key.source, key.endorsement) == (kid, "active", "file", None)

    # A second instance on the same database, with its own data folder: it would mint
    # a key of its own and 401 every token the first issued. It refuses instead,
    # without creating a key file.
    second = _settings(tmp_path / "b", empty_database)
    with pytest.raises(Conflict) as refused:
        _start(second)
    assert refused.value.code == "signing_key_mismatch"
    assert kid in refused.value.message
    assert not second.resolved_signing_key_file.exists()
    other = Ed25519PrivateKey.generate()
    second.resolved_signing_key_file.write_text(_pem(other))
    with pytest.raises(Conflict, match="is not the deployment's") as refused:
        _start(second)
    assert refused.value.code == "signing_key_mismatch"

    # Served by any ASGI server, the app refuses at startup (its lifespan).
    app = create_app(second)
    try:
        with pytest.raises(Conflict, match="is not the deployment's"):
            asyncio.run(_startup(app))
    finally:
        app.state.db.dispose()

    # `coherency server run` says so in one line, before it listens.
    result = CliRunner().invoke(
        cli,
        [
            *("server", "run", "--data-dir", str(tmp_path / "b")),
            *("--database-url", empty_database, "--port", str(_free_port())),
        ],
    )
    assert result.exit_code == 5, result.output
    assert result.output.startswith("error: this instance's token signing key")
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output

    # Given the deployment's key (a shared file, or the same key as a secret), it starts.
    shutil.copy(first.resolved_signing_key_file, second.resolved_signing_key_file)
    with _app(second) as app:
        assert app.state.signing_key.kid == kid
    pem = first.resolved_signing_key_file.read_text()
    as_secret = _settings(
        tmp_path / "c", empty_database, signing_key_source="secret", signing_key=pem
    )
    with _app(as_secret) as app:
        assert app.state.signing_key.kid == kid
    # A secret that is not the deployment's is refused alike; a malformed one is a
    # setting error.
    with pytest.raises(
        Conflict, match=r"from COHERENCY_SERVER_SIGNING_KEY .kid [0-9a-f]+. is not the"
    ):
        _start(as_secret.model_copy(update={"signing_key": _pem(other)}))
    with pytest.raises(Invalid) as bad:
        _start(as_secret.model_copy(update={"signing_key": "not a key"}))
    assert bad.value.code == "invalid_signing_key"
    with pytest.raises(Invalid) as missing:
        _start(as_secret.model_copy(update={"signing_key": None}))
    assert missing.value.code == "invalid_setting"
    # The key is not in the database: a database-source instance cannot use it.
    with pytest.raises(Conflict, match="SIGNING_KEY_SOURCE=file"):
        _start(_settings(tmp_path / "a", empty_database, signing_key_source="database"))


def test_a_database_key_is_shared_by_instances_with_the_secret_key(
    empty_database: str, tmp_path: Path
) -> None:
    first = _settings(tmp_path / "a", empty_database, signing_key_source="database")
    migrate(first)
    with _app(first) as app:
        kid = app.state.signing_key.kid
        token, _ = app.state.signing_key.issue_access_token(
            subject="d", kind="device", clinic_id=None, organisation_id="o", role="device",
            ttl=timedelta(minutes=5),
        )  # fmt: skip
    [key] = signing_keys(first)
    assert (key.kid, key.source) == (kid, "database")
    assert not first.resolved_signing_key_file.exists()
    # Another instance with the same secret key file verifies the first one's tokens.
    (tmp_path / "b").mkdir(mode=0o700)
    shutil.copy(first.resolved_secret_key_file, tmp_path / "b" / "secret-key")
    second = _settings(tmp_path / "b", empty_database, signing_key_source="database")
    with _app(second) as app:
        assert app.state.signing_key.kid == kid
        assert app.state.signing_key.verify_access_token(token).subject == "d"
    # Without it, the sealed key does not open: one clear refusal.
    with pytest.raises(Unavailable) as refused:
        _start(_settings(tmp_path / "c", empty_database, signing_key_source="database"))
    assert refused.value.code == "secret_key_mismatch"
    # A file-source instance on a database-key deployment is refused too.
    with pytest.raises(Conflict) as refused_file:
        _start(_settings(tmp_path / "d", empty_database))
    assert refused_file.value.code == "signing_key_mismatch"


def test_unknown_retired_and_forged_keys_are_401(empty_database: str, tmp_path: Path) -> None:
    settings = _settings(tmp_path / "a", empty_database, signing_key_source="database")
    migrate(settings)
    with _app(settings) as app, ThreadedServer(app) as live, httpx.Client() as http:
        keyring = app.state.signing_key
        claims = {"sub": "x", "iss": keyring.issuer, "aud": keyring.audience, "jti": "j"}
        claims |= {"iat": 1, "exp": 2**40, "kind": "device", "org": "o", "role": "device"}
        valid = jwt.encode(claims, Ed25519PrivateKey.generate(), "EdDSA")
        numeric_kid = _b64(b'{"alg":"EdDSA","typ":"JWT","kid":7}') + valid[valid.index(".") :]
        for forged in [
            jwt.encode(claims, Ed25519PrivateKey.generate(), "EdDSA", headers=header)
            for header in ({"kid": "0123456789abcdef"}, {"kid": keyring.kid}, {})
        ] + [numeric_kid, "a.b.c", "no-token"]:
            answer = http.get(
                f"{live.url}/v1/devices/me", headers={"authorization": f"Bearer {forged}"}
            )
            assert answer.status_code == 401, answer.text
            assert answer.json()["error"]["code"] == "invalid_token"

        # A key rotated out long ago no longer verifies what it signed.
        old, _ = keyring.issue_access_token(
            subject="d", kind="device", clinic_id=None, organisation_id="o", role="device",
            ttl=timedelta(days=1),
        )  # fmt: skip
        with app.state.db.write() as session:
            rotate_key(session=session, settings=settings, now=utcnow() - timedelta(days=1))
        keyring.refresh()
        answer = http.get(f"{live.url}/v1/devices/me", headers={"authorization": f"Bearer {old}"})
        assert answer.status_code == 401
        assert answer.json()["error"] == {
            "code": "invalid_token",
            "message": "access token signed by a retired key",
        }


def test_a_device_never_pins_a_key_its_pinned_key_did_not_endorse() -> None:
    pinned, second, third = (Ed25519PrivateKey.generate() for _ in range(3))

    def raw(key: Ed25519PrivateKey) -> bytes:
        return key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    link2 = TokenKeyLink(raw(second), pinned.sign(token_key_statement(raw(second))))
    link3 = TokenKeyLink(raw(third), second.sign(token_key_statement(raw(third))))
    assert follow_token_keys(raw(pinned), [link2, link3]) == raw(third)
    # Out of order, with a gap, unendorsed, endorsed by a stranger, or a signature of
    # the bare key (no domain): each stops the walk where trust ends.
    assert follow_token_keys(raw(pinned), [link3, link2]) == raw(second)
    assert follow_token_keys(raw(pinned), [link3]) == raw(pinned)
    assert follow_token_keys(raw(pinned), [TokenKeyLink(raw(second), None)]) == raw(pinned)
    stranger = Ed25519PrivateKey.generate()
    forged = TokenKeyLink(raw(second), stranger.sign(token_key_statement(raw(second))))
    assert follow_token_keys(raw(pinned), [forged]) == raw(pinned)
    bare = TokenKeyLink(raw(second), pinned.sign(raw(second)))
    assert follow_token_keys(raw(pinned), [bare]) == raw(pinned)


def _me(url: str, token: str) -> httpx.Response:
    return httpx.get(f"{url}/v1/devices/me", headers={"authorization": f"Bearer {token}"})


@pytest.mark.parametrize("source", ["database", "file"])
def test_rotation_keeps_old_tokens_and_devices_learn_each_new_key(
    empty_database: str, tmp_path: Path, tmp_store: Any, source: str
) -> None:
    settings = _settings(tmp_path / "server", empty_database, signing_key_source=source)
    migrate(settings)
    issued = issue_enrolment_token(settings, clinic="rotation")
    with _app(settings) as app, ThreadedServer(app) as live:
        keyring = app.state.signing_key
        client = tmp_store("tablet", clinic_id=issued.clinic_id)
        client.enroll(live.url, issued.token)
        first = client.replica.enrollment
        peer = server_peer_id(first)
        assert first.server_public_key == keyring.public_key_bytes
        client.patients.add(given_name="Ada", family_name="Before", birth_date="1950-01-01")
        assert client.sync(blobs=False).pushed

        old_token, _ = keyring.issue_access_token(
            subject=client.device_id, kind="device", clinic_id=issued.clinic_id,
            organisation_id=issued.organisation_id, role="device", ttl=timedelta(minutes=5),
        )  # fmt: skip
        keys_seen = [keyring.public_key_bytes]
        for _ in range(2):  # a rotation, then another: devices follow the chain
            if source == "file":
                with pytest.raises(Invalid) as needs_file:
                    rotate_signing_key(settings)
                assert needs_file.value.code == "key_file_required"
                new_file = tmp_path / f"next-{len(keys_seen)}.pem"
                new_file.write_text(_pem(Ed25519PrivateKey.generate()))
                rotated = rotate_signing_key(settings, key_file=str(new_file))
                # The operator puts the new key where the instance reads its key.
                shutil.copy(new_file, settings.resolved_signing_key_file)
            else:
                rotated = rotate_signing_key(settings)
            keyring.refresh()
            assert keyring.kid == rotated.new_kid
            keys_seen.append(keyring.public_key_bytes)
            # The old key's tokens keep working through the window.
            assert _me(live.url, old_token).status_code == 200
            # The device's next token answer carries the chain: it pins the new key,
            # and still tracks the server under the same peer id.
            with HttpTransport(client.replica) as transport:
                client.patients.add(given_name="Ada", family_name="After", birth_date="1950-01-01")
                assert client.sync(blobs=False, transport=transport).pushed
            learnt = client.replica.enrollment
            assert learnt.token_public_key == keys_seen[-1]
            assert learnt.server_public_key == keys_seen[0]
            assert server_peer_id(learnt) == peer

        listed = signing_keys(settings)
        assert [k.state for k in listed] == ["retiring", "retiring", "active"]
        assert [k.public_key for k in listed] == keys_seen
        with app.state.db.read() as session:
            targets = session.scalars(
                select(AuditEvent.target).where(AuditEvent.action == "signing-key-rotate")
            ).all()
        assert targets == [f"{listed[0].kid}:{listed[1].kid}", f"{listed[1].kid}:{listed[2].kid}"]


def test_keys_commands(empty_database: str, tmp_path: Path) -> None:
    data = str(tmp_path / "a")
    base = ["--data-dir", data, "--database-url", empty_database]
    runner = CliRunner(env={"COHERENCY_SERVER_SIGNING_KEY_SOURCE": "database"})
    migrate(_settings(tmp_path / "a", empty_database))
    assert runner.invoke(cli, ["server", "keys", "rotate", *base]).output == (
        "error: the deployment has no token signing key yet: start the server once first\n"
    )
    _start(_settings(tmp_path / "a", empty_database, signing_key_source="database"))
    rotated = runner.invoke(cli, ["server", "keys", "rotate", *base, "--json"])
    assert rotated.exit_code == 0, rotated.output
    listed = runner.invoke(cli, ["server", "keys", "list", *base, "--json"])
    rows = json.loads(listed.output)
    assert [r["state"] for r in rows] == ["retiring", "active"]
    assert rows[1]["kid"] == json.loads(rotated.output)["new_kid"]
    assert len(bytes.fromhex(rows[1]["public_key"])) == 32
    human = runner.invoke(cli, ["server", "keys", "list", *base])
    assert "active" in human.output and "retiring until" in human.output
    not_a_key = tmp_path / "not-a-key.pem"
    not_a_key.write_text("hello")
    bad = runner.invoke(cli, ["server", "keys", "rotate", *base, "--key-file", str(not_a_key)])
    assert bad.exit_code == 2, bad.output
    assert bad.output.startswith(f"error: {not_a_key} is not a PEM private key")
