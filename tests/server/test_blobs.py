"""Blobs on a live server (local folder backend), on SQLite and PostgreSQL.

Uploads are resumable and verified, downloads resume with Range, and a clinic never
sees another clinic's blobs. The device side (`edge_sdk._blob_transfer`) runs against
the real server through a small `SyncHttp` over httpx.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import socket
import stat
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import func, select

from edge_sdk._blob_transfer import download_blob, upload_blob
from edge_sdk._blobs import EncryptedFileBlobStore
from edge_sdk._errors import BlobCorruptError, BlobNotFoundError
from sync_server.audit.tables import AuditEvent
from sync_server.blobs.backends import (
    BlobMissingError,
    IntegrityError,
    LocalBlobBackend,
    UploadLostError,
)
from sync_server.blobs.tables import Blob, Upload
from sync_server.blobs.uploads import purge_stale_uploads
from sync_server.identity.tables import User

MiB = 1024 * 1024
OCTETS = {"content-type": "application/octet-stream"}


# ------------------------------------------------------------------------ helpers


class HttpxSync:
    """A plain `SyncHttp`: httpx with a bearer token, no retries."""

    def __init__(self, base_url: str, token: str) -> None:
        self.client = httpx.Client(
            base_url=base_url, headers={"authorization": f"Bearer {token}"}, timeout=60
        )

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        stream: bool = False,
    ) -> httpx.Response:
        request = self.client.build_request(
            method, path, json=json, content=content, headers=headers, params=params
        )
        return self.client.send(request, stream=stream)

    def close(self) -> None:
        self.client.close()


class CountingHttp:
    """Wraps a `SyncHttp`, counting PATCH body bytes, optionally failing the Nth PATCH
    after the server has processed it (a response lost on the way back)."""

    def __init__(self, inner: HttpxSync, *, lose_response_of_patch: int | None = None) -> None:
        self.inner = inner
        self.patch_bytes = 0
        self.patches = 0
        self.lose_response_of_patch = lose_response_of_patch

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self.inner.request(method, path, **kwargs)
        if method == "PATCH":
            self.patches += 1
            self.patch_bytes += len(kwargs.get("content") or b"")
            if self.patches == self.lose_response_of_patch:
                response.close()
                raise httpx.ReadError("connection reset (simulated) after the server replied")
        return response


class CuttingHttp:
    """Wraps a `SyncHttp`; streamed GET bodies break off after `cut_after` bytes, the
    first `cuts` times (a connection dropped mid-download)."""

    def __init__(
        self, inner: HttpxSync, *, cut_after: int, cuts: int, strip_range: bool = False
    ) -> None:
        self.inner = inner
        self.cut_after = cut_after
        self.cuts_left = cuts
        self.strip_range = strip_range  # act like a proxy that drops Range headers
        self.range_headers: list[str | None] = []

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        if method == "GET" and kwargs.get("stream"):
            self.range_headers.append((kwargs.get("headers") or {}).get("Range"))
            if self.strip_range:
                kwargs["headers"] = None
        response = self.inner.request(method, path, **kwargs)
        if method != "GET" or not kwargs.get("stream"):
            return response
        if self.cuts_left <= 0:
            return response
        self.cuts_left -= 1
        return _CutResponse(response, self.cut_after)


class _CutResponse:
    def __init__(self, inner: httpx.Response, limit: int) -> None:
        self._inner = inner
        self._limit = limit
        self.status_code = inner.status_code
        self.headers = inner.headers

    def json(self) -> Any:
        return self._inner.json()

    def read(self) -> bytes:
        return self._inner.read()

    def iter_bytes(self) -> Iterator[bytes]:
        given = 0
        for piece in self._inner.iter_bytes():
            if given + len(piece) >= self._limit:
                yield piece[: self._limit - given]
                raise httpx.RemoteProtocolError("peer closed connection (simulated)")
            given += len(piece)
            yield piece

    def close(self) -> None:
        self._inner.close()


class RandomStream(io.RawIOBase):
    """`size` random bytes, made 1 MiB at a time as they are read."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self._left = size
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self._pending and self._left:
            self._pending = os.urandom(min(MiB, self._left))
            self._left -= len(self._pending)
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stored_sha(store: EncryptedFileBlobStore, sha256: str) -> str:
    """Hash a stored blob's plaintext without holding it in memory."""
    hasher = hashlib.sha256()
    for chunk in store.open(sha256):
        hasher.update(chunk)
    return hasher.hexdigest()


