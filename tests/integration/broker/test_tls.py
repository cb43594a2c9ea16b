"""MQTT over TLS on the embedded broker: a device that trusts the platform's CA connects on 8883 and its
messages are stored and acknowledged; in TLS-only mode the plain port is closed; a client that does not trust
the certificate is refused at the handshake."""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path

import aiomqtt
import pytest

from broker import topics
from broker.service import BrokerParams, setup
from fleet.registry import Registry
from marketfleet.certs import make_dev_certificates
from telemetry import SqliteStore
from tests.integration.broker.conftest import env_payload, register
from tests.services import find_free_port

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("only", [False, True], ids=["plain-and-tls", "tls-only"])
async def test_a_device_talks_mqtt_over_tls(registry: Registry, store: SqliteStore, tmp_path: Path,
                                           only: bool) -> None:
    certs = make_dev_certificates(tmp_path / "certs")
    plain_port, tls_port = find_free_port(), find_free_port()
    params = BrokerParams(mode="embedded", port=plain_port, tls_port=tls_port, tls_cert_file=str(certs.server_cert),
                          tls_key_file=str(certs.server_key), tls_only=only)
    service = setup(params, registry, store)
    await service.start()
    try:
        (device_id, secret), = (await register(registry, 1)).items()
        trust = ssl.create_default_context(cafile=str(certs.ca_cert))
        async with aiomqtt.Client("127.0.0.1", tls_port, identifier=device_id, username=device_id, password=secret,
                                  tls_context=trust) as client:
            await client.subscribe(topics.device_down_filter("M1", device_id), qos=1)
            body = json.dumps({"seq": 1, "payload": env_payload()})
            await client.publish(topics.up_topic("M1", device_id, "telemetry"), body, qos=1)
            async with asyncio.timeout(10):
                async for message in client.messages:
                    if str(message.topic).endswith("/down/ack"):
                        assert json.loads(message.payload)["seqs"] == [1]
                        break
        assert await store.count(device_id) == 1

        plain = aiomqtt.Client("127.0.0.1", plain_port, identifier=device_id, username=device_id, password=secret)
        if only:
            with pytest.raises(aiomqtt.MqttError):
                async with plain:
                    pass
        else:
            async with plain:
                pass  # plain MQTT still served beside TLS unless tls.only

        untrusting = aiomqtt.Client("127.0.0.1", tls_port, identifier=device_id, username=device_id, password=secret,
                                    tls_context=ssl.create_default_context())
        with pytest.raises(aiomqtt.MqttError):
            async with untrusting:
                pass
    finally:
        await service.aclose()
