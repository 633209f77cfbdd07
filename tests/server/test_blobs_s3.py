"""Blobs on the S3-compatible backend, against moto's S3 server on loopback.

A live sync server (SQLite; the database does not matter here) stores blobs in a
bucket on a moto server running in this process. Credentials are fake and come from
the server's settings, never from the environment.
"""

from __future__ import annotations

import hashlib
import io
import os
import socket
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from fastapi import FastAPI
from moto.server import ThreadedMotoServer

from edge_sdk._blob_transfer import download_blob, upload_blob
from edge_sdk._blobs import EncryptedFileBlobStore
from sync_server import Settings, ThreadedServer, create_app, migrate
from sync_server.blobs.backends import BlobBackendError, S3BlobBackend, make_blob_backend
from sync_server.blobs.backends.s3 import S3_MIN_PART_SIZE
from sync_server.blobs.tables import Blob, Upload
from sync_server.db import Database
from sync_server.identity.tables import Clinic, Device, Organisation

MiB = 1024 * 1024
OCTETS = {"content-type": "application/octet-stream"}
FAKE_KEY_ID = "testing-key-id"
FAKE_SECRET = "testing-secret"


class HttpxSync:
    """A plain `SyncHttp`: httpx with a bearer token, no retries."""

    def __init__(self, base_url: str, token: str) -> None:
        self.client = httpx.Client(
            base_url=base_url, headers={"authorization": f"Bearer {token}"}, timeout=60
        )
        self.patch_bytes = 0

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
        if method == "PATCH":
            self.patch_bytes += len(content or b"")
        request = self.client.build_request(
            method, path, json=json, content=content, headers=headers, params=params
        )
        return self.client.send(request, stream=stream)


@dataclass
class S3Server:
    url: str
    app: FastAPI
    db: Database
    settings: Settings
    organisation_id: str
    s3: Any  # a boto3 client on the same bucket, to look behind the server's back
    bucket: str


@pytest.fixture(scope="module")
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


def s3_client(endpoint: str) -> Any:
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=FAKE_KEY_ID,
        aws_secret_access_key=FAKE_SECRET,
        config=Config(s3={"addressing_style": "path"}),
    )


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory, moto_endpoint: str) -> Iterator[S3Server]:
    """A live sync server whose blobs live in a fresh bucket on the moto server."""
    bucket = f"coherency-test-{uuid.uuid4().hex[:12]}"
    settings = s3_settings(tmp_path_factory.mktemp("server-s3"), moto_endpoint, bucket)
    migrate(settings)
    app = create_app(settings)
    live = ThreadedServer(app)
    live.start()
    db: Database = app.state.db
    organisation_id = str(uuid.uuid4())
    with db.write() as session:
        session.add(Organisation(id=organisation_id, name=f"org-{organisation_id[:8]}"))
    try:
        yield S3Server(
            live.url, app, db, settings, organisation_id, s3_client(moto_endpoint), bucket
        )
    finally:
        live.stop()


@dataclass
class S3Device:
    clinic_id: str
    device_id: str
    http: httpx.Client
    sync: HttpxSync

    def declare(self, sha256: str, size: int) -> httpx.Response:
        return self.http.post("/v1/blobs/uploads", json={"sha256": sha256, "size": size})

    def patch(self, upload_id: str, offset: int, data: bytes) -> httpx.Response:
        return self.http.patch(
            f"/v1/blobs/uploads/{upload_id}",
            content=data,
            headers={**OCTETS, "Upload-Offset": str(offset)},
        )

    def offset(self, upload_id: str) -> int:
        return int(self.http.get(f"/v1/blobs/uploads/{upload_id}").json()["offset"])


