"""Blob quotas: one device (or clinic) cannot reserve or fill the server's storage.

Open uploads, bytes declared in open uploads and bytes held (stored and open) are
counted per device and per clinic when an upload is declared, under the clinic's row
lock, so concurrent declarations cannot both take the last byte. Every body on SQLite
and PostgreSQL."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

GIB = 1024**3


def declare(http: httpx.Client, data_or_size: bytes | int, *, seed: int = 0) -> httpx.Response:
    if isinstance(data_or_size, bytes):
        sha, size = hashlib.sha256(data_or_size).hexdigest(), len(data_or_size)
    else:
        sha, size = hashlib.sha256(f"{seed}".encode()).hexdigest(), data_or_size
    return http.post("/v1/blobs/uploads", json={"sha256": sha, "size": size})


def send_all(http: httpx.Client, data: bytes) -> None:
    state = declare(http, data).json()
    answer = http.patch(
        f"/v1/blobs/uploads/{state['upload_id']}",
        content=data,
        headers={"Upload-Offset": "0", "content-type": "application/offset+octet-stream"},
    )
    assert answer.status_code == 200 and answer.json()["complete"], answer.text


def test_a_device_cannot_declare_hundreds_of_two_gib_uploads(server: Any) -> None:
    _, token = server.device_token(server.new_clinic())
    codes = []
    with server.http(token) as http:
        for n in range(20):
            codes.append(declare(http, 2 * GIB, seed=n).status_code)
        refused = declare(http, 2 * GIB, seed=99).json()["error"]
    # 8 GiB of declared bytes per device by default: four 2 GiB uploads, then refusals.
    assert codes[:4] == [201] * 4 and set(codes[4:]) == {403}
    assert refused["code"] == "quota_exceeded"
    assert "bytes this device has declared in open uploads" in refused["message"]


def test_open_uploads_are_capped_and_abandoning_one_frees_its_place(
    server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server.settings, "blob_quota_device_open_uploads", 3)
    _, token = server.device_token(server.new_clinic())
    with server.http(token) as http:
        states = [declare(http, 1000, seed=n).json() for n in range(3)]
        assert declare(http, 1000, seed=3).status_code == 403
        # Declaring one of the open blobs again resumes it: not a new upload.
        assert declare(http, 1000, seed=0).status_code == 200
        assert http.delete(f"/v1/blobs/uploads/{states[0]['upload_id']}").status_code == 204
        assert declare(http, 1000, seed=3).status_code == 201


def test_the_clinic_quota_binds_every_device_of_the_clinic_and_no_other(
    server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server.settings, "blob_quota_clinic_bytes", 3000)
    clinic, elsewhere = server.new_clinic(), server.new_clinic()
    _, first = server.device_token(clinic)
    _, second = server.device_token(clinic)
    _, other = server.device_token(elsewhere)
    with server.http(first) as a, server.http(second) as b, server.http(other) as c:
        send_all(a, os.urandom(2000))  # stored: counts for the clinic
        assert declare(b, 1001, seed=1).status_code == 403
        assert declare(b, 1000, seed=2).status_code == 201  # exactly at the quota
        assert declare(c, 2500, seed=3).status_code == 201  # another clinic's budget


def test_concurrent_declarations_never_exceed_the_quota(
    server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server.settings, "blob_quota_clinic_pending_bytes", 10_000)
    clinic = server.new_clinic()
    tokens = [server.device_token(clinic)[1] for _ in range(20)]

    def one(n: int) -> int:
        with server.http(tokens[n]) as http:
            return declare(http, 1000, seed=1000 + n).status_code

    with ThreadPoolExecutor(max_workers=20) as pool:
        codes = list(pool.map(one, range(20)))
    assert codes.count(201) == 10 and codes.count(403) == 10
