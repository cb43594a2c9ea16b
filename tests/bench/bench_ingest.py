"""`marketfleet bench ingest`: readings/s from devices to the durable store, against the broker's raw rate.

Each configuration is measured twice in the same run with the same load generator and the same messages:
the broker alone relaying them to one subscriber that stores nothing (the baseline), then the full ingest path —
authenticated devices, decode + schema validation + dedup, a durable write, an application ack back to every
device, which only then sends more (a window of 20 uplinks in flight per device, like its outbox). The
`vs broker` column is ingest ÷ baseline.

(a) embedded amqtt (our IndexedBroker) + SQLite, (b) Mosquitto + one ingest worker + SQLite, (c) Mosquitto +
one worker + InfluxDB, (d) Mosquitto + two worker processes (`$share/`) + InfluxDB; (a') and (c') send 10 readings
per uplink (a JSON array of 10 messages, which devices may batch from their outbox), so `readings/s` is 10 × the
`msgs/s` (uplinks/s) there, compared with the 1-reading baseline. Then p99 device→stored
latency (publish → its ack, which is sent after the write) at 50 % of the measured maximum of (c), and memory
per connected device at 2,000 authenticated, subscribed connections (embedded broker process, and Mosquitto).

The broker (and ingest) processes run pinned to one core, the load to the other (two-core machines).
Run from the repository root: `marketfleet bench ingest` (`--quick`: fewer messages and 500 connections).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import psutil

from tests.bench.bench_broker import (
    TS0,
    ServerProcess,
    _close_all,
    _pin,
    _pin_pid,
    connect_idle,
    ingest_throughput,
    relay_throughput,
)
from tests.integration.broker.mqtt_wire import WireClient
from tests.services import InfluxServer, MosquittoServer, find_free_port

PUBLISHERS = 10
WINDOW = 20  # uplinks in flight per device (paho's default), the same in the baseline and the ingest runs


class _BenchMosquitto(MosquittoServer):
    """The test Mosquitto plus `set_tcp_nodelay true`, as docs/broker.md configures it for ingest: without it
    Nagle holds Mosquitto's small writes (a delivery to the worker, an ack to a device) until the peer's delayed
    ACK, and each device's window of 20 uplinks waited ~44 ms per round trip whatever the worker cost (~4,500/s).
    The baseline (`broker raw`) runs on the same configuration."""

    def _prepare(self) -> None:
        super()._prepare()
        self.config_path.write_text(self.config_path.read_text() + "set_tcp_nodelay true\n")


def _mosquitto() -> MosquittoServer:
    server = _BenchMosquitto(dynsec=False).start()
    _pin_pid(server.proc.pid if server.proc else 0, 0)
    return server


async def _relay(mode: str, messages: int) -> float:
    """Baseline: the broker alone, 10 QoS 1 publishers → 1 QoS 1 subscriber, same messages, nobody storing."""
    if mode == "mosquitto":
        mosquitto = _mosquitto()
        try:
            return await relay_throughput(mosquitto.port, publishers=PUBLISHERS, messages=messages, window=WINDOW)
        finally:
            mosquitto.close()
    port = find_free_port()
    server = ServerProcess("indexed", port)
    try:
        return await relay_throughput(port, publishers=PUBLISHERS, messages=messages, window=WINDOW)
    finally:
        server.close()


async def _embedded(messages: int, per_uplink: int = 1) -> float:
    port = find_free_port()
    server = ServerProcess("embedded", port, devices=PUBLISHERS)
    try:
        return await ingest_throughput(port, server.creds, messages, per_uplink, window=WINDOW)
    finally:
        server.close()


async def _external(messages: int, influx: str, processes: int, per_uplink: int = 1
                    ) -> tuple[float, list[dict[str, Any]]]:
    mosquitto = _mosquitto()
    servers = [ServerProcess("external", mosquitto.port, devices=PUBLISHERS, influx=influx)
               for _ in range(processes)]
    try:
        ids = sorted(servers[0].creds)
        rate = await ingest_throughput(mosquitto.port, {d: "" for d in ids}, messages, per_uplink, window=WINDOW,
                                       anonymous=True)
    finally:
        for server in servers:
            server.close()
        mosquitto.close()
    return rate, [s.stats.get("workers", {}) for s in servers]


async def latency_p99(port: int, device_ids: list[str], rate: float, seconds: float) -> tuple[float, float, int]:
    """Paced load at `rate` uplinks/s spread over the devices; returns (p50 ms, p99 ms, samples)."""
    clients = []
    for device_id in device_ids:
        client = WireClient()
        assert await client.connect("127.0.0.1", port, device_id, keepalive=900) == 0
        await client.subscribe([(f"mf/v1/M1/{device_id}/down/ack", 1)])
        clients.append(client)
    per_device = max(1, int(rate * seconds / len(device_ids)))
    interval = len(device_ids) / rate
    latencies: list[float] = []

    async def device(client: WireClient, device_id: str) -> None:
        topic = f"mf/v1/M1/{device_id}/up/telemetry"
        sent: dict[int, float] = {}

        async def read_acks() -> None:
            while True:
                _topic, payload = await client.messages.get()
                now = time.perf_counter()
                for seq in json.loads(payload)["seqs"]:
                    started = sent.pop(seq, None)
                    if started is not None:
                        latencies.append((now - started) * 1000)
                if done.is_set() and not sent:  # done is set right after the last publish, before its ack
                    return

        done = asyncio.Event()
        reader = asyncio.create_task(read_acks())
        start = time.perf_counter()
        for seq in range(per_device):
            delay = start + seq * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            body = {"seq": seq, "ts": TS0 + seq, "payload": {"temperature_c": 4.2, "humidity_pct": 81.0}}
            sent[seq] = time.perf_counter()
            client.publish_nowait(topic, json.dumps(body).encode(), 1)
        done.set()
        await asyncio.wait_for(reader, 60)

    await asyncio.gather(*(device(c, d) for c, d in zip(clients, device_ids, strict=True)))
    await _close_all(clients)
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]  # noqa: E731
    return pick(0.50), pick(0.99), len(latencies)


async def _latency_case(influx: str, rate: float, seconds: float) -> dict[str, Any]:
    mosquitto = _mosquitto()
    server = ServerProcess("external", mosquitto.port, devices=PUBLISHERS, influx=influx)
    try:
        p50, p99, n = await latency_p99(mosquitto.port, sorted(server.creds), rate, seconds)
    finally:
        server.close()
        mosquitto.close()
    return {"case": "(c) latency at 50 % of its max", "msgs/s": round(rate), "p50 ms": round(p50, 1),
            "p99 ms": round(p99, 1), "note": f"{n:,} samples, publish → ack (sent after the write)"}


async def _memory(pid: int, port: int, ids: list[str], creds: dict[str, str] | None) -> tuple[float, float, float]:
    """Connect the first half, then the second: (RSS MiB at all, KiB per device of the second half, connect s).
    The second half is measured because the first reuses memory the process freed before (registration)."""
    proc = psutil.Process(pid)
    half = len(ids) // 2
    first, s1 = await connect_idle(port, ids[:half], creds)
    await asyncio.sleep(1)
    middle = proc.memory_info().rss / 2**20
    second, s2 = await connect_idle(port, ids[half:], creds)
    await asyncio.sleep(1)
    after = proc.memory_info().rss / 2**20
    await _close_all(first + second)
    return after, (after - middle) * 1024 / (len(ids) - half), s1 + s2


async def _memory_case(connections: int) -> list[dict[str, Any]]:
    port = find_free_port()
    server = ServerProcess("embedded", port, devices=connections)
    try:
        creds = server.creds
        rss, per, connect_s = await _memory(server.info["pid"], port, sorted(creds), creds)
    finally:
        server.close()
    rows = [{"case": f"embedded: {connections:,} devices connected", "RSS MiB": round(rss),
             "KiB/device": round(per, 1), "note": f"authenticated + subscribed in {connect_s:.1f} s"}]
    mosquitto = _mosquitto()
    try:
        pid = mosquitto.proc.pid if mosquitto.proc else 0
        rss, per, connect_s = await _memory(pid, mosquitto.port, [f"dev-{i}" for i in range(connections)], None)
    finally:
        mosquitto.close()
    rows.append({"case": f"Mosquitto: {connections:,} devices connected", "RSS MiB": round(rss, 1),
                 "KiB/device": round(per, 1), "note": f"anonymous, subscribed in {connect_s:.1f} s"})
    return rows


async def run(console: Any, quick: bool = False) -> list[dict[str, Any]]:
    messages = 5_000 if quick else 20_000
    rows: list[dict[str, Any]] = []
    _pin(1)

    def note(row: dict[str, Any]) -> None:
        rows.append(row)
        console.print(row)

    def pair(case: str, baseline: float, rate: float, per_uplink: int = 1, extra: str = "") -> None:
        note({"case": case, "broker raw msgs/s": round(baseline), "msgs/s": round(rate),
              "readings/s": round(rate * per_uplink), "vs broker": round(rate / baseline, 2), "note": extra})

    indexed = await _relay("indexed", messages)
    pair("(a) embedded amqtt + SQLite", indexed, await _embedded(messages))
    batched = await _embedded(messages * 5, per_uplink=10)
    pair("(a') same, 10 readings per uplink", indexed, batched, 10, "baseline: 1-reading messages")
    mosq = await _relay("mosquitto", messages)
    rate_b, _ = await _external(messages, "", 1)
    pair("(b) Mosquitto + 1 worker + SQLite", mosq, rate_b)
    influx = InfluxServer().start()
    try:
        rate_c, _ = await _external(messages, influx.url, 1)
        pair("(c) Mosquitto + 1 worker + InfluxDB", mosq, rate_c)
        rate_c10, _ = await _external(messages * 5, influx.url, 1, per_uplink=10)
        pair("(c') same, 10 readings per uplink", mosq, rate_c10, 10, "baseline: 1-reading messages")
        rate_d, workers = await _external(messages, influx.url, 2)
        shares = [sum(w.get("received", 0) for w in ws.values()) for ws in workers]
        pair("(d) Mosquitto + 2 workers + InfluxDB", mosq, rate_d, extra=f"messages per worker: {shares}")
        note(await _latency_case(influx.url, rate_c / 2, 5 if quick else 15))
    finally:
        influx.close()
    for row in await _memory_case(500 if quick else 2000):
        note(row)
    return rows
