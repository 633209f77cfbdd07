"""Blobs on a live server, every body on both backends and both databases.

Uploads are resumable and verified, downloads resume with Range, and a clinic never
sees another clinic's blobs. The upload, download, resume and integrity tests run from
one parametrised fixture (`blobs`) against the local folder backend and the
S3-compatible backend (moto's S3 server, in this process, with fake credentials from
the server's settings), each over SQLite and PostgreSQL. What only one backend has
(file permissions, multipart part sizes, bucket creation) is tested on that backend.
The device side (`edge_sdk._blob_transfer`) runs against the real server through a
small `SyncHttp` over httpx.
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
from typing import Any, Protocol
from urllib.parse import urlsplit

import boto3
import httpx
import pytest
from botocore.config import Config
from click.testing import CliRunner
from moto.server import ThreadedMotoServer
from sqlalchemy import func, select

from cli.main import cli
from edge_sdk import Argon2Params, EdgeClient, PassphraseKeyProvider
from edge_sdk import _http_blobs as http_blobs
from edge_sdk._blob_transfer import download_blob, upload_blob
from edge_sdk._blobs import EncryptedFileBlobStore
from edge_sdk._errors import BlobCorruptError, BlobNotFoundError
from edge_sdk._errors import BlobMissingError as LostOnServerError
from sync_server import Settings, ThreadedServer, create_app, migrate
from sync_server.audit.tables import AuditEvent
from sync_server.blobs.backends import (
    BlobBackend,
    BlobBackendError,
    BlobMissingError,
    IntegrityError,
    LocalBlobBackend,
    S3BlobBackend,
    UploadLostError,
    make_blob_backend,
)
from sync_server.blobs.backends.s3 import S3_MIN_PART_SIZE
from sync_server.blobs.tables import Blob, Upload
from sync_server.blobs.uploads import purge_stale_uploads
from sync_server.db import Database
from sync_server.identity.enrolment import create_enrolment_token
from sync_server.identity.tables import Organisation, User

from .conftest import TESTS_RUN_THE_SWEEPS

MiB = 1024 * 1024
OCTETS = {"content-type": "application/octet-stream"}
FAKE_KEY_ID = "testing-key-id"
FAKE_SECRET = "testing-secret"


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


# ------------------------------------------------------------------------ backends


class Storage(Protocol):
    """Looks behind a server's back at where its blob bytes are, whatever the backend."""

    name: str
    part: int  # a chunk size every backend takes for a chunk that is not the last
    big: int  # the size of the interrupted-upload test's blob

    def traces(self, upload_id: str, clinic_id: str = "", sha256: str = "") -> list[str]:
        """What storage still holds for an upload (its partial data) and, if given, at
        a blob's final key (the blob, or a folder made for it)."""
        ...

    def received(self, upload_id: str) -> int:
        """Bytes the storage holds for an upload in progress."""
        ...

    def lose(self, upload_id: str) -> None:
        """Make the storage lose an upload's partial data."""
        ...

    def replace(self, clinic_id: str, sha256: str, data: bytes) -> None:
        """Overwrite a stored blob's bytes (tampering, or a disk going bad)."""
        ...

    def delete(self, clinic_id: str, sha256: str) -> None:
        """Lose a stored blob (a deleted file, a wiped bucket)."""
        ...


class LocalStorage:
    """The local folder backend: part files and blob files."""

    name = "local"
    part = MiB
    big = 100 * MiB

    def __init__(self, server: Any) -> None:
        self.backend: LocalBlobBackend = server.app.state.blobs
        assert isinstance(self.backend, LocalBlobBackend)

    def _part_file(self, upload_id: str) -> Path:
        return self.backend.root / "uploads" / f"{upload_id}.part"

    def traces(self, upload_id: str, clinic_id: str = "", sha256: str = "") -> list[str]:
        found = [self._part_file(upload_id)]
        if clinic_id and sha256:
            found.append(self.backend.blob_path(clinic_id, sha256).parent)
        return [str(path) for path in found if path.exists()]

    def received(self, upload_id: str) -> int:
        path = self._part_file(upload_id)
        return path.stat().st_size if path.exists() else 0

    def lose(self, upload_id: str) -> None:
        self._part_file(upload_id).unlink()

    def replace(self, clinic_id: str, sha256: str, data: bytes) -> None:
        self.backend.blob_path(clinic_id, sha256).write_bytes(data)

    def delete(self, clinic_id: str, sha256: str) -> None:
        self.backend.blob_path(clinic_id, sha256).unlink()


