"""`marketfleet bench rules`: the rules engine's throughput, and alert latency through the whole platform.

* **evaluator**: `RuleEngine.process` alone over a realistic mix of envelopes (environment sensors, cold-chain
  lockers with four compartments, scale transactions feeding the price/volume baselines) from 2,000 devices in
  40 markets, with 500 rules active (the built-in pack plus 12 rules per market). Baseline in the same run: the
  same envelopes through an engine with no rules (the per-envelope bookkeeping only); `vs no rules` is the
  ratio of throughputs. One core: the engine is synchronous.
* **latency**: a platform in this process (SQLite registry and telemetry, the embedded broker, the API over
  uvicorn), the same 500 rules, readings entering ingest (`IngestPipeline.enqueue`, what every transport
  calls) at a steady rate from 2,000 devices; one reading in 500 crosses a rule's threshold (the device's
  next reading clears it, so every crossing opens a new alert). Latency is from just before the triggering
  reading is enqueued to its `alert.opened` event arriving on the server-sent event stream
  (`GET /api/v1/alerts/stream`) over HTTP, split at the bus (when ingest hands the envelope on). Load
  generator, platform and SSE reader share this process (and its one event loop), so this is an upper bound
  on what a platform with its own process would show.

Run: `marketfleet bench rules` (`--quick` for a shorter run).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import random
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from fleet.envelope import Envelope
from rules import RuleEngine, load_pack, parse_rule
from rules.packs import BUILTIN_PACK

MARKETS = [f"BM{n:02d}" for n in range(40)]
DEVICES = 2000
TRIGGER_EVERY = 500  # one reading in this many crosses the hot threshold (10 alerts/s at 5,000 readings/s)
SPACING_S = 10.0  # a device's readings are this far apart in reading time (ts), as a real sensor's would be
HOT_THRESHOLD, HOT_CLEAR = 32.0, 28.0
PRODUCTS = ["spinach", "pork", "eggs", "tofu", "apples", "carp"]


def market_rules() -> list[dict[str, Any]]:
    """12 rules per market (480) that evaluate on every reading in their market and stay quiet on normal data;
    `bench-hot-<market>` is the one the latency run crosses."""
    rules: list[dict[str, Any]] = []
    for n, market in enumerate(MARKETS):
        m = market.lower()
        scope_env = {"kind": "env_sensor", "markets": [market]}
        scope_locker = {"kind": "cold_locker", "markets": [market]}
        scope_sale = {"kind": "scale", "channel": "event", "event_type": "transaction", "markets": [market]}
        rules += [
            {"id": f"bench-hot-{m}", "name": "Hall hot", "scope": scope_env,
             "condition": {"type": "threshold", "field": "temperature_c", "op": ">", "value": HOT_THRESHOLD,
                           "clear": HOT_CLEAR}},
            {"id": f"bench-cold-{m}", "name": "Hall cold", "scope": scope_env,
             "condition": {"type": "threshold", "field": "temperature_c", "op": "<", "value": -5 - n % 3}},
            {"id": f"bench-humid-{m}", "name": "Humid", "scope": scope_env, "for": "10m",
             "condition": {"type": "threshold", "field": "humidity_pct", "op": ">", "value": 95, "clear": 90}},
            {"id": f"bench-dry-{m}", "name": "Dry", "scope": scope_env,
             "condition": {"type": "range", "field": "humidity_pct", "min": 10, "max": 99}},
            {"id": f"bench-rate-{m}", "name": "Temperature jump", "scope": scope_env,
             "condition": {"type": "change_rate", "field": "temperature_c", "limit": 50, "per": "1m"}},
            {"id": f"bench-locker-{m}", "name": "Locker band", "scope": scope_locker, "for": "5m",
             "condition": {"type": "range", "field": "compartments[].temperature_c", "min": -10, "max": 20}},
            {"id": f"bench-door-{m}", "name": "Door ajar", "scope": scope_locker, "for": "30m",
             "condition": {"type": "match", "where": [{"field": "compartments[].door", "op": "==",
                                                        "value": "open"}]}},
            {"id": f"bench-locker-hot-{m}", "name": "Locker far too warm", "scope": scope_locker,
             "condition": {"type": "threshold", "field": "compartments[].temperature_c", "op": ">", "value": 25}},
            {"id": f"bench-heavy-{m}", "name": "Heavy order", "scope": scope_sale,
             "condition": {"type": "threshold", "field": "weight_kg", "op": ">", "value": 200}},
            {"id": f"bench-pricey-{m}", "name": "Price cap", "scope": scope_sale,
             "condition": {"type": "threshold", "field": "unit_price", "op": ">", "value": 500}},
            {"id": f"bench-free-{m}", "name": "Zero price", "scope": scope_sale,
             "condition": {"type": "match", "where": [{"field": "unit_price", "op": "<=", "value": 0}]}},
            {"id": f"bench-sensor-quiet-{m}", "name": "Sensor quiet", "scope": scope_env,
             "condition": {"type": "missing", "after": "6h"}},
        ]
    return rules


def all_rules() -> list[Any]:
    rules = load_pack(BUILTIN_PACK) + [parse_rule(r) for r in market_rules()]
    rules.append(parse_rule({"id": "bench-any-offline", "name": "Anything offline", "for": "1h",
                             "condition": {"type": "offline"}}))
    return rules[:500]


def device_plan() -> list[tuple[str, str, str]]:
    """(device id, kind, market): 60 % environment sensors, 25 % lockers, 15 % scales; each device's readings
    are `SPACING_S` apart in reading time."""
    plan = []
    for n in range(DEVICES):
        kind = "env_sensor" if n % 20 < 12 else "cold_locker" if n % 20 < 17 else "scale"
        plan.append((f"bench-D{n:05d}", kind, MARKETS[n % len(MARKETS)]))
    return plan


def payload_for(kind: str, rng: random.Random, hot: bool = False) -> dict[str, Any]:
    if kind == "env_sensor":
        # A warm hall (26–28 °C): a crossing is a step of a few degrees, not a jump a rate rule would flag.
        return {"temperature_c": HOT_THRESHOLD + 1 if hot else round(rng.uniform(26, 28), 1),
                "humidity_pct": round(rng.uniform(50, 70), 1), "co2_ppm": rng.randint(500, 900)}
    if kind == "cold_locker":
        return {"compartments": [{"compartment": c, "temperature_c": round(rng.uniform(3, 6), 1),
                                  "door": "closed_locked"} for c in range(1, 5)]}
    product = rng.choice(PRODUCTS)
    price = round(10 * (1 + PRODUCTS.index(product)) * rng.uniform(0.9, 1.1), 2)
    weight = round(rng.uniform(0.2, 3), 3)
    return {"type": "transaction", "order_no": f"O{rng.randrange(10**9)}", "time": "2026-11-23T08:00:00+08:00",
            "market_code": "BM00", "stall_no": "A-01", "scale_id": "S1", "product_name": product,
            "weight_kg": weight, "unit_price": price, "total": round(price * weight, 2)}


# ==================================================================== the evaluator alone


def _envelopes(count: int) -> list[Envelope]:
    rng = random.Random(7)
    plan = device_plan()
    t0 = datetime(2026, 11, 23, tzinfo=UTC)
    out = []
    for i in range(count):
        device_id, kind, market = plan[i % len(plan)]
        payload = payload_for(kind, rng)
        out.append(Envelope.model_construct(
            device_id=device_id, kind=kind, market=market, channel="event" if kind == "scale" else "telemetry",
            ts=t0 + timedelta(seconds=SPACING_S * i / len(plan)), seq=i // len(plan), payload=payload,
            received_at=t0,
            transport="bench"))
    return out


def _pass(engine: RuleEngine, envelopes: list[Envelope]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) for one pass; CPU time is what "per core" means on a
    machine whose cores are shared with other work."""
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    process = engine.process
    for envelope in envelopes:
        process(envelope)
    return time.perf_counter() - wall, time.process_time() - cpu