@dataclass
class Device:
    """A device of a fresh clinic on the live server."""

    server: Any
    clinic_id: str
    device_id: str
    token: str
    http: httpx.Client
    sync: HttpxSync

    def declare(self, sha256: str, size: int) -> httpx.Response:
        return self.http.post("/v1/blobs/uploads", json={"sha256": sha256, "size": size})

    def patch(self, upload_id: str, offset: int, data: bytes, **headers: str) -> httpx.Response:
        return self.http.patch(
            f"/v1/blobs/uploads/{upload_id}",
            content=data,
            headers={**OCTETS, "Upload-Offset": str(offset), **headers},
        )

    def offset(self, upload_id: str) -> int:
        response = self.http.get(f"/v1/blobs/uploads/{upload_id}")
        assert response.status_code == 200, response.text
        return int(response.json()["offset"])

    def put(self, data: bytes) -> str:
        """Upload `data` in one chunk; returns its hash."""
        digest = sha(data)
        upload = self.declare(digest, len(data)).json()
        answer = self.patch(upload["upload_id"], 0, data)
        assert answer.status_code == 200, answer.text
        assert answer.json()["complete"] is True
        return digest


@pytest.fixture
def new_device(server: Any) -> Iterator[Callable[..., Device]]:
    """Makes devices, each in a fresh clinic unless one is given."""
    made: list[Device] = []

    def make(clinic_id: str | None = None) -> Device:
        clinic_id = clinic_id or server.new_clinic()
        device_id, token = server.device_token(clinic_id)
        device = Device(
            server, clinic_id, device_id, token, server.http(token), HttpxSync(server.url, token)
        )
        made.append(device)
        return device

    yield make
    for device in made:
        device.http.close()
        device.sync.close()


@pytest.fixture
def device(new_device: Callable[..., Device]) -> Device:
    return new_device()


@pytest.fixture
def store_factory(tmp_path: Path) -> Callable[[str], EncryptedFileBlobStore]:
    def make(name: str) -> EncryptedFileBlobStore:
        return EncryptedFileBlobStore(tmp_path / name, os.urandom(32))

    return make


def backend_of(server: Any) -> LocalBlobBackend:
    backend = server.app.state.blobs
    assert isinstance(backend, LocalBlobBackend)
    return backend


def blob_row(server: Any, clinic_id: str, sha256: str) -> Blob | None:
    with server.db.read() as session:
        return session.get(Blob, (clinic_id, sha256))


def audit_events(server: Any, clinic_id: str, action: str) -> list[AuditEvent]:
    with server.db.read() as session:
        return list(
            session.scalars(
                select(AuditEvent).where(
                    AuditEvent.clinic_id == clinic_id, AuditEvent.action == action
                )
            )
        )


def upload_rows(server: Any, clinic_id: str) -> int:
    with server.db.read() as session:
        return session.scalar(
            select(func.count()).select_from(Upload).where(Upload.clinic_id == clinic_id)
        )


# ------------------------------------------------------------------------ round trips


def test_upload_and_download_round_trip(
    server: Any, new_device: Callable[..., Device], store_factory: Any
) -> None:
    uploader = new_device()
    source = store_factory("source")
    data = os.urandom(3 * MiB + 17)
    ref = source.put_bytes(data)
    seen: list[tuple[int, int]] = []

    sent = upload_blob(
        uploader.sync, source, ref.sha256, chunk_size=MiB, progress=lambda d, t: seen.append((d, t))
    )

    assert sent == len(data)
    assert seen[-1] == (len(data), len(data))
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    row = blob_row(server, uploader.clinic_id, ref.sha256)
    assert row is not None and row.size == len(data) and row.uploaded_by == uploader.device_id
    assert upload_rows(server, uploader.clinic_id) == 0
    [event] = audit_events(server, uploader.clinic_id, "blob-upload")
    assert (event.target, event.outcome, event.actor_id) == (ref.sha256, "ok", uploader.device_id)
    # On disk: the final key, owner-only permissions, no part file left over.
    backend = backend_of(server)
    path = backend.blob_path(uploader.clinic_id, ref.sha256)
    assert path.read_bytes() == data
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.parent.parent.stat().st_mode) == 0o700
    assert not list((backend.root / "uploads").glob("*.part"))

    # A second upload of the same blob sends nothing.
    assert upload_blob(uploader.sync, source, ref.sha256) == 0

    # Another device of the clinic downloads it into its own store.
    reader = new_device(uploader.clinic_id)
    target = store_factory("target")
    download_blob(reader.sync, target, ref.sha256, len(data))
    assert target.read_bytes(ref.sha256) == data
    [event] = audit_events(server, uploader.clinic_id, "blob-download")
    assert (event.target, event.actor_id) == (ref.sha256, reader.device_id)


