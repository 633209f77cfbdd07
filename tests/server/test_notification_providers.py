"""The real SMS provider adapter against a loopback server speaking Twilio's documented
Messages API: the request Twilio's own library sends (path, form fields, basic auth),
and how Twilio's answers map to sent, retryable and dead."""

from __future__ import annotations

import base64
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import pytest

from sync_server.notifications import DeliveryFailed, Message, SandboxSms
from sync_server.notifications.channels import TwilioSms, sms_channel
from sync_server.settings import Settings

SID = "AC" + "0123456789abcdef" * 2
TOKEN = "twilio-test-token"


class _Twilio(ThreadingHTTPServer):
    """Answers POST .../Messages.json with `status` (201: a message resource)."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.status = 201
        self.requests: list[dict[str, Any]] = []


class _Handler(BaseHTTPRequestHandler):
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

    def log_message(self, format: str, *args: Any) -> None:
        pass


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