def evaluator(quick: bool) -> list[dict[str, Any]]:
    """Three timed passes over successive slices (time only moves forward, as it does live); the best counts."""
    n, warm = (50_000 if quick else 200_000), 20_000
    envelopes = _envelopes(warm + 3 * n)
    # The prepared envelopes (hundreds of thousands of objects) are input, not engine state: keep the cyclic
    # GC from rescanning them in every full collection, which would otherwise dominate the larger runs.
    gc.collect()
    gc.freeze()
    rules = all_rules()
    rows = []
    results = {}
    for case, engine_rules in (("no rules (baseline)", []), (f"{len(rules)} rules", rules)):
        engine = RuleEngine(engine_rules, clock=lambda: envelopes[-1].ts.timestamp())
        _pass(engine, envelopes[:warm])  # fill the plans, the baselines and the per-key state
        wall, cpu = min(_pass(engine, envelopes[warm + k * n:warm + (k + 1) * n]) for k in range(3))
        results[case] = n / cpu
        rows.append({"case": f"evaluator, {case}", "readings": n,
                     "readings/s per core": round(n / cpu), "µs/reading": round(1e6 * cpu / n, 2),
                     "readings/s wall": round(n / wall),
                     "vs no rules": round(results[case] / results["no rules (baseline)"], 3),
                     "note": "goal ≥ 50,000 readings/s per core" if engine_rules else "bookkeeping only"})
    gc.unfreeze()
    return rows


