"""Publishing a wound model on the server and installing it on devices.

A real server (SQLite and PostgreSQL, the `server` fixture), real enrolled device
stores, real Ed25519 keys and tiny real ONNX graphs (a 1x1 convolution, built here as
in tests/test_models_runtime.py). Each test works in an organisation of its own: the
active model is per organisation.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import select

from edge_sdk import (
    Argon2Params,
    EdgeClient,
    HttpTransport,
    ModelOffer,
    ModelVerificationError,
    NotEnrolledError,
    PassphraseKeyProvider,
    artifact_key_statement,
    model_signing_payload,
    sign_manifest,
    verify_signature,
)
from edge_sdk._models import ModelManifest, ModelTensor
from sync_server.audit.tables import AuditEvent
from sync_server.identity.enrolment import create_enrolment_token
from sync_server.identity.tenancy import ensure_clinic, ensure_organisation
from sync_server.identity.users import create_user
from sync_server.keyfiles import load_or_create_ed25519
from sync_server.models.tables import PublishedModel

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

CLASSES = ("background", "granulation", "slough", "necrosis", "epithelium")
C, H, W = 5, 8, 8
# Class k's logit is 4 * channel k + 0.1 * (sum of channels) + bias: an input close to
# one-hot in channel k is labelled k with a wide margin.
WEIGHTS = (4.0 * np.eye(C) + 0.1).astype(np.float32)
BIAS = np.array([0.05, 0.0, -0.02, 0.01, 0.0], dtype=np.float32)


def build_graph(name: str, *, input_name: str = "image") -> bytes:
    """A 1x1 Conv segmentation graph (fixed batch 1); `name` makes the bytes differ."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("Conv", [input_name, "w", "b"], ["conv"]),
        helper.make_node("Identity", ["conv"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [1, C, H, W])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, C, H, W])],
        [
            numpy_helper.from_array(WEIGHTS.reshape(C, C, 1, 1), "w"),
            numpy_helper.from_array(BIAS, "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def make_manifest(model: bytes, version: str, **changes: Any) -> ModelManifest:
    fields: dict[str, Any] = {
        "format": 1,
        "model_id": "wound-seg-test",
        "version": version,
        "file": "wound-seg.onnx",
        "sha256": hashlib.sha256(model).hexdigest(),
        "size": len(model),
        "input": ModelTensor(name="image", shape=(1, C, H, W)),
        "output": ModelTensor(name="logits", shape=(1, C, H, W)),
        "classes": CLASSES,
        "preprocessing": {"output_kind": "logits", "size": H},
        "metrics": {"dice_wound": 0.93},
        "provenance": {"data": "synthetic", "seed": 7},
        "created_at": datetime(2025, 5, 1, 12, 30, tzinfo=UTC),
        "quantization": "fp32",
    }
    fields.update(changes)
    return ModelManifest(**fields)


def label_map(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, C, size=(H, W))


def make_input(labels: np.ndarray) -> np.ndarray:
    noise = np.random.default_rng(0).uniform(0.0, 0.2, size=(C, H, W))
    one_hot = (np.arange(C)[:, None, None] == labels[None]).astype(np.float64)
    return (one_hot + noise).astype(np.float32)


def assert_runs(client: EdgeClient, version: str) -> None:
    """The device's current model is `version` and segments correctly."""
    runner = client.models.runner()
    assert runner.manifest.version == version
    labels = label_map(3)
    assert np.array_equal(runner.segment(make_input(labels)).labels, labels)


def files(manifest: bytes | str, model: bytes | str) -> dict[str, Any]:
    return {
        "manifest": ("manifest.json", manifest, "application/json"),
        "model": ("wound-seg.onnx", model, "application/octet-stream"),
    }


@dataclass
class Org:
    """A fresh organisation with a clinic, an organisation-wide admin and devices."""

    server: Any
    root: Path
    organisation_id: str = ""
    clinic_id: str = ""
    clients: list[EdgeClient] = field(default_factory=list)

    def __post_init__(self) -> None:
        tag = uuid.uuid4().hex[:12]
        with self.server.db.write() as session:
            self.organisation_id = ensure_organisation(session=session, name=f"org-{tag}").id
            self.clinic_id = ensure_clinic(
                session=session, name=f"clinic-{tag}", organisation_id=self.organisation_id
            ).id

    def new_clinic(self) -> str:
        with self.server.db.write() as session:
            return ensure_clinic(
                session=session,
                name=f"clinic-{uuid.uuid4().hex[:12]}",
                organisation_id=self.organisation_id,
            ).id

    def user_token(self, role: str, clinic_id: str | None = None) -> str:
        with self.server.db.write() as session:
            user, _ = create_user(
                session=session,
                username=f"{role}-{uuid.uuid4().hex[:12]}",
                password="correct horse battery staple",
                role=role,
                organisation_id=self.organisation_id,
                clinic_id=clinic_id,
                with_totp=False,
            )
        token, _ = self.server.app.state.signing_key.issue_access_token(
            subject=user.id,
            kind="user",
            clinic_id=user.clinic_id,
            organisation_id=user.organisation_id,
            role=user.role,
            ttl=timedelta(minutes=10),
        )
        return str(token)

    def device_token(self, clinic_id: str | None = None) -> str:
        """An access token of a device registered straight in the database."""
        device_id, _ = self.server.device_token(clinic_id or self.clinic_id)
        token, _ = self.server.app.state.signing_key.issue_access_token(
            subject=device_id,
            kind="device",
            clinic_id=clinic_id or self.clinic_id,
            organisation_id=self.organisation_id,
            role="device",
            ttl=timedelta(minutes=10),
        )
        return str(token)

    def admin(self) -> httpx.Client:
        return self.server.http(self.user_token("admin"))

    def publish(self, model: bytes, version: str, *, expect: int = 201) -> dict[str, Any]:
        manifest = make_manifest(model, version)
        with self.admin() as http:
            response = http.post("/v1/admin/models", files=files(manifest.to_bytes(), model))
        assert response.status_code == expect, response.text
        return dict(response.json())

    def device(self, name: str, clinic_id: str | None = None) -> EdgeClient:
        clinic = clinic_id or self.clinic_id
        client = EdgeClient.init(
            self.root / name,
            PassphraseKeyProvider("pass phrase", params=Argon2Params.fast()),
            clinic_id=clinic,
        )
        self.clients.append(client)
        with self.server.db.write() as session:
            token, _ = create_enrolment_token(
                session=session, clinic_id=clinic, ttl=timedelta(minutes=5)
            )
        client.enroll(self.server.url, token, name=name)
        return client

    def rows(self) -> list[PublishedModel]:
        with self.server.db.read() as session:
            return list(
                session.scalars(
                    select(PublishedModel)
                    .where(PublishedModel.organisation_id == self.organisation_id)
                    .order_by(PublishedModel.published_at)
                )
            )

    def change_row(self, sha256: str, **values: Any) -> None:
        with self.server.db.write() as session:
            row = session.scalars(
                select(PublishedModel).where(
                    PublishedModel.organisation_id == self.organisation_id,
                    PublishedModel.sha256 == sha256,
                )
            ).one()
            for key, value in values.items():
                setattr(row, key, value)


@pytest.fixture
def org(server: Any, tmp_path: Path) -> Iterator[Org]:
    made = Org(server, tmp_path)
    yield made
    for client in made.clients:
        client.close()


@pytest.fixture(scope="module")
def models() -> dict[str, bytes]:
    return {name: build_graph(f"tiny-wound-seg-{name}") for name in ("v1", "v2")}


def stored_path(server: Any, sha256: str) -> Path:
    path: Path = server.app.state.blobs.blob_path("models", sha256)
    return path


# ---------------------------------------------------------------- publish and install


def test_published_models_install_and_swap_on_devices(
    org: Org, server: Any, models: dict[str, bytes]
) -> None:
    published = org.publish(models["v1"], "1.0.0")
    manifest = make_manifest(models["v1"], "1.0.0")
    assert published["sha256"] == manifest.sha256
    assert published["size"] == len(models["v1"])
    assert published["active"] is True
    assert ModelManifest.model_validate(published["manifest"]) == manifest
    # The signature is the artifact key's, over the canonical manifest bytes bound to
    # the organisation; the token key never signs a model.
    signature = base64.b64decode(published["signature"])
    payload = model_signing_payload(org.organisation_id, manifest.to_bytes())
    artifact_key = server.app.state.artifact_key.public_key_bytes
    Ed25519PublicKey.from_public_bytes(artifact_key).verify(signature, payload)
    token_key = server.app.state.signing_key.public_key_bytes
    assert artifact_key != token_key
    assert not verify_signature(token_key, payload, signature)
    assert not verify_signature(artifact_key, manifest.to_bytes(), signature)
    assert stored_path(server, manifest.sha256).read_bytes() == models["v1"]

    device = org.device("tablet")
    assert device.models.current() is None
    update = device.update_model()
    assert update.changed and update.reason is None
    assert update.manifest == manifest == device.models.current()
    assert_runs(device, "1.0.0")

    # Nothing new: nothing changes.
    again = device.update_model(threads=2)
    assert not again.changed and again.manifest == manifest
    assert again.reason is not None and "current" in again.reason

    # A second model replaces the first on the next update.
    org.publish(models["v2"], "2.0.0")
    assert [(r.version, r.active) for r in org.rows()] == [("1.0.0", False), ("2.0.0", True)]
    swapped = device.update_model()
    assert swapped.changed and swapped.manifest is not None
    assert swapped.manifest.version == "2.0.0"
    assert_runs(device, "2.0.0")

    # Publishing the first again makes it current again (a rollback): 200, no new row.
    rolled_back = org.publish(models["v1"], "1.0.0", expect=200)
    assert rolled_back["id"] == published["id"]
    assert rolled_back["signature"] == published["signature"]
    assert [(r.version, r.active) for r in org.rows()] == [("1.0.0", True), ("2.0.0", False)]
    assert device.update_model().changed
    assert_runs(device, "1.0.0")

    # Who did what is audited, with ids only.
    with server.db.read() as session:
        events = list(
            session.scalars(
                select(AuditEvent).where(
                    AuditEvent.action.in_(["model-publish", "model-check", "model-download"]),
                    AuditEvent.target.in_([r.sha256 for r in org.rows()]),
                )
            )
        )
    actions = [(e.action, e.actor_kind) for e in events]
    assert actions.count(("model-publish", "user")) == 3
    assert actions.count(("model-download", "device")) == 3
    assert ("model-check", "device") in actions
    assert all(e.outcome == "ok" for e in events)
    assert {e.clinic_id for e in events if e.actor_kind == "device"} == {org.clinic_id}


def test_publishing_the_same_model_twice_changes_nothing(
    org: Org, models: dict[str, bytes]
) -> None:
    first = org.publish(models["v1"], "1.0.0")
    second = org.publish(models["v1"], "1.0.0", expect=200)
    assert second == first
    assert len(org.rows()) == 1

    # The same file under another manifest, or the same version with another file, is
    # refused: a version names one file.
    other = make_manifest(models["v1"], "1.0.1")
    with org.admin() as http:
        response = http.post("/v1/admin/models", files=files(other.to_bytes(), models["v1"]))
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "model_exists"
        clash = make_manifest(models["v2"], "1.0.0")
        response = http.post("/v1/admin/models", files=files(clash.to_bytes(), models["v2"]))
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "version_exists"
    assert [r.version for r in org.rows()] == ["1.0.0"]


def test_only_organisation_admins_publish(org: Org, server: Any, models: dict[str, bytes]) -> None:
    model = build_graph(f"unique-{uuid.uuid4().hex}")  # stored nowhere yet
    body = files(make_manifest(model, "1.0.0").to_bytes(), model)
    device_token = org.device_token()
    callers = {
        None: (401, "missing_token"),
        device_token: (403, "admins_only"),
        org.user_token("clinician", org.clinic_id): (403, "admins_only"),
        org.user_token("staff", org.clinic_id): (403, "admins_only"),
        org.user_token("admin", org.clinic_id): (403, "organisation_admins_only"),
    }
    for token, (status, code) in callers.items():
        with server.http(token) as http:
            response = http.post("/v1/admin/models", files=body)
        assert (response.status_code, response.json()["error"]["code"]) == (status, code)
    assert org.rows() == []
    assert not stored_path(server, hashlib.sha256(model).hexdigest()).exists()

    # And staff cannot fetch what devices fetch.
    org.publish(models["v1"], "1.0.0")
    with server.http(org.user_token("admin")) as http:
        assert http.get("/v1/models/current").status_code == 403


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        ("not json", 422, "invalid_manifest"),
        ("invalid manifest", 422, "invalid_manifest"),
        ("sha256 mismatch", 422, "model_mismatch"),
        ("size mismatch", 422, "model_mismatch"),
        ("model as a text field", 422, "invalid_part"),
        ("no model part", 422, "missing_part"),
        ("not multipart", 415, "unsupported_media_type"),
        ("broken multipart", 400, "bad_multipart"),
    ],
)
def test_bad_uploads_are_refused_and_nothing_is_stored(
    org: Org, server: Any, models: dict[str, bytes], case: str, status: int, code: str
) -> None:
    model = build_graph(f"unique-{uuid.uuid4().hex}")  # stored nowhere yet
    good = make_manifest(model, "3.0.0")
    raw = json.loads(good.to_bytes())
    request: dict[str, Any]
    if case == "not json":
        request = {"files": files(b"{not json", model)}
    elif case == "invalid manifest":
        del raw["classes"]
        request = {"files": files(json.dumps(raw).encode(), model)}
    elif case == "sha256 mismatch":
        raw["sha256"] = "0" * 64
        request = {"files": files(json.dumps(raw).encode(), model)}
    elif case == "size mismatch":
        request = {"files": files(good.to_bytes(), model + b"\x00")}
    elif case == "model as a text field":
        request = {
            "data": {"model": "not a file"},
            "files": {"manifest": ("manifest.json", good.to_bytes(), "application/json")},
        }
    elif case == "no model part":
        request = {"files": {"manifest": ("manifest.json", good.to_bytes(), "application/json")}}
    elif case == "not multipart":
        request = {"json": {"manifest": raw}}
    else:
        request = {
            "content": b"--nope\r\ngarbage",
            "headers": {"content-type": "multipart/form-data; boundary=other"},
        }
    with org.admin() as http:
        response = http.post("/v1/admin/models", **request)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    if case == "invalid manifest":
        assert "classes" in error["message"]
    if case == "sha256 mismatch":
        assert "nothing was stored" in error["message"]
    assert org.rows() == []
    assert not stored_path(server, good.sha256).exists()


