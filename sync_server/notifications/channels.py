"""Channels: how a message leaves the server.

A channel is a small interface (`Channel`): a `name` and ``send(message, *,
idempotency_key) -> provider message id``, raising `DeliveryFailed` (``retryable``:
whether a later attempt may succeed). The worker passes the delivery's id as the
idempotency key, so a resend after a worker died mid-send is recognisable: the
sandboxes and the in-app channel keep one message per key, as real providers do, and
an email's ``Message-ID`` is derived from it.

Exceptions::

    Exception
     └── DeliveryFailed   (retryable: bool; message without PHI)
"""

from __future__ import annotations

import json
import math
import re
import smtplib
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any, Protocol

from sqlalchemy import select

from crdt import Notice, notice_id
from sync_server.db import Database, insert_unless_taken, utcnow
from sync_server.identity.tables import Clinic
from sync_server.notifications.tables import InAppNotice, NotificationEvent
from sync_server.settings import Settings
from sync_server.sync.authorship import ServerSigner
from sync_server.sync.documents import upserted_record, write_documents
from sync_server.sync.feed import Feed

__all__ = [
    "Channel",
    "DeliveryFailed",
    "InApp",
    "Message",
    "SandboxPush",
    "SandboxSms",
    "SentMessage",
    "SmtpEmail",
    "TwilioSms",
    "WebPush",
    "notice_detail",
    "push_channel",
    "sms_channel",
]


class DeliveryFailed(Exception):
    """A channel could not send a message. `retryable`: a later attempt may succeed
    (a timeout, a busy server); otherwise the delivery is dead (no address, refused).
    The message names no patient data: it is stored and shown to staff."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True, slots=True)
class Message:
    """One message to send: to whom, its subject and body (from
    `sync_server.notifications.templates`), and for the in-app channel only the
    event's detail."""

    recipient: str
    clinic_id: str
    event_id: str
    kind: str
    subject: str
    body: str
    detail: dict[str, Any] = field(default_factory=dict)


class Channel(Protocol):
    """A way to send messages."""

    name: str

    def send(self, message: Message, *, idempotency_key: str) -> str:
        """Send `message` once per `idempotency_key`; return the provider's id.

        Raises:
            DeliveryFailed: not sent (``retryable`` says whether to try again).
        """
        ...


@dataclass(frozen=True, slots=True)
class SentMessage:
    """What a sandbox would have sent."""

    provider_id: str
    recipient: str
    body: str
    idempotency_key: str


class _Sandbox:
    """Records what it would send, one message per idempotency key (a second send with
    a key it has seen returns the first message's id and sends nothing)."""

    name = "sandbox"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sent: dict[str, SentMessage] = {}
        self.requests = 0  # every call of `send`, deduplicated or not

    def send(self, message: Message, *, idempotency_key: str) -> str:
        """Record `message` unless `idempotency_key` was seen; return its id."""
        with self._lock:
            self.requests += 1
            known = self._sent.get(idempotency_key)
            if known is not None:
                return known.provider_id
            sent = SentMessage(
                f"{self.name}-{len(self._sent) + 1}",
                message.recipient,
                message.body,
                idempotency_key,
            )
            self._sent[idempotency_key] = sent
            return sent.provider_id

    def sent(self) -> list[SentMessage]:
        """Every message recorded, in the order they were first sent."""
        with self._lock:
            return list(self._sent.values())


class SandboxSms(_Sandbox):
    """An SMS provider that records what it would send."""

    name = "sms"


class SandboxPush(_Sandbox):
    """A push provider that records what it would send."""

    name = "push"