def test_empty_blob_round_trip(device: Device, store_factory: Any, server: Any) -> None:
    source, target = store_factory("source"), store_factory("target")
    ref = source.put_bytes(b"")
    assert upload_blob(device.sync, source, ref.sha256) == 0
    assert blob_row(server, device.clinic_id, ref.sha256) is not None
    download_blob(device.sync, target, ref.sha256, 0)
    assert target.read_bytes(ref.sha256) == b""


def test_interrupted_100mb_upload_resumes_from_server_offset(
    server: Any, new_device: Callable[..., Device], store_factory: Any
) -> None:
    # Run on both databases: about 3 s each on loopback.
    size = 100 * MiB
    chunk = 8 * MiB
    source = store_factory("source")
    ref = source.put_stream(RandomStream(size))
    assert ref.size == size
    device = new_device()

    class Interrupted(Exception):
        pass

    acknowledged: list[int] = []

    def cut_after_three_chunks(done: int, total: int) -> None:
        if done:
            acknowledged.append(done)
        if len(acknowledged) == 3:
            raise Interrupted

    with pytest.raises(Interrupted):
        upload_blob(
            device.sync, source, ref.sha256, chunk_size=chunk, progress=cut_after_three_chunks
        )
    assert acknowledged == [chunk, 2 * chunk, 3 * chunk]
    answer = device.declare(ref.sha256, size)
    assert answer.status_code == 200  # the same upload, to resume
    upload_id = answer.json()["upload_id"]
    assert answer.json()["offset"] == 3 * chunk
    head = device.http.head(f"/v1/blobs/uploads/{upload_id}")
    assert head.headers["Upload-Offset"] == str(3 * chunk)
    assert head.headers["Upload-Length"] == str(size)
    assert blob_row(server, device.clinic_id, ref.sha256) is None

    counting = CountingHttp(device.sync)
    resumed = upload_blob(counting, source, ref.sha256, chunk_size=chunk)

    assert resumed == counting.patch_bytes == size - 3 * chunk
    row = blob_row(server, device.clinic_id, ref.sha256)
    assert row is not None and row.size == size
    assert backend_of(server).size(device.clinic_id, ref.sha256) == size

    # Download it back; the connection drops twice mid-body and Range resumes it.
    target = store_factory("target")
    cutting = CuttingHttp(device.sync, cut_after=30 * MiB, cuts=2)
    download_blob(cutting, target, ref.sha256, size)
    assert cutting.range_headers == [None, f"bytes={30 * MiB}-", f"bytes={60 * MiB}-"]
    assert target.size(ref.sha256) == size
    assert stored_sha(target, ref.sha256) == ref.sha256


def test_lost_patch_response_is_resynchronised(
    server: Any, device: Device, store_factory: Any
) -> None:
    source = store_factory("source")
    data = os.urandom(5 * MiB + 3)
    ref = source.put_bytes(data)
    lossy = CountingHttp(device.sync, lose_response_of_patch=2)
    with pytest.raises(httpx.ReadError):
        upload_blob(lossy, source, ref.sha256, chunk_size=MiB)
    # The server took the second chunk although the device never heard back.
    upload_id = device.declare(ref.sha256, len(data)).json()["upload_id"]
    assert device.offset(upload_id) == 2 * MiB

    # A retry that resends the chunk the server already has gets 409 and realigns.
    class ResendFirst(CountingHttp):
        def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
            if method == "PATCH" and self.patches == 0:
                resent = data[MiB : 2 * MiB]
                checksum = base64.b64encode(hashlib.sha256(resent).digest()).decode()
                kwargs["headers"] = {
                    **kwargs["headers"],
                    "Upload-Offset": str(MiB),
                    "Upload-Checksum": f"sha256 {checksum}",
                }
                kwargs["content"] = resent
            return super().request(method, path, **kwargs)

    resend = ResendFirst(device.sync)
    upload_blob(resend, source, ref.sha256, chunk_size=MiB)
    assert resend.patch_bytes == MiB + (len(data) - 2 * MiB)  # the 409'd chunk, then the rest
    row = blob_row(server, device.clinic_id, ref.sha256)
    assert row is not None and row.size == len(data)


