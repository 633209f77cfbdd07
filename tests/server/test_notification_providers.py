"""The real SMS and push provider adapters against loopback servers: Twilio's
documented Messages API (the request Twilio's own library sends: path, form fields,
basic auth) and a Web Push service (RFC 8030/8291/8292: an encrypted payload only the
subscription opens, a VAPID-signed JWT, TTL and Topic), and how their answers map to
sent, retryable and dead."""

from __future__ import annotations

import base64
import json
import os
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import http_ece
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from sync_server.notifications import DeliveryFailed, Message, SandboxPush, SandboxSms
from sync_server.notifications.channels import TwilioSms, WebPush, push_channel, sms_channel
from sync_server.settings import Settings

SID = "AC" + "0123456789abcdef" * 2
TOKEN = "twilio-test-token"


class _Twilio(ThreadingHTTPServer):
    """Answers POST .../Messages.json with `status` (201: a message resource)."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.status = 201
        self.requests: list[dict[str, Any]] = []


class _Quiet(BaseHTTPRequestHandler):
    """A loopback provider's handler that does not log each request to stderr."""

    def log_message(self, format: str, *args: Any) -> None:
        """Log nothing."""


class _Handler(_Quiet):
    server: _Twilio

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length).decode()
        self.server.requests.append(
            {
                "path": self.path,
                "content_type": self.headers.get("Content-Type", ""),
                "authorization": self.headers.get("Authorization", ""),
                "form": parse_qs(body),
            }
        )
        status = self.server.status
        if status == 201:
            payload: dict[str, Any] = {
                "sid": f"SM{len(self.server.requests):032d}",
                "account_sid": SID,
                "status": "queued",
                "to": parse_qs(body)["To"][0],
                "body": parse_qs(body)["Body"][0],
            }
        else:
            payload = {"code": 21211, "message": "refused", "status": status}
        raw = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


@pytest.fixture
def twilio() -> Iterator[_Twilio]:
    httpd = _Twilio()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def _settings(tmp_path: Any, base_url: str, **extra: Any) -> Settings:
    return Settings(
        data_dir=tmp_path,
        notification_sms_provider="twilio",
        twilio_account_sid=SID,
        twilio_auth_token=TOKEN,
        twilio_from="+15005550006",
        twilio_base_url=base_url,
        twilio_timeout_seconds=2.0,
        **extra,
    )


def _message(recipient: str = "+15551234567") -> Message:
    return Message(
        recipient=recipient,
        clinic_id="c",
        event_id="e",
        kind="booking.reminder_2h",
        subject="Coherency",
        body="You have a new message from your clinic.",
    )


def test_twilio_gets_its_documented_messages_request(twilio: _Twilio, tmp_path: Any) -> None:
    base = f"http://127.0.0.1:{twilio.server_address[1]}"
    channel = sms_channel(_settings(tmp_path, base))
    assert isinstance(channel, TwilioSms)
    sid = channel.send(_message(), idempotency_key="delivery-1")
    assert sid == "SM" + "1".zfill(32)
    [request] = twilio.requests
    assert request["path"] == f"/2010-04-01/Accounts/{SID}/Messages.json"
    assert request["content_type"].startswith("application/x-www-form-urlencoded")
    assert request["form"] == {
        "To": ["+15551234567"],
        "From": ["+15005550006"],
        "Body": ["You have a new message from your clinic."],
    }
    scheme, _, encoded = request["authorization"].partition(" ")
    assert scheme == "Basic"
    assert base64.b64decode(encoded).decode() == f"{SID}:{TOKEN}"


@pytest.mark.parametrize(
    ("status", "retryable"), [(400, False), (401, False), (404, False), (429, True), (503, True)]
)
def test_twilio_errors_map_to_delivery_failed(
    twilio: _Twilio, tmp_path: Any, status: int, retryable: bool
) -> None:
    twilio.status = status
    channel = TwilioSms(_settings(tmp_path, f"http://127.0.0.1:{twilio.server_address[1]}"))
    with pytest.raises(DeliveryFailed) as failed:
        channel.send(_message(), idempotency_key="d")
    assert failed.value.retryable is retryable
    assert str(failed.value) == f"twilio_refused: {status}"


def test_twilio_unreachable_is_retryable_and_bad_addresses_are_dead(tmp_path: Any) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    channel = TwilioSms(_settings(tmp_path, f"http://127.0.0.1:{port}"))
    with pytest.raises(DeliveryFailed) as failed:
        channel.send(_message(), idempotency_key="d")
    assert failed.value.retryable is True
    assert str(failed.value).startswith("twilio_unreachable")
    for recipient in ("patient:123", "+12", "555-1234"):
        with pytest.raises(DeliveryFailed) as failed:
            channel.send(_message(recipient), idempotency_key="d")
        assert failed.value.retryable is False
    mapped = TwilioSms(
        _settings(tmp_path, f"http://127.0.0.1:{port}"),
        phone_of=lambda r: "+15557654321" if r == "patient:123" else None,
    )
    assert mapped._number("patient:123") == "+15557654321"
    unconfigured = TwilioSms(Settings(data_dir=tmp_path, notification_sms_provider="twilio"))
    with pytest.raises(DeliveryFailed, match="sms_not_configured") as failed:
        unconfigured.send(_message(), idempotency_key="d")
    assert failed.value.retryable is False
    assert isinstance(sms_channel(Settings(data_dir=tmp_path)), SandboxSms)