class S3Storage:
    """The S3-compatible backend: staging objects, multipart uploads, blob objects."""

    name = "s3"
    part = S3_MIN_PART_SIZE
    big = 40 * MiB + 123

    def __init__(self, server: Any, s3: Any, bucket: str) -> None:
        self.server = server
        self.s3 = s3
        self.bucket = bucket
        self.backend: S3BlobBackend = server.app.state.blobs
        assert isinstance(self.backend, S3BlobBackend)

    def _handle(self, upload_id: str) -> str | None:
        with self.server.db.read() as session:
            upload = session.get(Upload, upload_id)
            return None if upload is None else upload.backend_ref

    def _multipart(self, upload_id: str) -> list[Any]:
        answer = self.s3.list_multipart_uploads(
            Bucket=self.bucket, Prefix=S3BlobBackend.staging_key(upload_id)
        )
        return list(answer.get("Uploads", []))

    def _keys(self, prefix: str) -> list[str]:
        answer = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return [item["Key"] for item in answer.get("Contents", [])]

    def traces(self, upload_id: str, clinic_id: str = "", sha256: str = "") -> list[str]:
        found = self._keys(S3BlobBackend.staging_key(upload_id))
        found += [f"multipart {u['UploadId']}" for u in self._multipart(upload_id)]
        if clinic_id and sha256:
            found += self._keys(S3BlobBackend.key(clinic_id, sha256))
        return found

    def received(self, upload_id: str) -> int:
        handle = self._handle(upload_id)
        assert handle is not None
        parts = self.s3.list_parts(
            Bucket=self.bucket, Key=S3BlobBackend.staging_key(upload_id), UploadId=handle
        )
        return sum(int(part["Size"]) for part in parts.get("Parts", []))

    def lose(self, upload_id: str) -> None:
        self.s3.abort_multipart_upload(
            Bucket=self.bucket,
            Key=S3BlobBackend.staging_key(upload_id),
            UploadId=self._handle(upload_id),
        )

    def replace(self, clinic_id: str, sha256: str, data: bytes) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=S3BlobBackend.key(clinic_id, sha256), Body=data)

    def delete(self, clinic_id: str, sha256: str) -> None:
        self.s3.delete_object(Bucket=self.bucket, Key=S3BlobBackend.key(clinic_id, sha256))


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's S3 server, in this process, on a free loopback port."""
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        moto.stop()


def s3_settings(data_dir: Path, endpoint: str, bucket: str, **overrides: Any) -> Settings:
    return Settings(
        data_dir=data_dir,
        blob_backend="s3",
        s3_endpoint_url=endpoint,
        s3_bucket=bucket,
        s3_region="us-east-1",
        s3_access_key_id=FAKE_KEY_ID,
        s3_secret_access_key=FAKE_SECRET,
        **overrides,
    )


def s3_client(endpoint: str, **config: Any) -> Any:
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=FAKE_KEY_ID,
        aws_secret_access_key=FAKE_SECRET,
        config=Config(s3={"addressing_style": "path"}, **config),
    )


@dataclass
class S3Server:
    """A live server whose blobs live in a bucket of its own on the moto server."""

    handle: Any  # a conftest ServerHandle
    live: ThreadedServer
    s3: Any  # a boto3 client on the same bucket, to look behind the server's back
    bucket: str


@pytest.fixture(scope="session")
def s3_servers(
    tmp_path_factory: pytest.TempPathFactory, moto_endpoint: str
) -> Iterator[Callable[[Any], S3Server]]:
    """For a `server`, a second live server on the same database whose blobs live in a
    fresh bucket on moto (made on first use, one per database)."""
    made: dict[str, S3Server] = {}

    def on_database_of(server: Any) -> S3Server:
        if server.backend not in made:
            bucket = f"coherency-test-{uuid.uuid4().hex[:12]}"
            settings = s3_settings(
                tmp_path_factory.mktemp(f"server-s3-{server.backend}"),
                moto_endpoint,
                bucket,
                database_url=server.settings.database_url,
                long_poll_max_seconds=10,
                **TESTS_RUN_THE_SWEEPS,
                # A second instance on the deployment's database signs with its key.
                signing_key_file=server.settings.resolved_signing_key_file,
            )
            migrate(settings)
            app = create_app(settings)
            live = ThreadedServer(app)
            live.start()
            db: Database = app.state.db
            organisation_id = str(uuid.uuid4())
            with db.write() as session:
                session.add(Organisation(id=organisation_id, name=f"org-{organisation_id[:8]}"))
            handle = type(server)(server.backend, live.url, settings, db, app, organisation_id)
            made[server.backend] = S3Server(handle, live, s3_client(moto_endpoint), bucket)
        return made[server.backend]

    yield on_database_of
    for s3_server in made.values():
        s3_server.live.stop()


@dataclass
class Blobs:
    """A live server (`server`: database access, tokens) and a look at its storage."""

    server: Any
    storage: Storage

    @property
    def backend(self) -> BlobBackend:
        backend: BlobBackend = self.server.app.state.blobs
        return backend


@pytest.fixture(params=["local", "s3"])
def blobs(request: pytest.FixtureRequest, server: Any, s3_servers: Any) -> Blobs:
    """The live server with the local folder backend, or its twin on S3 (moto), on the
    database `server` runs on: every test taking it runs four times."""
    if request.param == "local":
        return Blobs(server, LocalStorage(server))
    s3_server = s3_servers(server)
    return Blobs(s3_server.handle, S3Storage(s3_server.handle, s3_server.s3, s3_server.bucket))