# ==================================================================== latency through the platform


async def _sse(client: httpx.AsyncClient, headers: dict[str, str], ready: asyncio.Event,
               arrived: dict[tuple[str, str], float], changed: asyncio.Event) -> None:
    async with client.stream("GET", "/api/v1/alerts/stream", headers=headers, timeout=None) as response:
        async for line in response.aiter_lines():
            if line == ": connected":
                ready.set()
            elif line.startswith("data: "):
                message = json.loads(line[6:])
                alert = message["alert"]
                if message["event"] == "alert.opened" and alert["rule_id"].startswith("bench-hot-"):
                    arrived.setdefault((alert["device_id"], json.dumps(alert.get("value"))), time.perf_counter())
                    changed.set()


@contextlib.asynccontextmanager
async def _platform(tmp: Path) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    from marketfleet.platform import running_platform
    from marketfleet.settings import load_settings
    from tests.factories import serve_api
    from tests.services import find_free_port

    settings = load_settings(None, data_dir=tmp, api={"admin_token": "bench-admin-token"},
                             broker={"port": find_free_port()}, coap={"port": find_free_port()})
    async with running_platform(settings) as platform, serve_api(platform.app) as client:
        yield platform, client


async def latency(quick: bool, rate: int = 5_000) -> list[dict[str, Any]]:
    from broker.uplink import Uplink

    seconds = 10 if quick else 30
    with tempfile.TemporaryDirectory() as tmp:
        async with _platform(Path(tmp)) as (platform, client):
            admin = {"Authorization": "Bearer bench-admin-token"}
            for market in MARKETS:
                await client.post("/api/v1/admin/markets", json={"code": market, "name": market}, headers=admin)
            key = (await client.post("/api/v1/admin/vendors", json={"code": "bench", "name": "Bench"},
                                     headers=admin)).json()["api_key"]
            plan = device_plan()
            rows = [{"serial": device_id.removeprefix("bench-"), "kind": kind, "market": market}
                    for device_id, kind, market in plan]
            registered = await client.post("/api/v1/vendor/devices", json={"devices": rows},
                                           headers={"X-API-Key": key}, timeout=300)
            registered.raise_for_status()
            service = platform.services["rules"]
            pack = {"name": "bench", "rules": [r.dump() for r in all_rules() if r.id.startswith("bench-")]}
            await service.import_pack(json.dumps(pack))
            await service.refresh_devices()
            active = len(service.engine.rules)
            pipeline = platform.services["pipeline"]

            ready, changed, arrived = asyncio.Event(), asyncio.Event(), {}
            reader = asyncio.create_task(_sse(client, admin, ready, arrived, changed))
            on_bus: dict[tuple[str, str], float] = {}
            watcher = asyncio.create_task(_watch_bus(platform.services["bus"], on_bus))
            await asyncio.wait_for(ready.wait(), 10)

            rng = random.Random(11)
            sent: dict[tuple[str, str], float] = {}
            seq: dict[str, int] = {}
            hot_next: set[str] = set()
            env_ids = [(d, m) for d, k, m in plan if k == "env_sensor"]

            async def send(device_id: str, kind: str, payload: dict[str, Any]) -> None:
                n = seq.get(device_id, 0)
                seq[device_id] = n + 1
                ts = datetime.fromtimestamp(min(ts0 + SPACING_S * n, time.time()), UTC).isoformat()
                body = json.dumps({"seq": n, "ts": ts, "payload": payload}).encode()
                await pipeline.enqueue(Uplink("mqtt", device_id, "event" if kind == "scale" else "telemetry", body,
                                              "json"))

            # Reading time runs SPACING_S per device round and ends about now (ingest refuses the future).
            rounds = rate * seconds / len(plan) + 1
            ts0 = time.time() - SPACING_S * rounds
            count, tick, began = 0, 0.01, time.perf_counter()
            per_tick = max(1, int(rate * tick))
            while time.perf_counter() - began < seconds:
                tick_start = time.perf_counter()
                for _ in range(per_tick):
                    if count % TRIGGER_EVERY == 0:  # a crossing, from a sensor that is not hot already
                        device_id = rng.choice([d for d, _ in env_ids if d not in hot_next])
                        value = round(HOT_THRESHOLD + 0.5 + (len(sent) % 1000) / 1000, 3)
                        sent[(device_id, json.dumps(value))] = time.perf_counter()
                        hot_next.add(device_id)
                        await send(device_id, "env_sensor", {**payload_for("env_sensor", rng), "temperature_c": value})
                    else:
                        device_id, kind, _ = plan[count % len(plan)]
                        hot_next.discard(device_id)  # a normal reading clears the last crossing
                        await send(device_id, kind, payload_for(kind, rng))
                    count += 1
                await asyncio.sleep(max(0.0, tick - (time.perf_counter() - tick_start)))
            offered = count / (time.perf_counter() - began)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):  # let the last alerts arrive
                    while len(arrived) < len(sent):
                        changed.clear()
                        await changed.wait()
            for task in (reader, watcher):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            stored = pipeline.stats.as_dict()

    total = sorted(1000 * (arrived[k] - t) for k, t in sent.items() if k in arrived)
    ingest = sorted(1000 * (on_bus[k] - t) for k, t in sent.items() if k in on_bus)
    rules_part = sorted(1000 * (arrived[k] - on_bus[k]) for k in arrived if k in on_bus)
    lost = len(sent) - len(total)

    def stats(values: list[float]) -> dict[str, Any]:
        def pct(q: float) -> float:
            return round(values[min(len(values) - 1, int(q / 100 * len(values)))], 1) if values else -1.0

        return {"p50 ms": pct(50), "p99 ms": pct(99), "max ms": round(values[-1], 1) if values else -1,
                "mean ms": round(statistics.fmean(values), 1) if values else -1}

    base = {"readings": count, "readings/s": round(offered)}
    return [
        {"case": f"latency ingest → SSE, {active} rules, asked {rate:,}/s", **base, "alerts": len(total),
         **stats(total), "note": f"goal p99 < 500 ms; {lost} of {len(sent)} not seen within 10 s"},
        {"case": "  of which enqueue → bus (ingest)", **base, "alerts": len(ingest), **stats(ingest),
         "note": f"ingest {json.dumps(_brief(stored))}"},
        {"case": "  of which bus → SSE (rules, alert write)", **base, "alerts": len(rules_part),
         **stats(rules_part), "note": "engine, alert row + event, stream, HTTP"},
    ]


async def _watch_bus(bus: Any, seen: dict[tuple[str, str], float]) -> None:
    """When each crossing reading leaves ingest (published on the bus, as the rules service receives it)."""
    subscription = bus.subscribe(maxsize=1_000_000, name="bench")
    try:
        async for envelope in subscription:
            if envelope.kind == "env_sensor" and envelope.channel == "telemetry":
                value = envelope.payload.get("temperature_c")
                if isinstance(value, int | float) and value > HOT_THRESHOLD:
                    seen.setdefault((envelope.device_id, json.dumps(value)), time.perf_counter())
    finally:
        subscription.close()


def _brief(stats: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in stats.items() if isinstance(v, int | float)}


async def run(console: Any, quick: bool = False) -> list[dict[str, Any]]:
    console.print("rules: evaluator throughput (one core) …")
    rows = evaluator(quick)
    for rate in (5_000, 1_000):  # the goal's rate, and a busy market's that this machine keeps up with
        console.print(f"rules: alert latency through the platform at {rate:,} readings/s …")
        rows += await latency(quick, rate=rate)
    return rows