def test_a_model_over_the_cap_is_refused(org: Org, server: Any) -> None:
    big = b"\x00" * (20 * 1024 * 1024 + 1)
    manifest = make_manifest(big, "9.0.0")
    with org.admin() as http:
        response = http.post("/v1/admin/models", files=files(manifest.to_bytes(), big))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "model_too_large"
    assert org.rows() == []


# ---------------------------------------------------------------- a server that lies


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        ("model file", "sha256"),
        ("signature by another key", "signature does not verify"),
        ("manifest edited after signing", "signature does not verify"),
        ("unsigned", "unsigned"),
        ("a graph that does not run", "input"),
    ],
)
def test_a_bad_model_from_the_server_is_refused_and_the_previous_stays(
    org: Org, server: Any, models: dict[str, bytes], tamper: str, expected: str
) -> None:
    org.publish(models["v1"], "1.0.0")
    device = org.device("tablet")
    assert device.update_model().changed

    if tamper == "a graph that does not run":
        # Signed and matching its manifest, but the graph reads another input name.
        model = build_graph(f"renamed-{uuid.uuid4().hex}", input_name="pixels")
    else:
        model = models["v2"]
    sha = org.publish(model, "2.0.0")["sha256"]
    manifest = make_manifest(model, "2.0.0").to_bytes()
    path = stored_path(server, sha)
    original = path.read_bytes()
    if tamper == "model file":
        flipped = bytearray(original)
        flipped[len(flipped) // 2] ^= 0xFF
        path.write_bytes(bytes(flipped))
    elif tamper == "signature by another key":
        org.change_row(sha, signature=Ed25519PrivateKey.generate().sign(manifest))
    elif tamper == "manifest edited after signing":
        raw = json.loads(manifest)
        raw["metrics"]["dice_wound"] = 0.99
        edited = json.dumps(raw, sort_keys=True, separators=(",", ":")).encode()
        org.change_row(sha, manifest=edited)
    elif tamper == "unsigned":
        org.change_row(sha, signature=b"")

    with pytest.raises(ModelVerificationError, match=expected) as refused:
        device.update_model()
    assert "previous model stays in use" in str(refused.value)
    current = device.models.current()
    assert current is not None and current.version == "1.0.0"
    assert_runs(device, "1.0.0")

    if tamper != "a graph that does not run":
        # Once the server serves the model as signed, the device takes it.
        path.write_bytes(original)
        signature = server.app.state.artifact_key.sign_model(
            organisation_id=org.organisation_id, manifest_bytes=manifest
        )
        org.change_row(sha, manifest=manifest, signature=signature)
        assert device.update_model().changed
        assert_runs(device, "2.0.0")


# ---------------------------------------------------------------- scoping


def test_a_model_is_for_the_devices_of_its_organisation(
    org: Org, server: Any, tmp_path: Path, models: dict[str, bytes]
) -> None:
    sha = org.publish(models["v1"], "1.0.0")["sha256"]
    # Every clinic of the organisation gets it.
    elsewhere = org.device("other-clinic", org.new_clinic())
    assert elsewhere.update_model().changed
    assert_runs(elsewhere, "1.0.0")

    # Another organisation's devices see none of it.
    other = Org(server, tmp_path / "other")
    try:
        stranger = other.device("stranger")
        update = stranger.update_model()
        assert not update.changed and update.manifest is None
        assert update.reason is not None and "not published" in update.reason
        token = other.device_token()
        with server.http(token) as http:
            response = http.get(f"/v1/models/{sha}")
            assert response.status_code == 404
            assert response.json()["error"]["code"] == "model_not_found"
            assert http.get("/v1/models/current").json()["error"]["code"] == "no_model"
        # It publishes its own, independently (the same file is its own row).
        org_b = other.publish(models["v1"], "1.0.0")
        assert org_b["id"] != org.rows()[0].id
        assert stranger.update_model().changed
    finally:
        for client in other.clients:
            client.close()


def test_devices_fetch_only_published_models(
    org: Org, server: Any, models: dict[str, bytes]
) -> None:
    with server.http(org.device_token()) as http:
        assert http.get("/v1/models/current").status_code == 404
        org.publish(models["v1"], "1.0.0")
        current = http.get("/v1/models/current").json()
        assert (
            base64.b64decode(current["manifest"]) == make_manifest(models["v1"], "1.0.0").to_bytes()
        )
        download = http.get(f"/v1/models/{current['sha256']}")
        assert download.status_code == 200
        assert download.headers["content-type"] == "application/octet-stream"
        assert download.content == models["v1"]
        assert http.get(f"/v1/models/{'e' * 64}").status_code == 404
        assert http.get("/v1/models/not-a-hash").status_code == 422
    with server.http() as anonymous:
        assert anonymous.get("/v1/models/current").status_code == 401


def test_update_model_needs_an_enrolment(org: Org) -> None:
    client = EdgeClient.init(
        org.root / "lonely",
        PassphraseKeyProvider("pass phrase", params=Argon2Params.fast()),
        clinic_id=org.clinic_id,
    )
    org.clients.append(client)
    with pytest.raises(NotEnrolledError):
        client.update_model()
    with pytest.raises(ValueError, match="threads"):
        client.update_model(threads=0)


# ---------------------------------------------------------------- stores from before artifact keys


def as_an_older_sdk_left_it(device: EdgeClient, server: Any, manifest: bytes, model: bytes) -> None:
    """Only the token key pinned, and the model installed then: signed by the token key
    over the manifest alone."""
    device.replica.store.delete_meta("sync.artifact_key")
    enrollment = device.replica.enrollment
    assert enrollment is not None and enrollment.artifact_public_key is None
    token_key = load_or_create_ed25519(server.settings.resolved_signing_key_file)
    device.models.install(manifest, model, token_key.sign(manifest))


def test_a_store_enrolled_before_artifact_keys_learns_the_key_and_keeps_its_model(
    org: Org, server: Any, models: dict[str, bytes]
) -> None:
    org.publish(models["v1"], "1.0.0")
    device = org.device("old-tablet")
    manifest = make_manifest(models["v1"], "1.0.0").to_bytes()
    as_an_older_sdk_left_it(device, server, manifest, models["v1"])
    assert_runs(device, "1.0.0")  # checked against the token key, as it was installed

    # Its next update learns the artifact key, vouched for by the token key it pinned,
    # and installs the same model again under it.
    update = device.update_model()
    assert not update.changed and update.manifest is not None
    assert update.manifest.version == "1.0.0"
    enrollment = device.replica.enrollment
    assert enrollment is not None
    assert enrollment.artifact_public_key == server.app.state.artifact_key.public_key_bytes
    assert_runs(device, "1.0.0")

    org.publish(models["v2"], "2.0.0")
    assert device.update_model().changed
    assert_runs(device, "2.0.0")


@dataclass
class ForgedArtifactKey:
    """A source that offers another artifact key (and a model signed with it)."""

    inner: HttpTransport
    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)

    def current_model(self) -> ModelOffer | None:
        offer = self.inner.current_model()
        assert offer is not None
        public = self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        manifest = ModelManifest.from_bytes(offer.manifest)
        return replace(
            offer,
            signature=sign_manifest(manifest, self.key, organisation_id="any"),
            artifact_key=public,
            artifact_key_signature=self.key.sign(artifact_key_statement(public)),
        )

    def download_model(self, sha256: str) -> bytes:
        return self.inner.download_model(sha256)


