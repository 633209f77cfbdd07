"""The server's artifact key: the Ed25519 key that signs what the server publishes: models,
and the record documents it writes itself (decisions).

It is not the token key (`sync_server.identity.keyring`): a signature by one
never passes for the other's. Each model signature covers
`edge_sdk.model_signing_payload(organisation_id, manifest bytes)`, so a model signed for
one organisation does not verify for another's devices. Devices pin the public key at
enrolment (`EnrolResponse.artifact_public_key`); a device enrolled before this key
existed learns it from the token key's endorsement (`endorsement`), which it checks
with the token key it pinned.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from crdt import CHECKPOINT_DOMAIN
from edge_sdk import artifact_key_statement, model_signing_payload
from sync_server.identity.tokens import Endorser
from sync_server.keyfiles import load_or_create_ed25519

__all__ = ["ArtifactKey"]


class ArtifactKey:
    """The server's Ed25519 key for published artifacts (models)."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private = private_key
        self.public_key_bytes = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @classmethod
    def load_or_create(cls, path: Path) -> ArtifactKey:
        """Read the PEM key at `path`, creating it (mode 0600) on first start."""
        return cls(load_or_create_ed25519(path))

    def sign_model(self, *, organisation_id: str, manifest_bytes: bytes) -> bytes:
        """The signature of a model's canonical manifest, published for one organisation."""
        return self._private.sign(model_signing_payload(organisation_id, manifest_bytes))

    def sign_document(self, message: bytes) -> bytes:
        """A signature of a document's heads (`crdt.signed_heads_message`: its own
        domain, so it never passes for a model signature, nor one for it)."""
        if not message.startswith(b"coherency-changes\n"):
            raise ValueError("the artifact key signs documents' heads messages only")
        return self._private.sign(message)

    def sign_checkpoint(self, message: bytes) -> bytes:
        """A signature of an audit log checkpoint (`crdt.Checkpoint.message`: its own
        domain, so it never passes for a document's or a model's signature)."""
        if not message.startswith(CHECKPOINT_DOMAIN):
            raise ValueError("not an audit checkpoint message")
        return self._private.sign(message)

    def endorsement(self, token_key: Endorser) -> bytes:
        """The token key's signature vouching for this key (`artifact_key_statement`)."""
        return token_key.endorse(artifact_key_statement(self.public_key_bytes))