# ------------------------------------------------------------------------ bad input


def test_wrong_hash_stores_nothing(server: Any, device: Device) -> None:
    data = os.urandom(4096)
    claimed = sha(b"something else entirely")
    upload = device.declare(claimed, len(data))
    assert upload.status_code == 201
    upload_id = upload.json()["upload_id"]
    part = backend_of(server).root / "uploads" / f"{upload_id}.part"
    assert part.exists()

    first = device.patch(upload_id, 0, data[:1000])
    assert first.status_code == 200 and first.json()["offset"] == 1000
    answer = device.patch(upload_id, 1000, data[1000:])

    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == "hash_mismatch"
    assert blob_row(server, device.clinic_id, claimed) is None
    assert blob_row(server, device.clinic_id, sha(data)) is None
    assert upload_rows(server, device.clinic_id) == 0
    assert not backend_of(server).exists(device.clinic_id, claimed)
    assert not backend_of(server).blob_path(device.clinic_id, claimed).parent.exists()
    assert not part.exists()
    assert audit_events(server, device.clinic_id, "blob-upload") == []
    assert device.http.get(f"/v1/blobs/uploads/{upload_id}").status_code == 404
    assert device.http.get(f"/v1/blobs/{claimed}").status_code == 404


def test_wrong_offset_is_409_with_the_server_offset(device: Device) -> None:
    data = os.urandom(3000)
    upload_id = device.declare(sha(data), len(data)).json()["upload_id"]
    ahead = device.patch(upload_id, 500, data[500:1000])
    assert ahead.status_code == 409
    assert ahead.json()["offset"] == 0
    assert ahead.json()["error"]["code"] == "offset_mismatch"
    assert ahead.headers["Upload-Offset"] == "0"

    assert device.patch(upload_id, 0, data[:1000]).status_code == 200
    again = device.patch(upload_id, 0, data[:1000])  # a retry of a chunk already taken
    assert again.status_code == 409
    assert again.json()["offset"] == 1000
    assert device.offset(upload_id) == 1000
    done = device.patch(upload_id, 1000, data[1000:])
    assert done.status_code == 200 and done.json()["complete"] is True


def test_oversize_chunk_is_413_and_writes_nothing(server: Any, device: Device) -> None:
    limit = server.settings.max_blob_chunk
    data = os.urandom(limit + 1)
    upload_id = device.declare(sha(data), len(data)).json()["upload_id"]

    declared = device.patch(upload_id, 0, data)
    assert declared.status_code == 413, declared.text
    assert declared.json()["error"]["code"] == "chunk_too_large"

    def pieces() -> Iterator[bytes]:  # no Content-Length: chunked transfer encoding
        for start in range(0, len(data), MiB):
            yield data[start : start + MiB]

    chunked = device.http.patch(
        f"/v1/blobs/uploads/{upload_id}",
        content=pieces(),
        headers={**OCTETS, "Upload-Offset": "0"},
    )
    assert chunked.status_code == 413
    assert device.offset(upload_id) == 0
    part = backend_of(server).root / "uploads" / f"{upload_id}.part"
    assert part.stat().st_size == 0