@pytest.fixture
def new_device(s3_server: S3Server) -> Iterator[Any]:
    """Makes devices, each in a fresh clinic unless one is given."""
    made: list[S3Device] = []

    def make(clinic_id: str | None = None) -> S3Device:
        if clinic_id is None:
            clinic_id = str(uuid.uuid4())
            with s3_server.db.write() as session:
                session.add(
                    Clinic(
                        id=clinic_id,
                        organisation_id=s3_server.organisation_id,
                        name=f"clinic-{clinic_id[:8]}",
                        feed_seq=0,
                    )
                )
        device_id = str(uuid.uuid4())
        public_key = (
            Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        )
        with s3_server.db.write() as session:
            session.add(Device(id=device_id, clinic_id=clinic_id, public_key=public_key))
        token, _ = s3_server.app.state.signing_key.issue_access_token(
            subject=device_id,
            kind="device",
            clinic_id=clinic_id,
            organisation_id=s3_server.organisation_id,
            role="device",
            ttl=timedelta(minutes=15),
        )
        device = S3Device(
            clinic_id,
            device_id,
            httpx.Client(
                base_url=s3_server.url, headers={"authorization": f"Bearer {token}"}, timeout=60
            ),
            HttpxSync(s3_server.url, token),
        )
        made.append(device)
        return device

    yield make
    for device in made:
        device.http.close()
        device.sync.client.close()


@pytest.fixture
def store(tmp_path: Path) -> Any:
    def make(name: str) -> EncryptedFileBlobStore:
        return EncryptedFileBlobStore(tmp_path / name, os.urandom(32))

    return make


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def object_keys(s3_server: S3Server) -> set[str]:
    answer = s3_server.s3.list_objects_v2(Bucket=s3_server.bucket)
    return {item["Key"] for item in answer.get("Contents", [])}


def multipart_uploads(s3_server: S3Server) -> list[Any]:
    answer = s3_server.s3.list_multipart_uploads(Bucket=s3_server.bucket)
    return list(answer.get("Uploads", []))


def blob_row(s3_server: S3Server, clinic_id: str, sha256: str) -> Blob | None:
    with s3_server.db.read() as session:
        return session.get(Blob, (clinic_id, sha256))


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


# ------------------------------------------------------------------------ tests


def test_bucket_is_created_and_backend_ready(s3_server: S3Server, tmp_path: Path) -> None:
    backend = s3_server.app.state.blobs
    assert isinstance(backend, S3BlobBackend)
    assert backend.bucket == s3_server.bucket
    s3_server.s3.head_bucket(Bucket=s3_server.bucket)  # created by make_blob_backend
    backend.check()

    # A second worker on the same bucket finds it and does not fail.
    endpoint = s3_server.settings.s3_endpoint_url
    assert endpoint is not None
    again = make_blob_backend(s3_settings(tmp_path / "other", endpoint, s3_server.bucket))
    again.check()

    with pytest.raises(ValueError, match="5242880"):
        make_blob_backend(
            s3_settings(tmp_path / "x", endpoint, s3_server.bucket, max_blob_chunk=MiB)
        )

    # Readiness fails when the storage is unreachable.
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        dead_port = unused.getsockname()[1]
    dead = boto3.session.Session().client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{dead_port}",
        region_name="us-east-1",
        aws_access_key_id=FAKE_KEY_ID,
        aws_secret_access_key=FAKE_SECRET,
        config=Config(retries={"max_attempts": 1}, connect_timeout=2),
    )
    with pytest.raises(BlobBackendError):
        S3BlobBackend(dead, "no-bucket").check()