class SmtpEmail:
    """Email over SMTP (`smtplib`): host, port, STARTTLS and login from `Settings`
    (``smtp_*``). ``staff:<clinic>`` recipients go to
    ``Settings.notification_staff_email``; an email address is used as it is; a
    recipient with no address fails for good (``no_email_address``)."""

    name = "email"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def _address(self, recipient: str) -> str:
        if recipient.startswith("staff:") and self._settings.notification_staff_email:
            return self._settings.notification_staff_email
        if "@" in recipient and ":" not in recipient:
            return recipient
        raise DeliveryFailed(
            "no_email_address: the recipient has no email address", retryable=False
        )

    def send(self, message: Message, *, idempotency_key: str) -> str:
        """Send `message` by SMTP with a ``Message-ID`` derived from `idempotency_key`.

        Raises:
            DeliveryFailed: SMTP is not configured or refused the message for good
                (not retryable), or the server could not be reached or answered 4xx
                (retryable).
        """
        settings = self._settings
        if not settings.smtp_host:
            raise DeliveryFailed("email_not_configured: no smtp_host", retryable=False)
        email = EmailMessage()
        domain = settings.smtp_from.rpartition("@")[2] or "coherency.invalid"
        message_id = f"<{idempotency_key}@{domain}>"
        email["Message-ID"] = message_id
        email["From"] = settings.smtp_from
        email["To"] = self._address(message.recipient)
        email["Subject"] = message.subject
        email["Date"] = formatdate(utcnow().timestamp(), usegmt=True)
        email["X-Coherency-Delivery"] = idempotency_key
        email.set_content(message.body)
        try:
            with smtplib.SMTP(
                settings.smtp_host, settings.smtp_port, timeout=settings.smtp_timeout_seconds
            ) as smtp:
                if settings.smtp_starttls:
                    smtp.starttls()
                if settings.smtp_user:
                    smtp.login(settings.smtp_user, settings.smtp_password or "")
                smtp.send_message(email)
        except smtplib.SMTPResponseException as exc:
            raise DeliveryFailed(
                f"smtp_refused: {exc.smtp_code}", retryable=400 <= exc.smtp_code < 500
            ) from None
        except smtplib.SMTPRecipientsRefused:
            raise DeliveryFailed("smtp_recipient_refused", retryable=False) from None
        except (TimeoutError, OSError, smtplib.SMTPException) as exc:
            raise DeliveryFailed(
                f"smtp_unreachable: {type(exc).__name__}", retryable=True
            ) from None
        return message_id


class InApp:
    """The in-app channel: writes the notice as a server-signed `crdt.Notice` record
    (``notice_id(idempotency_key)``) in the clinic's feed, so it syncs down to the
    clinic's devices and shows offline, and as an `InAppNotice` row (the server's
    index of what was delivered), both in one transaction. A resend with the same key
    rewrites the same record (no change when it already says the same) and adds no
    row: the device sees one notice. With a `feed`, the clinic's long-polling pulls
    are woken at commit (else they find the notice at their next poll)."""

    name = "in_app"

    def __init__(self, db: Database, signer: ServerSigner, feed: Feed | None = None) -> None:
        self._db = db
        self._signer = signer
        self._feed = feed

    def send(self, message: Message, *, idempotency_key: str) -> str:
        """Write the notice unless it exists; return its record id.

        Raises:
            DeliveryFailed: the recipient is neither ``patient:<id>`` nor
                ``staff:<clinic id>``, or the event is gone (not retryable).
        """
        prefix, _, rest = message.recipient.partition(":")
        if prefix not in ("patient", "staff") or not rest:
            raise DeliveryFailed(
                "no_in_app_recipient: in-app notices go to patient:<id> or staff:<clinic>",
                retryable=False,
            )
        record_id = notice_id(idempotency_key)
        with self._db.write() as session:
            # The clinic's feed first: `write_documents` locks it below, and the notice
            # row's key on the clinic share-locks it before that, so two workers would
            # each hold the share the other's lock waits on (a deadlock on PostgreSQL).
            session.execute(
                select(Clinic.id).where(Clinic.id == message.clinic_id).with_for_update()
            ).all()
            created = session.scalar(
                select(NotificationEvent.created_at).where(NotificationEvent.id == message.event_id)
            )
            if created is None:
                raise DeliveryFailed("event_missing: the event is gone", retryable=False)
            insert_unless_taken(
                session,
                InAppNotice(
                    id=idempotency_key,
                    event_id=message.event_id,
                    clinic_id=message.clinic_id,
                    recipient=message.recipient,
                    kind=message.kind,
                    title=message.subject,
                    detail=message.detail,
                    created_at=created,
                ),
            )
            document = upserted_record(
                session=session,
                schema=Notice,
                record_id=record_id,
                clinic_id=message.clinic_id,
                values={
                    "recipient": message.recipient,
                    "patient_id": rest if prefix == "patient" else None,
                    "kind": message.kind,
                    "title": message.subject[:200],
                    "detail": notice_detail(message.detail),
                    "event_id": message.event_id,
                },
                now=created,
                author=self._signer.device_id,
            )
            if document is not None:
                write_documents(
                    session=session,
                    clinic_id=message.clinic_id,
                    documents=[document],
                    signer=self._signer,
                )
                if self._feed is not None:
                    self._feed.notify_in(session, message.clinic_id)
        if document is not None and self._feed is not None:
            self._feed.published(message.clinic_id)
        return record_id