def test_malformed_chunks_are_refused(device: Device) -> None:
    data = os.urandom(2000)
    upload_id = device.declare(sha(data), len(data)).json()["upload_id"]
    url = f"/v1/blobs/uploads/{upload_id}"

    past_end = device.patch(upload_id, 0, data + b"extra")
    assert past_end.status_code == 400
    assert past_end.json()["error"]["code"] == "beyond_declared_size"
    no_offset = device.http.patch(url, content=data, headers=OCTETS)
    assert no_offset.status_code == 400
    assert no_offset.json()["error"]["code"] == "invalid_offset"
    bad_offset = device.patch(upload_id, 0, data, **{"Upload-Offset": "-1"})
    assert bad_offset.status_code == 400
    wrong_type = device.http.patch(
        url, content=data, headers={"Upload-Offset": "0", "content-type": "application/json"}
    )
    assert wrong_type.status_code == 415
    empty = device.patch(upload_id, 0, b"")
    assert empty.status_code == 400 and empty.json()["error"]["code"] == "empty_chunk"
    wrong_digest = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    bad_checksum = device.patch(upload_id, 0, data, **{"Upload-Checksum": f"sha256 {wrong_digest}"})
    assert bad_checksum.status_code == 422
    assert bad_checksum.json()["error"]["code"] == "checksum_mismatch"
    garbled = device.patch(upload_id, 0, data, **{"Upload-Checksum": "md5 abc"})
    assert garbled.status_code == 400
    assert device.offset(upload_id) == 0

    good_digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
    ok = device.patch(upload_id, 0, data, **{"Upload-Checksum": f"sha256 {good_digest}"})
    assert ok.status_code == 200 and ok.json()["complete"] is True


@pytest.mark.parametrize(
    "body",
    [
        {"sha256": "xyz", "size": 1},
        {"sha256": "A" * 64, "size": 1},
        {"sha256": "0" * 63, "size": 1},
        {"sha256": "0" * 64, "size": -1},
        {"sha256": "0" * 64},
        {"sha256": "0" * 64, "size": 1, "extra": True},
    ],
)
def test_garbage_upload_declarations_are_422(device: Device, body: dict[str, Any]) -> None:
    answer = device.http.post("/v1/blobs/uploads", json=body)
    assert answer.status_code == 422
    assert answer.json()["error"]["code"] == "invalid_request"


def test_garbage_paths_are_4xx(device: Device, server: Any) -> None:
    for path in ("/v1/blobs/xyz", f"/v1/blobs/{'A' * 64}", f"/v1/blobs/{'0' * 65}"):
        assert device.http.get(path).status_code == 422
        assert device.http.head(path).status_code == 422
    assert device.http.get("/v1/blobs/uploads/not-an-id").status_code == 422
    assert device.http.get(f"/v1/blobs/uploads/{uuid.uuid4().hex}").status_code == 404
    too_big = device.declare("0" * 64, server.settings.max_blob_size + 1)
    assert too_big.status_code == 413
    assert too_big.json()["error"]["code"] == "blob_too_large"
    assert device.http.get(f"/v1/blobs/{'0' * 64}").status_code == 404
    with httpx.Client(base_url=server.url) as anonymous:
        assert anonymous.get(f"/v1/blobs/{'0' * 64}").status_code == 401
        assert anonymous.post("/v1/blobs/uploads", json={}).status_code == 401