# ------------------------------------------------------------------------ devices


@dataclass
class Device:
    """A device of a fresh clinic on a live server."""

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
def make_device() -> Iterator[Callable[[Any, str | None], Device]]:
    """Makes devices on a server, each in a fresh clinic unless one is given."""
    made: list[Device] = []

    def make(server: Any, clinic_id: str | None = None) -> Device:
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
def new_device(blobs: Blobs, make_device: Any) -> Callable[..., Device]:
    """Makes devices on the `blobs` server."""
    return lambda clinic_id=None: make_device(blobs.server, clinic_id)


@pytest.fixture
def device(new_device: Callable[..., Device]) -> Device:
    return new_device()


@pytest.fixture
def local_device(server: Any, make_device: Any) -> Device:
    """A device on the local-backend server, for what does not depend on the backend."""
    return make_device(server)


@pytest.fixture
def store_factory(tmp_path: Path) -> Callable[[str], EncryptedFileBlobStore]:
    def make(name: str) -> EncryptedFileBlobStore:
        return EncryptedFileBlobStore(tmp_path / name, os.urandom(32))

    return make


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


def stored_bytes(blobs: Blobs, clinic_id: str, sha256: str) -> bytes:
    return b"".join(blobs.backend.open(clinic_id, sha256))


# ------------------------------------------------------------------------ round trips


def test_upload_and_download_round_trip(
    blobs: Blobs, new_device: Callable[..., Device], store_factory: Any
) -> None:
    server, storage = blobs.server, blobs.storage
    uploader = new_device()
    source = store_factory("source")
    data = os.urandom(3 * storage.part + 17)
    ref = source.put_bytes(data)
    declared = uploader.declare(ref.sha256, len(data)).json()
    assert declared["min_chunk_size"] == blobs.backend.min_part_size
    assert declared["chunk_size"] >= blobs.backend.min_part_size
    seen: list[tuple[int, int]] = []

    sent = upload_blob(
        uploader.sync,
        source,
        ref.sha256,
        chunk_size=storage.part,
        progress=lambda d, t: seen.append((d, t)),
    )

    assert sent == len(data)
    assert seen[-1] == (len(data), len(data))
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    row = blob_row(server, uploader.clinic_id, ref.sha256)
    assert row is not None and row.size == len(data) and row.uploaded_by == uploader.device_id
    assert upload_rows(server, uploader.clinic_id) == 0
    [event] = audit_events(server, uploader.clinic_id, "blob-upload")
    assert (event.target, event.outcome, event.actor_id) == (ref.sha256, "ok", uploader.device_id)
    # In storage: the blob at its final key, nothing of the upload left over.
    assert stored_bytes(blobs, uploader.clinic_id, ref.sha256) == data
    assert blobs.backend.size(uploader.clinic_id, ref.sha256) == len(data)
    assert storage.traces(declared["upload_id"]) == []

    # A second upload of the same blob sends nothing.
    assert upload_blob(uploader.sync, source, ref.sha256) == 0

    # Another device of the clinic downloads it into its own store.
    reader = new_device(uploader.clinic_id)
    target = store_factory("target")
    download_blob(reader.sync, target, ref.sha256, len(data))
    assert target.read_bytes(ref.sha256) == data
    [event] = audit_events(server, uploader.clinic_id, "blob-download")
    assert (event.target, event.actor_id) == (ref.sha256, reader.device_id)
    # A device of another clinic does not see it.
    assert new_device().http.get(f"/v1/blobs/{ref.sha256}").status_code == 404


def test_local_blob_files_are_owner_only(
    server: Any, local_device: Device, store_factory: Any
) -> None:
    source = store_factory("source")
    data = os.urandom(MiB + 5)
    ref = source.put_bytes(data)
    assert upload_blob(local_device.sync, source, ref.sha256, chunk_size=MiB) == len(data)
    backend = LocalStorage(server).backend
    path = backend.blob_path(local_device.clinic_id, ref.sha256)
    assert path.read_bytes() == data
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.parent.parent.stat().st_mode) == 0o700


def test_empty_blob_round_trip(blobs: Blobs, device: Device, store_factory: Any) -> None:
    source, target = store_factory("source"), store_factory("target")
    ref = source.put_bytes(b"")
    assert upload_blob(device.sync, source, ref.sha256) == 0
    assert blob_row(blobs.server, device.clinic_id, ref.sha256) is not None
    download_blob(device.sync, target, ref.sha256, 0)
    assert target.read_bytes(ref.sha256) == b""


