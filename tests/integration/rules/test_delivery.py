"""Notifications over real sockets: a webhook receiver that is down gets the alert once it is back, signed;
e-mail arrives at a local aiosmtpd server."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from aiosmtpd.controller import Controller

from rules import RulesService, RulesSettings, SmtpSettings, verify_signature
from rules.models import Delivery, DeliveryStatus
from rules.schemas import RecipientCreate
from tests.factories import eventually
from tests.integration.rules.conftest import FAST, forget_routing_and_state, start_service
from tests.services import find_free_port
from tests.unit.rules.factories import envelope

pytestmark = pytest.mark.timeout(90)

SECRET = "receiver-shared-secret-0123"


class WebhookReceiver:
    """A real HTTP server (uvicorn) that records what it is sent and checks each signature."""

    def __init__(self) -> None:
        self.port = find_free_port()
        self.received: list[dict[str, Any]] = []
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/alerts"

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.received.append({
            "headers": headers,
            "body": json.loads(body),
            "signed": verify_signature(SECRET, headers["x-marketfleet-timestamp"], body,
                                       headers["x-marketfleet-signature"]),
        })
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def start(self) -> None:
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off",
                                interface="asgi3")
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        await eventually(lambda: asyncio.sleep(0, result=self._server.started), within=10)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await asyncio.wait_for(self._task, 10)


class Inbox:
    """aiosmtpd handler keeping every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[dict[str, str]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        from email import message_from_bytes

        message = message_from_bytes(envelope.content)
        self.messages.append({"to": ",".join(envelope.rcpt_tos), "subject": str(message["Subject"]),
                              "body": message.get_payload(decode=True).decode()})
        return "250 Message accepted for delivery"


async def test_a_webhook_receiver_that_is_down_gets_the_alert_when_it_is_back(rules_service: RulesService):
    receiver = WebhookReceiver()
    await rules_service.create_recipient(RecipientCreate(
        name="ops", role="admin", channels=[{"type": "webhook", "url": receiver.url, "secret": SECRET}]))
    rules_service.process(envelope("FP-W1", "fire_panel", {"type": "fire_alarm", "zone": "Z3"}, market="MW",
                                     at=datetime.now(UTC)))

    retrying = await eventually(lambda: Delivery.filter(channel="webhook", attempts__gte=3).first())
    assert retrying.status == DeliveryStatus.PENDING and "ConnectError" in retrying.last_error

    await receiver.start()
    try:
        delivered = await eventually(lambda: Delivery.filter(id=retrying.id, status=DeliveryStatus.DELIVERED).first())
        [request] = receiver.received
        assert request["signed"]
        assert request["headers"]["x-marketfleet-delivery"] == str(delivered.id)
        assert request["body"]["event"] == "alert.opened"
        assert (request["body"]["alert"]["device_id"], request["body"]["alert"]["element"]) == ("FP-W1", "Z3")
        assert delivered.attempts >= 4
    finally:
        await receiver.stop()


async def test_a_permanent_refusal_is_not_retried(rules_service: RulesService):
    receiver = WebhookReceiver()
    receiver.app = _refuse_with_400  # type: ignore[method-assign]
    await receiver.start()
    try:
        await rules_service.create_recipient(RecipientCreate(
            name="strict", role="admin", channels=[{"type": "webhook", "url": receiver.url, "secret": SECRET}]))
        rules_service.process(envelope("FP-W2", "fire_panel", {"type": "fire_alarm", "zone": "Z1"},
                                         at=datetime.now(UTC)))
        failed = await eventually(lambda: Delivery.filter(channel="webhook", status=DeliveryStatus.FAILED).first())
        assert failed.attempts == 1 and "HTTP 400" in failed.last_error
    finally:
        await receiver.stop()


async def _refuse_with_400(scope: dict[str, Any], receive: Any, send: Any) -> None:
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 400, "headers": []})
    await send({"type": "http.response.body", "body": b"unknown event"})


async def test_an_alert_email_arrives_at_the_smtp_server(platform, tmp_path: Path):
    inbox = Inbox()
    port = find_free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    settings = RulesSettings(**{**FAST.model_dump(), "smtp": SmtpSettings(host="127.0.0.1", port=port,
                                                                          sender="alerts@market.test")})
    service = await start_service(tmp_path, settings)
    try:
        await service.create_recipient(RecipientCreate(name="manager", role="manager", markets=["ME"], channels=[
            {"type": "email", "address": "zhang@market.test"}]))
        service.process(envelope("FP-E1", "fire_panel", {"type": "fire_alarm", "zone": "Hall B"}, market="ME",
                                  at=datetime.now(UTC)))
        [message] = await eventually(lambda: asyncio.sleep(0, result=inbox.messages), within=15)
        assert message["to"] == "zhang@market.test"
        assert message["subject"].startswith("[MarketFleet][critical] FIRE ALARM: panel FP-E1, zone Hall B")
        assert "Rule:      Fire alarm (fire-alarm)" in message["body"]
        delivery = await Delivery.get(channel="email")
        assert delivery.status == DeliveryStatus.DELIVERED
    finally:
        await service.aclose()
        controller.stop()
        await forget_routing_and_state()


async def test_mqtt_alerts_go_through_the_injected_publisher(platform, tmp_path: Path):
    published: list[tuple[str, bytes]] = []

    async def publish(topic: str, payload: bytes) -> None:
        published.append((topic, payload))

    service = await start_service(tmp_path, publish=publish)
    try:
        await service.create_recipient(RecipientCreate(name="screen", role="admin", channels=[{"type": "mqtt"}]))
        service.process(envelope("TH-M1", "thermometer", {"type": "fever", "entrance": "east", "body_temp_c": 38.4},
                                 market="MQ", at=datetime.now(UTC)))
        [(topic, payload)] = await eventually(lambda: asyncio.sleep(0, result=published))
        assert topic == "mf/v1/MQ/alerts/warning"
        assert json.loads(payload)["alert"]["message"] == "Fever at entrance east: 38.4 °C"
    finally:
        await service.aclose()
        await forget_routing_and_state()