def test_an_artifact_key_the_pinned_key_does_not_vouch_for_is_refused(
    org: Org, server: Any, models: dict[str, bytes]
) -> None:
    org.publish(models["v1"], "1.0.0")
    device = org.device("old-tablet")
    manifest = make_manifest(models["v1"], "1.0.0").to_bytes()
    as_an_older_sdk_left_it(device, server, manifest, models["v1"])
    refused = pytest.raises(ModelVerificationError, match="not vouched for")
    with HttpTransport(device.replica) as http, refused:
        device.update_model(source=ForgedArtifactKey(http))
    enrollment = device.replica.enrollment
    assert enrollment is not None and enrollment.artifact_public_key is None
    assert_runs(device, "1.0.0")


def test_a_model_signed_for_another_organisation_is_refused(
    org: Org, server: Any, models: dict[str, bytes]
) -> None:
    org.publish(models["v1"], "1.0.0")
    device = org.device("tablet")
    assert device.update_model().changed
    sha = org.publish(models["v2"], "2.0.0")["sha256"]
    manifest = make_manifest(models["v2"], "2.0.0").to_bytes()
    # The server's own artifact key, but the signature of another organisation's model.
    elsewhere = server.app.state.artifact_key.sign_model(
        organisation_id=str(uuid.uuid4()), manifest_bytes=manifest
    )
    org.change_row(sha, signature=elsewhere)
    with pytest.raises(ModelVerificationError, match="another organisation"):
        device.update_model()
    assert_runs(device, "1.0.0")