def test_interrupted_upload_resumes_from_server_offset(
    blobs: Blobs, new_device: Callable[..., Device], store_factory: Any
) -> None:
    # 100 MiB on the local backend (about 3 s per database on loopback); 40 MiB on
    # moto, which holds every part in memory.
    server, storage = blobs.server, blobs.storage
    size = storage.big
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
    assert storage.received(upload_id) == 3 * chunk

    counting = CountingHttp(device.sync)
    resumed = upload_blob(counting, source, ref.sha256, chunk_size=chunk)

    assert resumed == counting.patch_bytes == size - 3 * chunk
    row = blob_row(server, device.clinic_id, ref.sha256)
    assert row is not None and row.size == size
    assert blobs.backend.size(device.clinic_id, ref.sha256) == size
    assert upload_rows(server, device.clinic_id) == 0
    assert storage.traces(upload_id) == []

    # Download it back; the connection drops twice mid-body and Range resumes it.
    cut = size * 3 // 10
    target = store_factory("target")
    cutting = CuttingHttp(device.sync, cut_after=cut, cuts=2)
    download_blob(cutting, target, ref.sha256, size)
    assert cutting.range_headers == [None, f"bytes={cut}-", f"bytes={2 * cut}-"]
    assert target.size(ref.sha256) == size
    assert stored_sha(target, ref.sha256) == ref.sha256


def test_lost_patch_response_is_resynchronised(
    blobs: Blobs, device: Device, store_factory: Any
) -> None:
    part = blobs.storage.part
    source = store_factory("source")
    data = os.urandom(5 * part + 3)
    ref = source.put_bytes(data)
    lossy = CountingHttp(device.sync, lose_response_of_patch=2)
    with pytest.raises(httpx.ReadError):
        upload_blob(lossy, source, ref.sha256, chunk_size=part)
    # The server took the second chunk although the device never heard back.
    upload_id = device.declare(ref.sha256, len(data)).json()["upload_id"]
    assert device.offset(upload_id) == 2 * part

    # A retry that resends the chunk the server already has gets 409 and realigns.
    class ResendFirst(CountingHttp):
        def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
            if method == "PATCH" and self.patches == 0:
                resent = data[part : 2 * part]
                checksum = base64.b64encode(hashlib.sha256(resent).digest()).decode()
                kwargs["headers"] = {
                    **kwargs["headers"],
                    "Upload-Offset": str(part),
                    "Upload-Checksum": f"sha256 {checksum}",
                }
                kwargs["content"] = resent
            return super().request(method, path, **kwargs)

    resend = ResendFirst(device.sync)
    upload_blob(resend, source, ref.sha256, chunk_size=part)
    assert resend.patch_bytes == part + (len(data) - 2 * part)  # the 409'd chunk, then the rest
    row = blob_row(blobs.server, device.clinic_id, ref.sha256)
    assert row is not None and row.size == len(data)


# ------------------------------------------------------------------------ bad input


def test_wrong_hash_stores_nothing(blobs: Blobs, device: Device) -> None:
    server, storage = blobs.server, blobs.storage
    data = os.urandom(storage.part + 4096)
    claimed = sha(b"something else entirely")
    upload = device.declare(claimed, len(data))
    assert upload.status_code == 201
    upload_id = upload.json()["upload_id"]
    assert storage.traces(upload_id) != []  # the upload's storage is ready

    first = device.patch(upload_id, 0, data[: storage.part])
    assert first.status_code == 200 and first.json()["offset"] == storage.part
    answer = device.patch(upload_id, storage.part, data[storage.part :])

    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == "hash_mismatch"
    assert blob_row(server, device.clinic_id, claimed) is None
    assert blob_row(server, device.clinic_id, sha(data)) is None
    assert upload_rows(server, device.clinic_id) == 0
    assert not blobs.backend.exists(device.clinic_id, claimed)
    assert storage.traces(upload_id, device.clinic_id, claimed) == []
    assert audit_events(server, device.clinic_id, "blob-upload") == []
    assert device.http.get(f"/v1/blobs/uploads/{upload_id}").status_code == 404
    assert device.http.get(f"/v1/blobs/{claimed}").status_code == 404


def test_wrong_offset_is_409_with_the_server_offset(blobs: Blobs, device: Device) -> None:
    part = blobs.storage.part
    data = os.urandom(part + 2000)
    upload_id = device.declare(sha(data), len(data)).json()["upload_id"]
    ahead = device.patch(upload_id, 500, data[500:part])
    assert ahead.status_code == 409
    assert ahead.json()["offset"] == 0
    assert ahead.json()["error"]["code"] == "offset_mismatch"
    assert ahead.headers["Upload-Offset"] == "0"

    assert device.patch(upload_id, 0, data[:part]).status_code == 200
    again = device.patch(upload_id, 0, data[:part])  # a retry of a chunk already taken
    assert again.status_code == 409
    assert again.json()["offset"] == part
    assert device.offset(upload_id) == part
    done = device.patch(upload_id, part, data[part:])
    assert done.status_code == 200 and done.json()["complete"] is True


def test_oversize_chunk_is_413_and_writes_nothing(blobs: Blobs, device: Device) -> None:
    limit = blobs.server.settings.max_blob_chunk
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
    assert blobs.storage.received(upload_id) == 0


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
def test_garbage_upload_declarations_are_422(local_device: Device, body: dict[str, Any]) -> None:
    answer = local_device.http.post("/v1/blobs/uploads", json=body)
    assert answer.status_code == 422
    assert answer.json()["error"]["code"] == "invalid_request"