def notice_detail(detail: Mapping[str, Any]) -> dict[str, str | int | float | bool | None]:
    """An event's detail as a `crdt.Notice` holds it: at most 40 keys (sorted, of at
    most 60 characters), numbers, booleans and None kept, a list or mapping as its JSON
    text, anything else as its string (strings cut to 500 characters)."""
    flat: dict[str, str | int | float | bool | None] = {}
    for key in sorted(str(k) for k in detail)[:40]:
        value = detail[key]
        if value is None or isinstance(value, bool | int):
            flat[key[:60]] = value
        elif isinstance(value, float):  # NaN and infinities are not JSON: as text
            flat[key[:60]] = value if math.isfinite(value) else str(value)
        elif isinstance(value, Mapping | list | tuple):
            flat[key[:60]] = json.dumps(value, sort_keys=True, default=str)[:500]
        else:  # a string, or a value that reads as one (a date, a UUID, a Decimal)
            flat[key[:60]] = str(value)[:500]
    return flat


_E164 = re.compile(r"\+[1-9][0-9]{6,14}")


class TwilioSms:
    """SMS through Twilio's Messages API with Twilio's own library (``twilio``):
    ``POST /2010-04-01/Accounts/{sid}/Messages.json`` with the form fields ``To``,
    ``From`` and ``Body``, authenticated with the account SID and auth token (HTTP
    basic). Credentials and the sender from `Settings` (``twilio_*``);
    ``twilio_base_url`` points it elsewhere (a test server, a regional edge).

    A recipient is an E.164 number (``+15551234567``) or an address `phone_of` maps to
    one; any other fails for good (``no_phone_number``). Twilio's Messages API takes no
    idempotency key: a resend after a worker died between Twilio's answer and the
    worker's mark sends a second SMS (the body is the same PHI-free text).
    """

    name = "sms"

    def __init__(
        self, settings: Settings, *, phone_of: Callable[[str], str | None] | None = None
    ) -> None:
        self._settings = settings
        self._phone_of = phone_of
        self._client: Any = None
        self._lock = threading.Lock()

    def _number(self, recipient: str) -> str:
        number = recipient if _E164.fullmatch(recipient) else None
        if number is None and self._phone_of is not None:
            number = self._phone_of(recipient)
        if number is None or not _E164.fullmatch(number):
            raise DeliveryFailed("no_phone_number: the recipient has no phone", retryable=False)
        return number

    def _twilio(self) -> Any:
        from twilio.http.http_client import TwilioHttpClient
        from twilio.rest import Client

        with self._lock:
            if self._client is None:
                settings = self._settings
                client = Client(
                    settings.twilio_account_sid,
                    settings.twilio_auth_token,
                    http_client=TwilioHttpClient(timeout=settings.twilio_timeout_seconds),
                    environment={},
                )
                if settings.twilio_base_url:
                    client.api.base_url = settings.twilio_base_url.rstrip("/")
                self._client = client
            return self._client

    def send(self, message: Message, *, idempotency_key: str) -> str:
        """Send `message`'s body by SMS; return Twilio's message SID.

        Raises:
            DeliveryFailed: Twilio is not configured, the recipient has no number, or
                Twilio refused the message (4xx other than 408 and 429: not
                retryable); Twilio could not be reached, timed out, was busy (408, 429)
                or failed (5xx): retryable.
        """
        from twilio.base.exceptions import TwilioException, TwilioRestException

        settings = self._settings
        if not (
            settings.twilio_account_sid and settings.twilio_auth_token and settings.twilio_from
        ):
            raise DeliveryFailed("sms_not_configured: no Twilio credentials", retryable=False)
        to = self._number(message.recipient)
        sender = settings.twilio_from
        try:
            if sender.startswith("MG"):
                sent = self._twilio().messages.create(
                    to=to, messaging_service_sid=sender, body=message.body
                )
            else:
                sent = self._twilio().messages.create(to=to, from_=sender, body=message.body)
        except TwilioRestException as exc:
            status = int(exc.status)
            retryable = status in (408, 429) or status >= 500
            raise DeliveryFailed(f"twilio_refused: {status}", retryable=retryable) from None
        except (TwilioException, OSError) as exc:
            # requests' errors (connection, timeout) are OSErrors.
            raise DeliveryFailed(
                f"twilio_unreachable: {type(exc).__name__}", retryable=True
            ) from None
        return str(sent.sid)


