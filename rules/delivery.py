"""The notification outbox: webhook, e-mail and MQTT deliveries kept in `alert_delivery` until they are taken.

A delivery is attempted at once; a refusal that may pass (connection refused, timeout, 5xx, 408/429, an
SMTP server that is down, an MQTT publish that fails) is retried with exponential back-off from
`backoff_base` up to `backoff_max` seconds, so a receiver that was down gets everything once it is back.
A permanent refusal (another 4xx, a recipient that no longer exists) or `max_attempts` tries mark it
failed with the reason. Delivery is at-least-once: receivers de-duplicate with `X-MarketFleet-Delivery`.

Webhooks are signed: `X-MarketFleet-Signature: sha256=HEX(HMAC-SHA256(secret, f"{timestamp}.{body}"))`
with the Unix time in `X-MarketFleet-Timestamp`; `verify_signature` is the receiver's side.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import httpx
from pydantic import BaseModel, SecretStr

from rules.background import Repeating
from rules.models import Delivery, DeliveryStatus
from rules.routing import Router

__all__ = ["Outbox", "Publish", "SmtpSettings", "sign", "verify_signature"]

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes], Awaitable[None]]
SIGNATURE_HEADER = "X-MarketFleet-Signature"
TIMESTAMP_HEADER = "X-MarketFleet-Timestamp"
DELIVERY_HEADER = "X-MarketFleet-Delivery"


class SmtpSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 25
    sender: str = "marketfleet@localhost"
    username: str = ""
    password: SecretStr = SecretStr("")
    starttls: bool = False
    tls: bool = False  # implicit TLS (port 465)
    timeout_s: float = 10.0


class _Retry(Exception):
    """Worth trying again later."""


class _GiveUp(Exception):
    """Trying again will not help."""


def body_bytes(body: Any) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()


def sign(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(secret: str, timestamp: str, body: bytes, header: str, *, max_age_s: float = 300,
                     now: float | None = None) -> bool:
    """The receiver's check: right key, untouched body, and not a replay older than `max_age_s`."""
    try:
        age = abs((now if now is not None else time.time()) - int(timestamp))
    except ValueError:
        return False
    return age <= max_age_s and hmac.compare_digest(sign(secret, timestamp, body), header)


