"""Documents JavaScript Automerge wrote, pushed to the server by an enrolled device.

The server's ingest makes the field-kind checks a device's merge makes (`crdt`'s
`check_new_document`): a scalar written as collaborative text (JavaScript's default
for a string) is refused with the field named, and nothing of it is stored; the same
record with the published kinds, signed by the device, is accepted and reaches the
clinic's other devices.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from crdt import Entry, EntryKind, SyncMessage, encode_message
from sync_server.sync.tables import Document, PatientRow
from tests.test_interop import js_write, patient_values

MEDIA = {"content-type": "application/vnd.coherency.sync"}


def pkcs8_hex(raw: bytes) -> str:
    """The device's Ed25519 key as node's crypto reads it (DER PKCS#8, hex)."""
    key = Ed25519PrivateKey.from_private_bytes(raw)
    return key.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption()).hex()


def push_raw(server: Any, token: str, doc_id: str, data: bytes) -> dict[str, Any]:
    message = encode_message(SyncMessage({}, (Entry(EntryKind.DOC, doc_id, data),)))
    with server.http(token) as http:
        response = http.post("/v1/sync/push", content=message, headers=MEDIA)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_the_server_refuses_javascript_text_scalars_and_accepts_the_published_kinds(
    server: Any, tmp_path: Path
) -> None:
    clinic = server.new_clinic()
    device, token = server.device_token(clinic)
    key = pkcs8_hex(server.signer(device).private_bytes())
    record = str(uuid.uuid4())
    values = patient_values(device, id=record, clinic_id=clinic)
    spec = {"device": device, "values": values, "sign": True, "private_key": key}

    wrong, _ = js_write(tmp_path, "wrong", spec | {"text_fields": ["family_name"]})
    answer = push_raw(server, token, record, wrong)
    assert answer["accepted"] == []
    [refused] = answer["rejected"]
    assert refused["doc_id"] == record
    assert "family_name: expected a string scalar, found collaborative text" in refused["reason"]
    with server.db.read() as session:
        assert session.get(Document, record) is None

    right, _ = js_write(tmp_path, "right", spec)
    answer = push_raw(server, token, record, right)
    assert answer["accepted"] == [record] and answer["rejected"] == []
    with server.db.read() as session:
        row = session.get(PatientRow, record)
        assert row is not None and row.family_name == "Okonkwo"
