"""Notifications: an outbox written in the transaction of the change it reports
(`notify`), sent by workers (`deliver_due`) through small channel backends (in-app,
email over SMTP, sandbox SMS and push) exactly once per (event, channel, recipient),
with retries, backoff and dead deliveries staff can see and retry.

Errors: `DeliveryFailed` (a channel could not send; ``retryable`` says whether a later
attempt may succeed). Services raise the server's own tree (`sync_server.errors`).
"""

from sync_server.notifications.channels import (
    Channel,
    DeliveryFailed,
    InApp,
    Message,
    SandboxPush,
    SandboxSms,
    SmtpEmail,
    TwilioSms,
)
from sync_server.notifications.events import Recipient, notify
from sync_server.notifications.worker import deliver_due

__all__ = [
    "Channel",
    "DeliveryFailed",
    "InApp",
    "Message",
    "Recipient",
    "SandboxPush",
    "SandboxSms",
    "SmtpEmail",
    "TwilioSms",
    "deliver_due",
    "notify",
]