def test_round_trip(s3_server: S3Server, new_device: Any, store: Any) -> None:
    device = new_device()
    source, target = store("source"), store("target")
    data = os.urandom(MiB + 5)
    ref = source.put_bytes(data)

    declared = device.declare(ref.sha256, len(data)).json()
    assert declared["min_chunk_size"] == S3_MIN_PART_SIZE
    assert declared["chunk_size"] >= S3_MIN_PART_SIZE
    assert upload_blob(device.sync, source, ref.sha256) == len(data)

    row = blob_row(s3_server, device.clinic_id, ref.sha256)
    assert row is not None and row.size == len(data)
    final_key = f"{device.clinic_id}/{ref.sha256}"
    stored = s3_server.s3.get_object(Bucket=s3_server.bucket, Key=final_key)["Body"].read()
    assert stored == data
    assert not any(key.startswith("_staging/") for key in object_keys(s3_server))
    assert multipart_uploads(s3_server) == []

    download_blob(device.sync, target, ref.sha256, len(data))
    assert target.read_bytes(ref.sha256) == data
    part = device.http.get(f"/v1/blobs/{ref.sha256}", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == data[100:200]
    assert device.http.head(f"/v1/blobs/{ref.sha256}").headers["content-length"] == str(len(data))
    stranger = new_device()
    assert stranger.http.get(f"/v1/blobs/{ref.sha256}").status_code == 404

    empty = source.put_bytes(b"")
    assert upload_blob(device.sync, source, empty.sha256) == 0
    download_blob(device.sync, target, empty.sha256, 0)
    assert target.read_bytes(empty.sha256) == b""


def test_resumable_upload_in_5mib_chunks(s3_server: S3Server, new_device: Any, store: Any) -> None:
    size = 24 * MiB + 123
    chunk = 5 * MiB
    source = store("source")
    ref = source.put_stream(RandomStream(size))
    device = new_device()

    class Interrupted(Exception):
        pass

    def stop_after_two(done: int, total: int) -> None:
        if done >= 2 * chunk:
            raise Interrupted

    with pytest.raises(Interrupted):
        upload_blob(device.sync, source, ref.sha256, chunk_size=chunk, progress=stop_after_two)
    answer = device.declare(ref.sha256, size)
    assert answer.status_code == 200
    assert answer.json()["offset"] == 2 * chunk
    assert len(multipart_uploads(s3_server)) == 1
    assert blob_row(s3_server, device.clinic_id, ref.sha256) is None

    resume = HttpxSync(s3_server.url, device.sync.client.headers["authorization"].split()[1])
    try:
        sent = upload_blob(resume, source, ref.sha256, chunk_size=chunk)
    finally:
        resume.client.close()
    assert sent == resume.patch_bytes == size - 2 * chunk
    with s3_server.db.read() as session:
        assert session.get(Upload, answer.json()["upload_id"]) is None
    assert multipart_uploads(s3_server) == []
    head = s3_server.s3.head_object(Bucket=s3_server.bucket, Key=f"{device.clinic_id}/{ref.sha256}")
    assert head["ContentLength"] == size

    target = store("target")
    download_blob(device.sync, target, ref.sha256, size)
    hasher = hashlib.sha256()
    for piece in target.open(ref.sha256):
        hasher.update(piece)
    assert hasher.hexdigest() == ref.sha256


def test_wrong_hash_leaves_nothing(s3_server: S3Server, new_device: Any) -> None:
    device = new_device()
    data = os.urandom(6 * MiB)
    claimed = sha(b"not these bytes")
    upload_id = device.declare(claimed, len(data)).json()["upload_id"]
    assert device.patch(upload_id, 0, data[: 5 * MiB]).status_code == 200
    answer = device.patch(upload_id, 5 * MiB, data[5 * MiB :])

    assert answer.status_code == 422
    assert answer.json()["error"]["code"] == "hash_mismatch"
    assert blob_row(s3_server, device.clinic_id, claimed) is None
    keys = object_keys(s3_server)
    assert f"{device.clinic_id}/{claimed}" not in keys
    assert f"_staging/{upload_id}" not in keys
    assert multipart_uploads(s3_server) == []
    assert device.http.get(f"/v1/blobs/uploads/{upload_id}").status_code == 404


def test_small_non_final_chunk_is_400(s3_server: S3Server, new_device: Any) -> None:
    device = new_device()
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


def test_lost_multipart_upload_asks_for_a_restart(s3_server: S3Server, new_device: Any) -> None:
    device = new_device()
    data = os.urandom(6 * MiB)
    upload_id = device.declare(sha(data), len(data)).json()["upload_id"]
    assert device.patch(upload_id, 0, data[: 5 * MiB]).status_code == 200
    with s3_server.db.read() as session:
        handle = session.get(Upload, upload_id).backend_ref
    s3_server.s3.abort_multipart_upload(
        Bucket=s3_server.bucket, Key=f"_staging/{upload_id}", UploadId=handle
    )
    answer = device.patch(upload_id, 5 * MiB, data[5 * MiB :])
    assert answer.status_code == 410
    assert answer.json()["error"]["code"] == "upload_lost"
    fresh = device.declare(sha(data), len(data))
    assert fresh.status_code == 201 and fresh.json()["upload_id"] != upload_id
