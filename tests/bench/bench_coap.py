"""`marketfleet bench coap`: CoAP uplinks per second, the platform's server against a bare aiocoap baseline.

The server runs in its own process (pinned to one core where there are two), the devices in this one:

* `bare`     an aiocoap server whose resource answers every POST with a fixed 2.04 ack: the UDP + CoAP ceiling
             of aiocoap on this machine, no authentication, nothing stored (the baseline);
* `oscore`   the same bare resource behind the platform's OSCORE layer (per-device contexts from the registry):
             what the authentication costs, client and server side, without ingest;
* `platform` `broker.coap.CoapServer` as `marketfleet serve` runs it: OSCORE per device (contexts from the
             registry), the ingest pipeline (schema, de-duplication) and the SQLite telemetry store; every
             answer is the ack of durably stored readings.

Each device (its own UDP socket) sends confirmable POSTs of one ~150-byte telemetry message back to back (CoAP
NSTART = 1: one outstanding request per device). `vs bare` is a case's rate over the baseline's for the same
number of devices, measured in the same run. Run: `marketfleet bench coap` (`--quick`: shorter runs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console

from tests.bench.load import LoadResult
from tests.services import find_free_port

ROOT = Path(__file__).resolve().parents[2]
MASTER_KEY = b"bench-coap-master-key-0123456789abcdef"


def _pin(cpu: int) -> None:
    with contextlib.suppress(AttributeError, OSError):
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) >= 2:
            os.sched_setaffinity(0, {cpus[cpu % len(cpus)]})


# ==================================================================== the server side (a subprocess)


async def _serve(args: argparse.Namespace) -> None:
    import aiocoap
    import aiocoap.resource
    from aiocoap.numbers import codes

    _pin(0)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(sys.stdin.fileno(), stop.set)  # the parent closes our stdin to stop us

    from fleet.registry import Registry
    from marketfleet import db

    data = Path(args.data)
    if args.mode in ("bare", "oscore"):

        class Ack(aiocoap.resource.Resource, aiocoap.resource.PathCapable):
            async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
                seq = json.loads(request.payload)["seq"]
                body = json.dumps({"seqs": [seq], "high": seq, "rejected": []}).encode()
                return aiocoap.Message(code=codes.CHANGED, payload=body, content_format=50)

        site: Any = aiocoap.resource.Site()
        site.add_resource(("mf", "v1"), Ack())
        contexts = None
        if args.mode == "oscore":  # the platform's OSCORE layer (contexts from the registry) in front of it
            from broker.coap import _DeviceOscoreSite
            from broker.coap_security import DeviceContexts, OscoreStateStore, RegistrySecretSource

            await db.connect(f"sqlite://{data / 'registry.sqlite3'}")
            contexts = DeviceContexts(RegistrySecretSource(Registry(master_key=MASTER_KEY)),
                                      OscoreStateStore(data / f"oscore-{args.port}.sqlite3"))
            site = _DeviceOscoreSite(site, contexts)
        context = await aiocoap.Context.create_server_context(site, bind=("127.0.0.1", args.port),
                                                              transports=["udp6"])
        print("ready", flush=True)
        await stop.wait()
        await context.shutdown()
        if contexts is not None:
            contexts.close()
            await db.close()
        return

    from broker.coap import CoapServer
    from broker.directory import DeviceDirectory
    from broker.ingest import IngestPipeline
    from telemetry import open_store

    await db.connect(f"sqlite://{data / 'registry.sqlite3'}")
    registry = Registry(master_key=MASTER_KEY)
    directory = DeviceDirectory()
    registry.listeners.append(directory)
    store = open_store("sqlite", path=data / "telemetry.sqlite3")
    await store.start()
    pipeline = IngestPipeline(store, directory)
    await pipeline.start()
    # Per-device limits off (they would cap one device at 20 requests/s): this measures throughput.
    server = CoapServer("127.0.0.1", args.port, pipeline, registry, state_path=data / "coap-oscore.sqlite3",
                        device_rate_per_s=1e9, device_burst=10**9)
    await server.start()
    print("ready", flush=True)
    await stop.wait()
    await server.aclose()
    await pipeline.aclose()
    await store.aclose()
    await db.close()


# ==================================================================== the device side (this process)


async def _register(data: Path, devices: int) -> dict[str, str]:
    from fleet.registry import Registry
    from fleet.schemas import DeviceCreate, MarketCreate, VendorCreate
    from marketfleet import db

    await db.connect(f"sqlite://{data / 'registry.sqlite3'}")
    try:
        registry = Registry(master_key=MASTER_KEY)
        vendor, _ = await registry.create_vendor(VendorCreate(code="bench", name="Bench"))
        await registry.create_market(MarketCreate(code="m1", name="Bench market"))
        rows = [DeviceCreate(serial=f"BS{n:05d}", kind="esl_base_station", market="m1") for n in range(devices)]
        result = await registry.register_devices(vendor, rows)
        return {row.device_id: row.secret for row in result.rows if row.device_id and row.secret}
    finally:
        await db.close()


def _server(mode: str, port: int, data: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.bench.bench_coap", "--serve", "--mode", mode, "--port", str(port),
         "--data", str(data)],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        raise RuntimeError(f"CoAP {mode} server did not start: {line!r}")
    return proc


async def _load(
    mode: str, port: int, contexts: dict[str, Any], seconds: float, first_seq: int
) -> LoadResult:
    """Every device sends back to back for `seconds`, after one unmeasured warm-up request each (OSCORE context
    load and the Echo challenge of first contact). `contexts`: the devices' OSCORE contexts, kept across runs
    (like firmware, a device never starts its sequence numbers over)."""
    import aiocoap
    from aiocoap.numbers import codes

    # One client context (one UDP socket) per device, as in the field: aiocoap keeps NSTART = 1 per remote
    # endpoint, so devices sharing a socket would queue behind each other.
    transports = ["oscore", "udp6"] if mode != "bare" else ["udp6"]
    base = f"coap://127.0.0.1:{port}"
    clients: dict[str, aiocoap.Context] = {}
    for device_id, ctx in contexts.items():
        clients[device_id] = await aiocoap.Context.create_client_context(transports=transports)
        if mode != "bare":
            clients[device_id].client_credentials[f"{base}/mf/v1/{device_id}/*"] = ctx
    ts = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    latencies: list[float] = []
    errors = 0
    failures: list[str] = []

    async def device(device_id: str, seq: int, stop_at: float, measure: bool) -> None:
        nonlocal errors
        uri = f"{base}/mf/v1/{device_id}/up/telemetry"
        client = clients[device_id]
        while True:
            body = json.dumps({"seq": seq, "ts": ts, "payload": {"labels_connected": 120, "queue_depth": 3}}).encode()
            started = time.perf_counter()
            try:
                response = await client.request(aiocoap.Message(code=codes.POST, uri=uri, payload=body,
                                                                content_format=50)).response
                ok = response.code == codes.CHANGED and json.loads(response.payload)["seqs"] == [seq]
                if not ok and len(failures) < 3:
                    failures.append(f"{response.code}: {response.payload[:200]!r}")
            except Exception as err:
                ok = False
                if len(failures) < 3:
                    plain = getattr(err, "plain_message", None)  # an unprotected answer (4.01, 5.03 …)
                    failures.append(repr(err) if plain is None else f"{plain.code} in the clear: {plain.payload!r}")
            if measure:
                latencies.append((time.perf_counter() - started) * 1000)
                errors += not ok
            seq += 1
            if not measure or time.perf_counter() >= stop_at:
                return

    try:
        await asyncio.gather(*(device(d, first_seq, 0.0, False) for d in contexts))
        started = time.perf_counter()
        await asyncio.gather(*(device(d, first_seq + 1, started + seconds, True) for d in contexts))
        elapsed = time.perf_counter() - started
    finally:
        for client in clients.values():
            await client.shutdown()
    for failure in failures:
        print(f"  {mode}: failed request: {failure}", file=sys.stderr)
    return LoadResult(len(latencies), errors, elapsed, latencies)


async def run(console: Console, quick: bool = False) -> list[dict[str, Any]]:
    _pin(1)
    seconds = 5.0 if quick else 15.0
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="mf-bench-coap-") as tmp:
        data = Path(tmp)
        from broker.coap_security import device_client_context

        all_contexts = {d: device_client_context(d, secret) for d, secret in (await _register(data, 50)).items()}
        for devices in (1, 10, 50):
            contexts = dict(list(all_contexts.items())[:devices])
            rates: dict[str, float] = {}
            for mode in ("bare", "oscore", "platform"):
                port = find_free_port()
                proc = _server(mode, port, data)
                try:
                    console.print(f"{mode}: {devices} device(s) for {seconds:.0f} s …")
                    result = await _load(mode, port, contexts, seconds, first_seq=len(rows) * 10_000_000)
                finally:
                    assert proc.stdin is not None
                    proc.stdin.close()
                    try:
                        proc.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                rates[mode] = result.rate
                row = result.row(mode, devices=devices)
                row["vs bare"] = round(result.rate / rates["bare"], 2) if mode != "bare" and rates["bare"] else ""
                rows.append(row)
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--serve", action="store_true")
    parser.add_argument("--mode", choices=("bare", "oscore", "platform"), default="platform")
    parser.add_argument("--port", type=int, default=5683)
    parser.add_argument("--data", default=".")
    arguments = parser.parse_args()
    if arguments.serve:
        asyncio.run(_serve(arguments))
