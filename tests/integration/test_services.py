"""The private test services really work, through the session fixtures.

If these fail, every integration test that needs a database, a time-series
store or a broker is meaningless, so they check the exact behaviours the rest
of the suite leans on: SQL over asyncpg, InfluxDB line protocol + InfluxQL and
surviving an outage, Mosquitto dynamic-security client management and auth.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid

import aiomqtt
import asyncpg
import httpx
import pytest

from tests.conftest import require_service
from tests.services import InfluxServer, MosquittoServer, PostgresServer, ServiceError, mqtt_connect_rc


async def test_postgres_accepts_queries_on_dsn(postgres_server: PostgresServer) -> None:
    conn = await asyncpg.connect(postgres_server.dsn)
    try:
        assert await conn.fetchval("SELECT 40 + 2") == 42
        assert await conn.fetchval("SELECT current_user") == "postgres"
    finally:
        await conn.close()


async def test_postgres_create_database(postgres_server: PostgresServer) -> None:
    name = f"t_{uuid.uuid4().hex[:12]}"
    dsn = postgres_server.create_database(name)
    assert dsn == f"postgres://postgres@127.0.0.1:{postgres_server.port}/{name}"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TABLE t (id int PRIMARY KEY)")
        await conn.execute("INSERT INTO t VALUES (1), (2)")
        assert await conn.fetchval("SELECT count(*) FROM t") == 2
        assert await conn.fetchval("SELECT current_database()") == name
    finally:
        await conn.close()
    postgres_server.drop_database(name)


def _influx_create_db(client: httpx.Client, name: str) -> None:
    resp = client.post("/query", data={"q": f'CREATE DATABASE "{name}"'})
    resp.raise_for_status()
    assert "error" not in resp.json()["results"][0]


def _influx_values(client: httpx.Client, db: str, q: str) -> list[list[object]]:
    resp = client.get("/query", params={"db": db, "q": q, "epoch": "s"})
    resp.raise_for_status()
    series = resp.json()["results"][0].get("series", [])
    return series[0]["values"] if series else []


def test_influx_write_and_query(influx_server: InfluxServer) -> None:
    db = f"t_{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=influx_server.url, timeout=10) as client:
        assert client.get("/ping").status_code == 204
        _influx_create_db(client, db)
        lines = "temp,device=d1 value=21.5 1700000000\ntemp,device=d2 value=19 1700000001"
        resp = client.post("/write", params={"db": db, "precision": "s"}, content=lines)
        assert resp.status_code == 204, resp.text
        values = _influx_values(client, db, "SELECT value, device FROM temp ORDER BY time")
    assert values == [[1700000000, 21.5, "d1"], [1700000001, 19, "d2"]]


def test_influx_outage_then_restart_keeps_data(influx_server: InfluxServer) -> None:
    db = f"t_{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=influx_server.url, timeout=5) as client:
        _influx_create_db(client, db)
        resp = client.post("/write", params={"db": db, "precision": "s"}, content="m v=1i 1700000000")
        assert resp.status_code == 204, resp.text
        influx_server.stop()
        try:
            with pytest.raises(httpx.ConnectError):
                client.post("/write", params={"db": db, "precision": "s"}, content="m v=2i 1700000001")
        finally:
            started = time.monotonic()
            influx_server.start()  # same dirs, same port: the session fixture stays usable
        assert time.monotonic() - started < 30
        resp = client.post("/write", params={"db": db, "precision": "s"}, content="m v=3i 1700000002")
        assert resp.status_code == 204, resp.text
        assert _influx_values(client, db, "SELECT v FROM m") == [[1700000000, 1], [1700000002, 3]]


def test_mosquitto_dynsec_client_auth(mosquitto_server: MosquittoServer) -> None:
    user = f"dev-{uuid.uuid4().hex[:8]}"
    response = mosquitto_server.dynsec(
        [
            {
                "command": "createRole",
                "rolename": f"{user}-role",
                "acls": [
                    {"acltype": "publishClientSend", "topic": "t/#", "allow": True},
                    {"acltype": "subscribePattern", "topic": "t/#", "allow": True},
                ],
            },
            {
                "command": "createClient",
                "username": user,
                "password": "right-password",
                "roles": [{"rolename": f"{user}-role", "priority": 1}],
            },
            {"command": "listClients"},
        ]
    )
    results = response["responses"]
    assert [r.get("error") for r in results] == [None, None, None], results
    assert user in results[2]["data"]["clients"]

    host, port = mosquitto_server.host, mosquitto_server.port
    assert mqtt_connect_rc(host, port, user, "right-password") == 0
    assert mqtt_connect_rc(host, port, user, "wrong-password") == 5  # CONNACK "not authorised"
    assert mqtt_connect_rc(host, port) == 5  # anonymous is refused with dynsec on


async def test_mosquitto_dynsec_acl_applies(mosquitto_server: MosquittoServer) -> None:
    """The role's ACL is enforced: publishes to t/# are delivered, others are dropped."""
    user = f"dev-{uuid.uuid4().hex[:8]}"
    mosquitto_server.dynsec(
        [
            {
                "command": "createRole",
                "rolename": f"{user}-role",
                "acls": [
                    {"acltype": "publishClientSend", "topic": "t/#", "allow": True},
                    {"acltype": "subscribePattern", "topic": "#", "allow": True},
                ],
            },
            {
                "command": "createClient",
                "username": user,
                "password": "pw",
                "roles": [{"rolename": f"{user}-role"}],
            },
        ]
    )
    async with aiomqtt.Client(
        mosquitto_server.host, mosquitto_server.port, identifier=user, username=user, password="pw"
    ) as client:
        # Not "#": the session broker holds other tests' retained device status messages.
        await client.subscribe([("t/#", 1), ("u/#", 1)])
        await client.publish("u/denied", b"no", qos=1)
        await client.publish("t/allowed", b"yes", qos=1)
        async with asyncio.timeout(5):
            message = await anext(aiter(client.messages))
    assert (str(message.topic), message.payload) == ("t/allowed", b"yes")


def test_mosquitto_plain_anonymous_broker() -> None:
    require_service(MosquittoServer)
    with MosquittoServer(dynsec=False) as broker:
        assert mqtt_connect_rc(broker.host, broker.port) == 0
    assert not broker.running


def test_readiness_failure_reports_log_tail() -> None:
    require_service(MosquittoServer)
    broker = MosquittoServer(dynsec=False)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", broker.port))
        squatter.listen()
        with pytest.raises(ServiceError, match="Address already in use"):
            broker.start()
    broker.close()