def sms_channel(settings: Settings) -> Channel:
    """The SMS channel `Settings.notification_sms_provider` names (default the sandbox).

    Raises:
        ValueError: an unknown provider.
    """
    if settings.notification_sms_provider == "twilio":
        return TwilioSms(settings)
    if settings.notification_sms_provider == "sandbox":
        return SandboxSms()
    raise ValueError(f"unknown SMS provider {settings.notification_sms_provider!r}")


PushSubscriptions = Callable[[str], Sequence[Mapping[str, Any]]]
"""A recipient's Web Push subscriptions (``{"endpoint", "keys": {"p256dh", "auth"}}``,
as the browser's ``PushSubscription.toJSON()`` gives them)."""


class WebPush:
    """Push by the Web Push protocol with ``pywebpush``: the payload encrypted for the
    subscription (RFC 8291, ``aes128gcm``), signed with the deployment's VAPID key (RFC
    8292, ``Authorization: vapid t=<JWT>, k=<key>``), POSTed to the subscription's
    endpoint with a ``TTL`` and a ``Topic`` (RFC 8030).

    The ``Topic`` is the idempotency key (the delivery id without its dashes, 32
    characters): a push service replaces a message still waiting for an offline device
    with a later one of the same topic, so a resend after a worker died is shown once
    on a device that was offline; one already delivered to an online device cannot be
    recalled (Web Push has no idempotency key beyond that).

    `subscriptions_of` maps a recipient (``patient:<id>``) to its subscriptions; none
    fails for good (``no_push_subscription``).
    """

    name = "push"

    def __init__(
        self, settings: Settings, *, subscriptions_of: PushSubscriptions | None = None
    ) -> None:
        self._settings = settings
        self._subscriptions_of = subscriptions_of

    def send(self, message: Message, *, idempotency_key: str) -> str:
        """Push `message` (its subject and PHI-free body) to every subscription of its
        recipient; return the push services' message locations, comma-separated.

        Raises:
            DeliveryFailed: no VAPID key or no subscription, or every push service
                refused for good (4xx other than 408/429; 404 and 410: the
                subscription is gone): not retryable; a push service unreachable,
                busy (408, 429) or failing (5xx): retryable (a resend reaches every
                subscription again under the same topic).
        """
        from py_vapid import Vapid
        from pywebpush import WebPushException, webpush

        settings = self._settings
        key = settings.webpush_vapid_private_key
        if not key:
            raise DeliveryFailed("push_not_configured: no VAPID key", retryable=False)
        try:
            vapid = (
                Vapid.from_pem(key.encode())
                if key.lstrip().startswith("-----BEGIN")
                else Vapid.from_string(key)
            )
        except Exception:  # py_vapid raises what cryptography raises for a bad key
            raise DeliveryFailed("push_not_configured: bad VAPID key", retryable=False) from None
        found = list(self._subscriptions_of(message.recipient)) if self._subscriptions_of else []
        if not found:
            raise DeliveryFailed("no_push_subscription", retryable=False)
        payload = json.dumps({"title": message.subject, "body": message.body})
        topic = idempotency_key.replace("-", "")[:32]
        sent: list[str] = []
        retry = False
        for subscription in found:
            try:
                response = webpush(
                    dict(subscription),
                    data=payload,
                    vapid_private_key=vapid,
                    vapid_claims={"sub": settings.webpush_vapid_subject},
                    ttl=settings.webpush_ttl_seconds,
                    timeout=settings.webpush_timeout_seconds,
                    headers={"Topic": topic, "Urgency": "normal"},
                )
            except WebPushException as exc:
                status = getattr(exc.response, "status_code", None)
                if status is None or status in (408, 429) or status >= 500:
                    retry = True
                continue
            except OSError:  # requests' connection errors and timeouts
                retry = True
                continue
            sent.append(str(response.headers.get("Location") or response.status_code))
        if retry:
            raise DeliveryFailed("push_unavailable: retrying", retryable=True)
        if not sent:
            raise DeliveryFailed("push_refused: every subscription", retryable=False)
        return ",".join(sent)[:200]


def push_channel(
    settings: Settings, *, subscriptions_of: PushSubscriptions | None = None
) -> Channel:
    """The push channel `Settings.notification_push_provider` names (default the
    sandbox).

    Raises:
        ValueError: an unknown provider.
    """
    if settings.notification_push_provider == "webpush":
        return WebPush(settings, subscriptions_of=subscriptions_of)
    if settings.notification_push_provider == "sandbox":
        return SandboxPush()
    raise ValueError(f"unknown push provider {settings.notification_push_provider!r}")