def test_connection_cut_mid_chunk_writes_nothing(server: Any, device: Device) -> None:
    data = os.urandom(MiB)
    upload_id = device.declare(sha(data + b"tail"), len(data) + 4).json()["upload_id"]
    url = urlsplit(server.url)
    head = (
        f"PATCH /v1/blobs/uploads/{upload_id} HTTP/1.1\r\n"
        f"Host: {url.netloc}\r\n"
        f"Authorization: Bearer {device.token}\r\n"
        "Content-Type: application/octet-stream\r\n"
        "Upload-Offset: 0\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    ).encode()
    with socket.create_connection((url.hostname, url.port)) as raw:
        raw.sendall(head + data[: len(data) // 2])
        time.sleep(0.2)
    time.sleep(0.3)  # let the server notice the disconnect

    assert device.offset(upload_id) == 0
    assert (backend_of(server).root / "uploads" / f"{upload_id}.part").stat().st_size == 0
    assert device.patch(upload_id, 0, data).json()["offset"] == len(data)


def test_concurrent_chunks_at_one_offset_one_wins(server: Any, device: Device) -> None:
    data = os.urandom(2 * MiB)
    upload_id = device.declare(sha(data), len(data)).json()["upload_id"]
    barrier = threading.Barrier(4)
    statuses: list[int] = []
    lock = threading.Lock()

    def send() -> None:
        with server.http(device.token) as client:
            barrier.wait()
            answer = client.patch(
                f"/v1/blobs/uploads/{upload_id}",
                content=data[:MiB],
                headers={**OCTETS, "Upload-Offset": "0"},
            )
        with lock:
            statuses.append(answer.status_code)

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200, 409, 409, 409]
    assert device.offset(upload_id) == MiB


def test_declaring_again_resumes_the_same_upload(device: Device) -> None:
    data = os.urandom(1000)
    first = device.declare(sha(data), len(data))
    assert first.status_code == 201
    assert first.json()["offset"] == 0 and first.json()["complete"] is False
    upload_id = first.json()["upload_id"]
    device.patch(upload_id, 0, data[:400])
    second = device.declare(sha(data), len(data))
    assert second.status_code == 200
    assert (second.json()["upload_id"], second.json()["offset"]) == (upload_id, 400)

    # The same hash declared with another size replaces the upload.
    other = device.declare(sha(data), len(data) + 1)
    assert other.status_code == 201 and other.json()["upload_id"] != upload_id
    assert device.http.get(f"/v1/blobs/uploads/{upload_id}").status_code == 404


def test_delete_upload_discards_it(server: Any, device: Device) -> None:
    data = os.urandom(1000)
    upload_id = device.declare(sha(data), len(data)).json()["upload_id"]
    device.patch(upload_id, 0, data[:10])
    assert device.http.delete(f"/v1/blobs/uploads/{upload_id}").status_code == 204
    assert device.http.get(f"/v1/blobs/uploads/{upload_id}").status_code == 404
    assert not (backend_of(server).root / "uploads" / f"{upload_id}.part").exists()
    assert upload_rows(server, device.clinic_id) == 0


def test_lost_part_file_asks_for_a_restart(server: Any, device: Device) -> None:
    data = os.urandom(1000)
    upload_id = device.declare(sha(data), len(data)).json()["upload_id"]
    device.patch(upload_id, 0, data[:10])
    (backend_of(server).root / "uploads" / f"{upload_id}.part").unlink()
    answer = device.patch(upload_id, 10, data[10:])
    assert answer.status_code == 410
    assert answer.json()["error"]["code"] == "upload_lost"
    assert upload_rows(server, device.clinic_id) == 0
    assert device.declare(sha(data), len(data)).status_code == 201


# ------------------------------------------------------------------------ clinics


def test_another_clinic_can_neither_read_nor_probe(
    server: Any, new_device: Callable[..., Device]
) -> None:
    owner, stranger = new_device(), new_device()
    data = os.urandom(5000)
    digest = owner.put(data)
    assert owner.http.head(f"/v1/blobs/{digest}").status_code == 200

    assert stranger.http.get(f"/v1/blobs/{digest}").status_code == 404
    assert stranger.http.head(f"/v1/blobs/{digest}").status_code == 404
    probe = stranger.http.get(f"/v1/blobs/{digest}", params={"clinic_id": owner.clinic_id})
    assert probe.status_code == 404
    # Declaring the same blob starts an upload: its existence elsewhere is not revealed.
    declared = stranger.declare(digest, len(data))
    assert declared.status_code == 201 and declared.json()["complete"] is False
    # Nor can it touch the owner's uploads.
    pending = os.urandom(100)
    upload_id = owner.declare(sha(pending), 100).json()["upload_id"]
    assert stranger.http.get(f"/v1/blobs/uploads/{upload_id}").status_code == 404
    assert stranger.http.head(f"/v1/blobs/uploads/{upload_id}").status_code == 404
    assert stranger.patch(upload_id, 0, pending).status_code == 404
    assert stranger.http.delete(f"/v1/blobs/uploads/{upload_id}").status_code == 404
    assert owner.offset(upload_id) == 0
    assert audit_events(server, owner.clinic_id, "blob-download") == []


def _staff_token(server: Any, clinic_id: str | None, role: str = "clinician") -> str:
    user_id = str(uuid.uuid4())
    with server.db.write() as session:
        session.add(
            User(
                id=user_id,
                organisation_id=server.organisation_id,
                clinic_id=clinic_id,
                username=f"user-{user_id}",
                password_hash="!",
                role=role,
                active=True,
            )
        )
    token, _ = server.app.state.signing_key.issue_access_token(
        subject=user_id,
        kind="user",
        clinic_id=clinic_id,
        organisation_id=server.organisation_id,
        role=role,
        ttl=timedelta(minutes=5),
    )
    return str(token)


def test_staff_read_their_clinics_blobs(server: Any, device: Device) -> None:
    data = os.urandom(300)
    digest = device.put(data)
    path = f"/v1/blobs/{digest}"
    with server.http(_staff_token(server, device.clinic_id)) as staff:
        answer = staff.get(path)
        assert answer.status_code == 200 and answer.content == data
        # Staff cannot upload: uploads are the devices'.
        assert (
            staff.post("/v1/blobs/uploads", json={"sha256": digest, "size": 1}).status_code == 403
        )
    with server.http(_staff_token(server, server.new_clinic())) as elsewhere:
        assert elsewhere.get(path).status_code == 404
    with server.http(_staff_token(server, None, role="admin")) as admin:
        assert admin.get(path).status_code == 400
        assert admin.get(path, params={"clinic_id": device.clinic_id}).content == data
        assert admin.get(path, params={"clinic_id": str(uuid.uuid4())}).status_code == 404
    readers = {e.actor_kind for e in audit_events(server, device.clinic_id, "blob-download")}
    assert readers == {"user"}


# ------------------------------------------------------------------------ ranges


def test_range_requests(device: Device) -> None:
    data = os.urandom(10_000)
    digest = device.put(data)
    path = f"/v1/blobs/{digest}"

    whole = device.http.get(path)
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["accept-ranges"] == "bytes"
    assert whole.headers["etag"] == f'"{digest}"'
    expected_digest = base64.b64encode(bytes.fromhex(digest)).decode()
    assert whole.headers["repr-digest"] == f"sha-256=:{expected_digest}:"

    cases = {
        "bytes=10-19": (10, 20),
        "bytes=9990-": (9990, 10_000),
        "bytes=-25": (9975, 10_000),
        "bytes=9995-20000": (9995, 10_000),
        "bytes=0-0": (0, 1),
    }
    for header, (start, end) in cases.items():
        part = device.http.get(path, headers={"Range": header})
        assert part.status_code == 206, header
        assert part.content == data[start:end], header
        assert part.headers["content-range"] == f"bytes {start}-{end - 1}/10000"
        assert part.headers["content-length"] == str(end - start)

    beyond = device.http.get(path, headers={"Range": "bytes=10000-"})
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == "bytes */10000"
    assert beyond.json()["error"]["code"] == "range_not_satisfiable"
    for ignored in ("bytes=0-1,5-6", "bytes=20-10", "items=0-1", "bytes=x-"):
        answer = device.http.get(path, headers={"Range": ignored})
        assert answer.status_code == 200 and answer.content == data, ignored

    head = device.http.head(path)
    assert head.status_code == 200
    assert head.headers["content-length"] == "10000"
    assert head.content == b""


def test_download_resumes_even_when_range_is_ignored(device: Device, store_factory: Any) -> None:
    data = os.urandom(3 * MiB + 1)
    digest = device.put(data)
    target = store_factory("target")
    progress: list[int] = []
    stripping = CuttingHttp(device.sync, cut_after=MiB + 100, cuts=2, strip_range=True)
    download_blob(stripping, target, digest, len(data), progress=lambda d, t: progress.append(d))
    # Each full body breaks off at the same byte, so the resumes ask from there twice.
    assert stripping.range_headers == [None, f"bytes={MiB + 100}-", f"bytes={MiB + 100}-"]
    assert target.read_bytes(digest) == data
    assert progress == sorted(progress) and progress[-1] == len(data)


def test_stale_uploads_are_purged(server: Any, device: Device) -> None:
    data = os.urandom(100)
    upload_id = device.declare(sha(data), len(data)).json()["upload_id"]
    device.patch(upload_id, 0, data[:10])
    backend = backend_of(server)
    part = backend.root / "uploads" / f"{upload_id}.part"
    assert part.exists()
    # Fresh uploads stay.
    purge_stale_uploads(database=server.db, backend=backend, older_than=timedelta(hours=1))
    assert device.offset(upload_id) == 10
    with server.db.write() as session:
        session.get(Upload, upload_id).updated_at = datetime.now(UTC) - timedelta(days=8)
    assert (
        purge_stale_uploads(database=server.db, backend=backend, older_than=timedelta(days=7)) == 1
    )
    assert device.http.get(f"/v1/blobs/uploads/{upload_id}").status_code == 404
    assert not part.exists()
    assert device.declare(sha(data), len(data)).status_code == 201


def test_download_refuses_corrupt_server_bytes(
    server: Any, device: Device, store_factory: Any
) -> None:
    data = os.urandom(2 * MiB)
    digest = device.put(data)
    path = backend_of(server).blob_path(device.clinic_id, digest)
    tampered = bytearray(data)
    tampered[MiB + 7] ^= 0xFF
    path.write_bytes(bytes(tampered))
    target = store_factory("target")

    with pytest.raises(BlobCorruptError):
        download_blob(device.sync, target, digest, len(data))
    assert not target.exists(digest)
    assert list(target.list()) == []
    with pytest.raises(BlobNotFoundError):
        download_blob(device.sync, target, sha(b"never uploaded"), 10)
    # A size that is not the server's is refused before anything is stored.
    path.write_bytes(data)
    with pytest.raises(BlobCorruptError):
        download_blob(device.sync, target, digest, len(data) + 1)
    assert list(target.list()) == []


# ------------------------------------------------------------------------ local backend


def test_local_backend_parts_retries_and_integrity(tmp_path: Path) -> None:
    backend = LocalBlobBackend(tmp_path / "blobs")
    backend.check()
    clinic = "clinic-a"
    data = os.urandom(3000)
    digest = sha(data)

    backend.start("u1")
    backend.write_part("u1", None, 1, 0, data[:1000])
    backend.write_part("u1", None, 2, 1000, b"x" * 1500)  # a first, wrong attempt...
    backend.write_part("u1", None, 2, 1000, data[1000:2000])  # ...retried at its offset
    backend.write_part("u1", None, 3, 2000, data[2000:])
    backend.complete("u1", None, [None, None, None], clinic, digest, len(data))
    assert backend.exists(clinic, digest) and backend.size(clinic, digest) == len(data)
    assert b"".join(backend.open(clinic, digest)) == data
    assert b"".join(backend.open(clinic, digest, 100, 2500)) == data[100:2500]
    assert b"".join(backend.open(clinic, digest, 2999)) == data[2999:]
    assert not backend.exists("clinic-b", digest)
    with pytest.raises(BlobMissingError):
        backend.size("clinic-b", digest)
    with pytest.raises(BlobMissingError):
        next(backend.open("clinic-b", digest))

    backend.start("u2")
    backend.write_part("u2", None, 1, 0, data)
    wrong = sha(b"not it")
    with pytest.raises(IntegrityError):
        backend.complete("u2", None, [None], clinic, wrong, len(data))
    assert not backend.exists(clinic, wrong)
    assert not (backend.root / "uploads" / "u2.part").exists()
    backend.start("u3")
    backend.write_part("u3", None, 1, 0, data)
    with pytest.raises(IntegrityError):  # right hash, wrong size
        backend.complete("u3", None, [None], clinic, digest, len(data) + 1)

    with pytest.raises(UploadLostError):
        backend.write_part("gone", None, 2, 1000, data)
    for bad in ("../x", "", ".hidden", "a/b"):
        with pytest.raises(ValueError):
            backend.exists(bad, digest)
    with pytest.raises(ValueError):
        backend.exists(clinic, "0" * 63)


def test_openapi_documents_blob_routes(server: Any) -> None:
    with httpx.Client(base_url=server.url) as client:
        spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    assert set(paths["/v1/blobs/uploads"]) == {"post"}
    assert set(paths["/v1/blobs/uploads/{upload_id}"]) == {"get", "head", "patch", "delete"}
    assert set(paths["/v1/blobs/{sha256}"]) == {"get", "head"}
    for methods in (paths[p] for p in paths if p.startswith("/v1/blobs")):
        for operation in methods.values():
            assert operation["summary"] and operation["description"]
    assert json.dumps(paths["/v1/blobs/uploads/{upload_id}"]["patch"]["requestBody"])