# ---------------------------------------------------------------- Web Push


class _PushService(ThreadingHTTPServer):
    """A push service: answers every POST with `status` (201: created, with a Location)."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _PushHandler)
        self.status = 201
        self.requests: list[dict[str, Any]] = []


class _PushHandler(_Quiet):
    server: _PushService

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self.server.requests.append(
            {
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": self.rfile.read(length),
            }
        )
        self.send_response(self.server.status)
        self.send_header("Location", f"/m/{len(self.server.requests)}")
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def push_service() -> Iterator[_PushService]:
    httpd = _PushService()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _device(endpoint: str) -> tuple[dict[str, Any], ec.EllipticCurvePrivateKey, bytes]:
    """A browser's subscription: its key pair and auth secret."""
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    auth = os.urandom(16)
    return {"endpoint": endpoint, "keys": {"p256dh": _b64(public), "auth": _b64(auth)}}, key, auth


def _push_settings(tmp_path: Any) -> tuple[Settings, ec.EllipticCurvePrivateKey]:
    vapid = ec.generate_private_key(ec.SECP256R1())
    pem = vapid.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()
    settings = Settings(
        data_dir=tmp_path,
        notification_push_provider="webpush",
        webpush_vapid_private_key=pem,
        webpush_vapid_subject="mailto:ops@clinic.test",
        webpush_ttl_seconds=3600,
        webpush_timeout_seconds=2.0,
    )
    return settings, vapid


def test_web_push_sends_the_documented_encrypted_signed_request(
    push_service: _PushService, tmp_path: Any
) -> None:
    base = f"http://127.0.0.1:{push_service.server_address[1]}"
    subscription, device_key, auth = _device(f"{base}/push/device-1")
    settings, vapid = _push_settings(tmp_path)
    channel = push_channel(settings, subscriptions_of=lambda r: [subscription])
    assert isinstance(channel, WebPush)
    key = "0b6f1c9e-3a55-4c1e-9a8e-6a3f0d7e2b11"
    assert channel.send(_message("patient:p1"), idempotency_key=key) == "/m/1"
    [request] = push_service.requests
    headers = request["headers"]
    assert request["path"] == "/push/device-1"
    assert headers["content-encoding"] == "aes128gcm"
    assert headers["ttl"] == "3600"
    assert headers["topic"] == key.replace("-", "")
    # RFC 8292: vapid t=<JWT signed ES256 by the VAPID key>, k=<its public key>.
    scheme, _, params = headers["authorization"].partition(" ")
    assert scheme == "vapid"
    fields = dict(p.strip().split("=", 1) for p in params.split(","))
    vapid_public = vapid.public_key()
    assert _unb64(fields["k"]) == vapid_public.public_bytes(
        Encoding.X962, PublicFormat.UncompressedPoint
    )
    claims = jwt.decode(fields["t"], vapid_public, algorithms=["ES256"], audience=base)
    assert claims["sub"] == "mailto:ops@clinic.test"
    # RFC 8291: only the subscription's keys open the payload; it is the PHI-free text.
    opened = http_ece.decrypt(
        request["body"], private_key=device_key, auth_secret=auth, version="aes128gcm"
    )
    assert json.loads(opened) == {
        "title": "Coherency",
        "body": "You have a new message from your clinic.",
    }


@pytest.mark.parametrize(
    ("status", "retryable"), [(400, False), (410, False), (429, True), (502, True)]
)
def test_web_push_errors_map_to_delivery_failed(
    push_service: _PushService, tmp_path: Any, status: int, retryable: bool
) -> None:
    push_service.status = status
    base = f"http://127.0.0.1:{push_service.server_address[1]}"
    subscription, _, _ = _device(f"{base}/push/device-2")
    settings, _ = _push_settings(tmp_path)
    channel = WebPush(settings, subscriptions_of=lambda r: [subscription])
    with pytest.raises(DeliveryFailed) as failed:
        channel.send(_message("patient:p1"), idempotency_key="k")
    assert failed.value.retryable is retryable


def test_web_push_without_subscription_or_key_is_dead(tmp_path: Any) -> None:
    settings, _ = _push_settings(tmp_path)
    with pytest.raises(DeliveryFailed, match="no_push_subscription") as failed:
        WebPush(settings, subscriptions_of=lambda r: []).send(_message("p"), idempotency_key="k")
    assert failed.value.retryable is False
    with pytest.raises(DeliveryFailed, match="push_not_configured"):
        WebPush(Settings(data_dir=tmp_path)).send(_message("p"), idempotency_key="k")
    bad = settings.model_copy(update={"webpush_vapid_private_key": "not-a-key"})
    with pytest.raises(DeliveryFailed, match="bad VAPID key") as failed:
        WebPush(bad, subscriptions_of=lambda r: [{"endpoint": "x"}]).send(
            _message("p"), idempotency_key="k"
        )
    assert failed.value.retryable is False
    assert isinstance(push_channel(Settings(data_dir=tmp_path)), SandboxPush)