def test_garbage_paths_are_4xx(local_device: Device, server: Any) -> None:
    device = local_device
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


def test_connection_cut_mid_chunk_writes_nothing(blobs: Blobs, device: Device) -> None:
    data = os.urandom(blobs.storage.part)
    upload_id = device.declare(sha(data + b"tail"), len(data) + 4).json()["upload_id"]
    url = urlsplit(blobs.server.url)
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
    assert blobs.storage.received(upload_id) == 0
    assert device.patch(upload_id, 0, data).json()["offset"] == len(data)


def test_concurrent_chunks_at_one_offset_one_wins(blobs: Blobs, device: Device) -> None:
    part = blobs.storage.part
    data = os.urandom(2 * part)
    upload_id = device.declare(sha(data), len(data)).json()["upload_id"]
    barrier = threading.Barrier(4)
    statuses: list[int] = []
    lock = threading.Lock()

    def send() -> None:
        with blobs.server.http(device.token) as client:
            barrier.wait()
            answer = client.patch(
                f"/v1/blobs/uploads/{upload_id}",
                content=data[:part],
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
    assert device.offset(upload_id) == part
    assert blobs.storage.received(upload_id) == part


def test_declaring_again_resumes_the_same_upload(blobs: Blobs, device: Device) -> None:
    part = blobs.storage.part
    data = os.urandom(part + 600)
    first = device.declare(sha(data), len(data))
    assert first.status_code == 201
    assert first.json()["offset"] == 0 and first.json()["complete"] is False
    upload_id = first.json()["upload_id"]
    device.patch(upload_id, 0, data[:part])
    second = device.declare(sha(data), len(data))
    assert second.status_code == 200
    assert (second.json()["upload_id"], second.json()["offset"]) == (upload_id, part)

    # The same hash declared with another size replaces the upload.
    other = device.declare(sha(data), len(data) + 1)
    assert other.status_code == 201 and other.json()["upload_id"] != upload_id
    assert device.http.get(f"/v1/blobs/uploads/{upload_id}").status_code == 404
    assert blobs.storage.traces(upload_id) == []


def test_delete_upload_discards_it(blobs: Blobs, device: Device) -> None:
    part = blobs.storage.part
    data = os.urandom(part + 1000)
    upload_id = device.declare(sha(data), len(data)).json()["upload_id"]
    device.patch(upload_id, 0, data[:part])
    assert blobs.storage.received(upload_id) == part
    assert device.http.delete(f"/v1/blobs/uploads/{upload_id}").status_code == 204
    assert device.http.get(f"/v1/blobs/uploads/{upload_id}").status_code == 404
    assert blobs.storage.traces(upload_id) == []
    assert upload_rows(blobs.server, device.clinic_id) == 0


def test_lost_upload_data_asks_for_a_restart(blobs: Blobs, device: Device) -> None:
    part = blobs.storage.part
    data = os.urandom(part + 1000)
    upload_id = device.declare(sha(data), len(data)).json()["upload_id"]
    assert device.patch(upload_id, 0, data[:part]).status_code == 200
    blobs.storage.lose(upload_id)
    answer = device.patch(upload_id, part, data[part:])
    assert answer.status_code == 410
    assert answer.json()["error"]["code"] == "upload_lost"
    assert upload_rows(blobs.server, device.clinic_id) == 0
    fresh = device.declare(sha(data), len(data))
    assert fresh.status_code == 201 and fresh.json()["upload_id"] != upload_id


# ------------------------------------------------------------------------ clinics


def test_another_clinic_can_neither_read_nor_probe(
    blobs: Blobs, new_device: Callable[..., Device]
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
    assert audit_events(blobs.server, owner.clinic_id, "blob-download") == []


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


def test_staff_read_their_clinics_blobs(blobs: Blobs, device: Device) -> None:
    server = blobs.server
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


def test_stale_uploads_are_purged(blobs: Blobs, device: Device) -> None:
    server, storage = blobs.server, blobs.storage
    data = os.urandom(storage.part + 100)
    upload_id = device.declare(sha(data), len(data)).json()["upload_id"]
    device.patch(upload_id, 0, data[: storage.part])
    assert storage.received(upload_id) == storage.part
    # Fresh uploads stay.
    purge_stale_uploads(database=server.db, backend=blobs.backend, older_than=timedelta(hours=1))
    assert device.offset(upload_id) == storage.part
    with server.db.write() as session:
        session.get(Upload, upload_id).updated_at = datetime.now(UTC) - timedelta(days=8)
    stale = purge_stale_uploads(
        database=server.db, backend=blobs.backend, older_than=timedelta(days=7)
    )
    assert stale == 1
    assert device.http.get(f"/v1/blobs/uploads/{upload_id}").status_code == 404
    assert storage.traces(upload_id) == []
    assert device.declare(sha(data), len(data)).status_code == 201


def test_download_refuses_corrupt_server_bytes(
    blobs: Blobs, device: Device, store_factory: Any
) -> None:
    data = os.urandom(2 * MiB)
    digest = device.put(data)
    # A size that is not the server's is refused before anything is stored.
    target = store_factory("target")
    with pytest.raises(BlobCorruptError):
        download_blob(device.sync, target, digest, len(data) + 1)
    assert list(target.list()) == []
    with pytest.raises(BlobNotFoundError):
        download_blob(device.sync, target, sha(b"never uploaded"), 10)

    # Stored bytes of the right size and another hash: the server finds out as it
    # sends them, keeps the last chunk back, breaks off and marks the blob missing.
    tampered = bytearray(data)
    tampered[MiB + 7] ^= 0xFF
    blobs.storage.replace(device.clinic_id, digest, bytes(tampered))
    with pytest.raises(LostOnServerError):
        download_blob(device.sync, target, digest, len(data))
    assert not target.exists(digest)
    assert list(target.list()) == []
    row = blob_row(blobs.server, device.clinic_id, digest)
    assert row is not None and row.missing_reason == "hash_mismatch"


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


# ------------------------------------------------------------------------ S3 only


def test_bucket_is_created_and_backend_ready(
    server: Any, s3_servers: Any, moto_endpoint: str, tmp_path: Path
) -> None:
    s3_server = s3_servers(server)
    backend = s3_server.handle.app.state.blobs
    assert isinstance(backend, S3BlobBackend)
    assert backend.bucket == s3_server.bucket
    s3_server.s3.head_bucket(Bucket=s3_server.bucket)  # created by make_blob_backend
    backend.check()

    # A second worker on the same bucket finds it and does not fail.
    again = make_blob_backend(s3_settings(tmp_path / "other", moto_endpoint, s3_server.bucket))
    again.check()

    with pytest.raises(ValueError, match="5242880"):
        make_blob_backend(
            s3_settings(tmp_path / "x", moto_endpoint, s3_server.bucket, max_blob_chunk=MiB)
        )

    # Readiness fails when the storage is unreachable.
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        dead_port = unused.getsockname()[1]
    dead = s3_client(
        f"http://127.0.0.1:{dead_port}", retries={"max_attempts": 1}, connect_timeout=2
    )
    with pytest.raises(BlobBackendError):
        S3BlobBackend(dead, "no-bucket").check()


def test_small_non_final_chunk_is_400(server: Any, s3_servers: Any, make_device: Any) -> None:
    device = make_device(s3_servers(server).handle)
    data = os.urandom(6 * MiB)
    upload_id = device.declare(sha(data), len(data)).json()["upload_id"]
    answer = device.patch(upload_id, 0, data[:MiB])
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == "chunk_too_small"
    assert "5 MiB" in error["message"] and str(S3_MIN_PART_SIZE) in error["message"]
    assert device.offset(upload_id) == 0
    # The last chunk may be small.
    assert device.patch(upload_id, 0, data[: 5 * MiB]).status_code == 200
    done = device.patch(upload_id, 5 * MiB, data[5 * MiB :])
    assert done.status_code == 200 and done.json()["complete"] is True


# ------------------------------------------------------------------------ local only


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


# ------------------------------------------------------------------------ lost blobs


def missing_list(device: Device) -> list[str]:
    answer = device.http.get("/v1/blobs/missing")
    assert answer.status_code == 200, answer.text
    return list(answer.json()["sha256"])


def test_a_lost_blob_is_gone_listed_and_taken_again(
    blobs: Blobs, new_device: Callable[..., Device], store_factory: Any
) -> None:
    uploader = new_device()
    kept, lost = os.urandom(MiB + 3), os.urandom(2 * MiB + 11)
    kept_sha, lost_sha = uploader.put(kept), uploader.put(lost)
    assert missing_list(uploader) == []
    blobs.storage.delete(uploader.clinic_id, lost_sha)

    answer = uploader.http.get(f"/v1/blobs/{lost_sha}")
    assert answer.status_code == 410
    assert answer.json()["error"]["code"] == "blob_missing"
    assert uploader.http.head(f"/v1/blobs/{lost_sha}").status_code == 410
    row = blob_row(blobs.server, uploader.clinic_id, lost_sha)
    assert row is not None and row.missing_since is not None and row.missing_reason == "absent"
    # The other blob is untouched; another clinic sees nothing of the loss.
    assert uploader.http.get(f"/v1/blobs/{kept_sha}").content == kept
    assert missing_list(uploader) == [lost_sha]
    assert missing_list(new_device()) == []
    with pytest.raises(LostOnServerError):
        download_blob(uploader.sync, store_factory("target"), lost_sha, len(lost))

    # Declared again, it is a new upload (not "already stored"), and once complete
    # every device of the clinic can read it.
    source = store_factory("source")
    source.put_bytes(lost)
    assert uploader.declare(lost_sha, len(lost)).status_code == 201
    assert upload_blob(uploader.sync, source, lost_sha, chunk_size=blobs.storage.part) == len(lost)
    row = blob_row(blobs.server, uploader.clinic_id, lost_sha)
    assert row is not None and row.missing_since is None and row.missing_reason is None
    assert missing_list(uploader) == []
    reader = new_device(uploader.clinic_id)
    target = store_factory("reader")
    download_blob(reader.sync, target, lost_sha, len(lost))
    assert target.read_bytes(lost_sha) == lost


def test_missing_list_pages_and_refuses_garbage(
    local_device: Device, server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    shas = sorted(local_device.put(os.urandom(64)) for _ in range(3))
    backend = LocalStorage(server).backend
    for digest in shas:
        backend.blob_path(local_device.clinic_id, digest).unlink()
        assert local_device.http.head(f"/v1/blobs/{digest}").status_code == 410
    first = local_device.http.get("/v1/blobs/missing", params={"limit": 2}).json()
    assert first == {"sha256": shas[:2], "next_after": shas[1]}
    rest = local_device.http.get(
        "/v1/blobs/missing", params={"limit": 2, "after": first["next_after"]}
    ).json()
    assert rest == {"sha256": shas[2:], "next_after": None}
    # The device side reads every page.
    monkeypatch.setattr(http_blobs, "_MISSING_PAGE", 2)
    assert http_blobs.HttpBlobs(local_device.sync).missing_blobs() == shas
    for params in ({"limit": 0}, {"limit": 5000}, {"after": "not-a-hash"}):
        answer = local_device.http.get("/v1/blobs/missing", params=params)
        assert answer.status_code == 422, answer.text
        assert "error" in answer.json()
    with server.http() as anonymous:
        assert anonymous.get("/v1/blobs/missing").status_code == 401


def run_check(blobs: Blobs, clinic_id: str, *extra: str) -> tuple[int, dict[str, Any]]:
    """``coherency server blobs check --json --clinic`` on the `blobs` server's settings."""
    code, output = invoke_check(blobs, clinic_id, "--json", *extra)
    return code, json.loads(output)


def check_output(blobs: Blobs, clinic_id: str) -> str:
    """What ``coherency server blobs check --clinic`` prints for people."""
    return invoke_check(blobs, clinic_id)[1]


def invoke_check(blobs: Blobs, clinic_id: str, *extra: str) -> tuple[int, str]:
    settings = blobs.server.settings
    args = [
        "server",
        "blobs",
        "check",
        "--clinic",
        clinic_id,
        "--data-dir",
        str(settings.data_dir),
        "--blob-backend",
        settings.blob_backend,
    ]
    if settings.database_url:
        args += ["--database-url", settings.database_url]
    env = {"COHERENCY_SERVER_BLOB_DIR": str(settings.resolved_blob_dir)}
    if settings.blob_backend == "s3":
        args += ["--s3-endpoint-url", settings.s3_endpoint_url, "--s3-bucket", settings.s3_bucket]
        env |= {
            "COHERENCY_SERVER_S3_ACCESS_KEY_ID": FAKE_KEY_ID,
            "COHERENCY_SERVER_S3_SECRET_ACCESS_KEY": FAKE_SECRET,
            "COHERENCY_SERVER_S3_REGION": "us-east-1",
        }
    result = CliRunner().invoke(cli, [*args, *extra], env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.stdout


def test_blobs_check_finds_and_marks_lost_and_corrupt_blobs(
    blobs: Blobs, device: Device, store_factory: Any
) -> None:
    whole, gone, bad = (os.urandom(MiB + n) for n in (1, 2, 3))
    whole_sha, gone_sha, bad_sha = device.put(whole), device.put(gone), device.put(bad)
    assert run_check(blobs, device.clinic_id) == (
        0,
        {"ok": True, "checked": 3, "hashed": True, "problems": [], "restored": []},
    )

    blobs.storage.delete(device.clinic_id, gone_sha)
    tampered = bytearray(bad)
    tampered[5] ^= 1
    blobs.storage.replace(device.clinic_id, bad_sha, bytes(tampered))
    # Sizes alone see the lost blob only.
    code, quick = run_check(blobs, device.clinic_id, "--size-only")
    assert code == 6
    assert [(p["sha256"], p["reason"]) for p in quick["problems"]] == [(gone_sha, "absent")]

    code, report = run_check(blobs, device.clinic_id)
    assert code == 6 and report["ok"] is False and report["checked"] == 3
    human = check_output(blobs, device.clinic_id)
    assert f"absent: clinic {device.clinic_id} blob {gone_sha} (no assessment)" in human
    assert f"hash_mismatch: clinic {device.clinic_id} blob {bad_sha}" in human
    assert "checked 3 blobs (sizes and SHA-256): 2 missing or damaged" in human
    found = {p["sha256"]: (p["reason"], p["newly_marked"]) for p in report["problems"]}
    assert found == {gone_sha: ("absent", False), bad_sha: ("hash_mismatch", True)}
    assert sorted(missing_list(device)) == sorted([gone_sha, bad_sha])
    assert device.http.get(f"/v1/blobs/{bad_sha}").status_code == 410
    assert device.http.get(f"/v1/blobs/{whole_sha}").content == whole

    # The device that holds them uploads them again; a blob restored behind the
    # server's back (from a backup) is cleared by the next check.
    source = store_factory("source")
    source.put_bytes(gone)
    upload_blob(device.sync, source, gone_sha, chunk_size=blobs.storage.part)
    blobs.storage.replace(device.clinic_id, bad_sha, bad)
    code, report = run_check(blobs, device.clinic_id)
    assert (code, report["problems"], report["restored"]) == (0, [], [bad_sha])
    assert missing_list(device) == []


def test_blobs_check_refuses_unknown_clinic(server: Any) -> None:
    settings = server.settings
    args = ["server", "blobs", "check", "--clinic", "no-such-clinic"]
    args += ["--data-dir", str(settings.data_dir)]
    if settings.database_url:
        args += ["--database-url", settings.database_url]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 4, result.output
    assert "no clinic no-such-clinic" in result.output
    assert "Traceback" not in result.output


def enrolled_tablet(blobs: Blobs, clinic_id: str, folder: Path, name: str) -> EdgeClient:
    client = EdgeClient.init(
        folder / name,
        PassphraseKeyProvider("pass phrase", params=Argon2Params.fast()),
        clinic_id=clinic_id,
    )
    with blobs.server.db.write() as session:
        token, _ = create_enrolment_token(
            session=session, clinic_id=clinic_id, ttl=timedelta(minutes=10)
        )
    client.enroll(blobs.server.url, token, name=name)
    return client


def test_devices_sync_through_a_lost_blob_and_the_holder_uploads_it_again(
    blobs: Blobs, tmp_path: Path
) -> None:
    clinic_id = blobs.server.new_clinic()
    scanner = enrolled_tablet(blobs, clinic_id, tmp_path, "scanner")
    reader = enrolled_tablet(blobs, clinic_id, tmp_path, "reader")
    late = enrolled_tablet(blobs, clinic_id, tmp_path, "late")
    try:
        patient = scanner.patients.add(
            given_name="Ada", family_name="Lost", birth_date=datetime(1950, 1, 2).date()
        )
        wound = scanner.wounds.add(
            patient_id=patient.id, body_site="left heel", etiology="pressure"
        )
        kept, lost = os.urandom(300_000), os.urandom(200_000)
        refs = [scanner.blobs.put_bytes(kept), scanner.blobs.put_bytes(lost)]
        assessment = scanner.assessments.add(
            wound_id=wound.id,
            patient_id=patient.id,
            captured_at="2026-11-21T10:15:00+00:00",
            device_id=scanner.device_id,
            measurements={"area_cm2": 4.8},
            blobs=[
                {"sha256": r.sha256, "size": r.size, "kind": "scan", "media_type": "image/png"}
                for r in refs
            ],
        )
        kept_sha, lost_sha = refs[0].sha256, refs[1].sha256
        first = scanner.sync()
        assert sorted(first.blobs_uploaded) == sorted([kept_sha, lost_sha])
        assert run_check(blobs, clinic_id)[0] == 0

        # The storage loses one blob: the reader still gets every record and the
        # other blob; the lost one is listed per blob, not as a failure.
        blobs.storage.delete(clinic_id, lost_sha)
        result = reader.sync()
        assert assessment.id in result.pulled
        assert result.blobs_downloaded == [kept_sha]
        assert result.blobs_missing == [lost_sha]
        assert result.blob_errors == []
        assert reader.blobs.read_bytes(kept_sha) == kept
        assert not reader.blobs.exists(lost_sha)

        code, report = run_check(blobs, clinic_id)
        assert code == 6
        [problem] = report["problems"]
        assert (problem["sha256"], problem["reason"]) == (lost_sha, "absent")
        assert problem["assessments"] == [assessment.id]
        # A device that syncs now learns of the loss from the list, asks for nothing.
        result = late.sync()
        assert (result.blobs_downloaded, result.blobs_missing) == ([kept_sha], [lost_sha])

        # The device that holds it uploads it again at its next sync...
        again = scanner.sync()
        assert again.blobs_uploaded == [lost_sha]
        assert (again.blobs_missing, again.blob_errors) == ([], [])
        assert run_check(blobs, clinic_id) == (
            0,
            {"ok": True, "checked": 2, "hashed": True, "problems": [], "restored": []},
        )
        # ...and every other device downloads it.
        for device in (reader, late):
            result = device.sync()
            assert (result.blobs_downloaded, result.blobs_missing) == ([lost_sha], [])
            assert device.blobs.read_bytes(lost_sha) == lost
        assert scanner.sync().blobs_uploaded == []
    finally:
        for client in (scanner, reader, late):
            client.close()