class Outbox:
    def __init__(
        self,
        router: Router,
        *,
        publish: Publish | None = None,
        smtp: SmtpSettings | None = None,
        http: httpx.AsyncClient | None = None,
        backoff_base: float = 5.0,
        backoff_max: float = 900.0,
        max_attempts: int = 50,
        batch: int = 50,
        timeout_s: float = 10.0,
    ) -> None:
        self.router, self.publish, self.smtp = router, publish, smtp
        self._http = http
        self._own_http = http is None
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        self.max_attempts, self.batch, self.timeout_s = max_attempts, batch, timeout_s
        self._next_wait = 0.0
        self._worker = Repeating(self._pass, lambda: self._next_wait, "rules-outbox")

    async def enqueue(self, rows: list[Delivery], *, wake: bool = True) -> None:
        """Store deliveries; `wake=False` when the caller's transaction is still open (it wakes after)."""
        if rows:
            await Delivery.bulk_create(rows)
            if wake:
                self._worker.wake()

    def wake(self) -> None:
        self._worker.wake()

    async def run_once(self) -> int:
        """Attempt every delivery that is due; returns how many were attempted."""
        now = datetime.now(UTC)
        due = await Delivery.filter(status=DeliveryStatus.PENDING, next_attempt_at__lte=now).order_by(
            "next_attempt_at", "id").limit(self.batch)
        if due:
            await asyncio.gather(*(self._attempt(row) for row in due))
        return len(due)

    async def _attempt(self, row: Delivery) -> None:
        row.attempts += 1
        try:
            if row.channel == "webhook":
                await self._webhook(row)
            elif row.channel == "email":
                await self._email(row)
            elif row.channel == "mqtt":
                await self._mqtt(row)
            else:
                raise _GiveUp(f"unknown channel {row.channel!r}")
        except _GiveUp as err:
            row.status, row.last_error = DeliveryStatus.FAILED, str(err)[:500]
        except Exception as err:  # every other failure is transient by assumption: retry with back-off
            row.last_error = f"{type(err).__name__}: {err}"[:500]
            if row.attempts >= self.max_attempts:
                row.status = DeliveryStatus.FAILED
            else:
                delay = min(self.backoff_base * 2 ** (row.attempts - 1), self.backoff_max)
                row.next_attempt_at = datetime.now(UTC) + timedelta(seconds=delay * random.uniform(1.0, 1.1))
        else:
            row.status, row.delivered_at, row.last_error = DeliveryStatus.DELIVERED, datetime.now(UTC), ""
        await row.save(update_fields=["attempts", "status", "last_error", "next_attempt_at", "delivered_at"])

    async def _webhook(self, row: Delivery) -> None:
        recipient = self.router.recipient(row.recipient_id) if row.recipient_id is not None else None
        channel = next((c for c in recipient.channels if c.get("type") == "webhook" and c.get("url") == row.target),
                       None) if recipient else None
        if channel is None:
            raise _GiveUp("the recipient or its webhook no longer exists")
        body = body_bytes({**row.body, "delivery_id": row.id})
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(channel["secret"], timestamp, body),
            TIMESTAMP_HEADER: timestamp,
            DELIVERY_HEADER: str(row.id),
            "X-MarketFleet-Event": str(row.body.get("event", "")),
        }
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.timeout_s)
        try:
            response = await self._http.post(row.target, content=body, headers=headers)
        except httpx.HTTPError as err:
            raise _Retry(f"{type(err).__name__}: {err}") from err
        if response.status_code < 300:
            return
        if response.status_code >= 500 or response.status_code in (408, 425, 429):
            raise _Retry(f"HTTP {response.status_code}")
        raise _GiveUp(f"HTTP {response.status_code}: {response.text[:200]}")

    async def _email(self, row: Delivery) -> None:
        import aiosmtplib  # only the e-mail channel needs it

        if self.smtp is None:
            raise _GiveUp("no SMTP server configured")
        message = EmailMessage()
        message["From"] = self.smtp.sender
        message["To"] = row.target
        message["Subject"] = row.body.get("subject", "MarketFleet alert")
        message["Message-ID"] = f"<alert-delivery-{row.id}@marketfleet>"
        message.set_content(row.body.get("text", ""))
        try:
            await aiosmtplib.send(
                message,
                hostname=self.smtp.host,
                port=self.smtp.port,
                username=self.smtp.username or None,
                password=self.smtp.password.get_secret_value() or None,
                start_tls=self.smtp.starttls,
                use_tls=self.smtp.tls,
                timeout=self.smtp.timeout_s,
            )
        except aiosmtplib.SMTPRecipientsRefused as err:
            raise _GiveUp(f"address refused: {err}") from err
        except (aiosmtplib.SMTPException, OSError) as err:
            raise _Retry(f"{type(err).__name__}: {err}") from err

    async def _mqtt(self, row: Delivery) -> None:
        if self.publish is None:
            raise _GiveUp("no MQTT publisher configured")
        await self.publish(row.target, body_bytes(row.body))

    async def _pass(self) -> None:
        self._next_wait = 1.0  # after a failed pass
        attempted = await self.run_once()
        if attempted >= self.batch:
            self._next_wait = 0.0
            return
        upcoming = await Delivery.filter(status=DeliveryStatus.PENDING).order_by("next_attempt_at").first()
        self._next_wait = 5.0
        if upcoming is not None:
            self._next_wait = min(max((upcoming.next_attempt_at - datetime.now(UTC)).total_seconds(), 0.02), 5.0)

    async def start(self) -> None:
        self._worker.start()

    async def aclose(self) -> None:
        await self._worker.stop()
        if self._own_http and self._http is not None:
            await self._http.aclose()
            self._http = None
