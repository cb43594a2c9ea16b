"""`marketfleet bench broker`: MQTT throughput and connect storms, amqtt as shipped vs ours vs Mosquitto.

Every case runs the broker in its own process (pinned to one core where there are two) and the load from this
process (the other core), with N idle devices each subscribed to its own `down/` topic:

* `amqtt`      amqtt 0.12.1 `Broker` as shipped (anonymous auth), a subscriber on `mf/v1/+/+/up/#`;
* `indexed`    our `IndexedBroker` (subscription trie, same anonymous setup) — the matching alone;
* `mosquitto`  Mosquitto 2.0 (anonymous), same subscriber;
* `embedded`   the platform's embedded mode end to end: registry auth + topic ACL + ingest on the message
               hook + SQLite (or InfluxDB) store + an application ack per uplink back to each device;
* `external`   Mosquitto + one ingest worker process (`$share/`) end to end, acks back to the devices.

msgs/s for the first three is messages received by the subscriber; for `embedded`/`external` it is uplinks
stored *and acknowledged*. `connect s` is N devices connecting (250 at a time) and subscribing.
`connect CPU ms/device` and `CPU µs/msg` (embedded) are the broker process's CPU time per device connected and
per uplink ingested: steadier than the wall-clock rates when other work shares the machine.
Run: `marketfleet bench broker` (add `--quick` for N ≤ 1,000; `MF_BENCH_BROKER_NO_CHURN=1` skips the 30-minute
churn case).
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
from pathlib import Path
from typing import Any

import psutil

from tests.integration.broker.mqtt_wire import WireClient
from tests.services import InfluxServer, MosquittoServer, find_free_port

ROOT = Path(__file__).resolve().parents[2]
TS0 = 1_795_000_000_000


# ==================================================================== the broker side (a subprocess)


def _pin(cpu: int) -> None:
    if os.environ.get("MF_BENCH_NO_PIN"):
        return
    with contextlib.suppress(AttributeError, OSError):
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) >= 2:
            os.sched_setaffinity(0, {cpus[cpu % len(cpus)]})


async def _serve(args: argparse.Namespace) -> None:
    _pin(0)
    if os.environ.get("MF_BENCH_GC"):
        import gc

        spent = {"s": 0.0, "n": 0, "t": 0.0}

        def _gc(phase: str, gcinfo: dict[str, int]) -> None:
            if phase == "start":
                spent["t"] = time.perf_counter()
            elif gcinfo["generation"] == 2:
                spent["s"] += time.perf_counter() - spent["t"]
                spent["n"] += 1
                print(f"gen2 #{spent['n']} total {spent['s']:.2f}s", file=sys.stderr, flush=True)

        gc.callbacks.append(_gc)
    if os.environ.get("MF_BENCH_GC_THRESHOLD"):
        import gc

        gc.set_threshold(*map(int, os.environ["MF_BENCH_GC_THRESHOLD"].split(",")))
    workdir = Path(args.workdir)
    stop = asyncio.Event()
    info: dict[str, Any] = {"pid": os.getpid()}
    if args.mode in ("amqtt", "indexed"):
        from amqtt.broker import Broker

        from broker.amqtt_broker import IndexedBroker

        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{args.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        broker = Broker(config) if args.mode == "amqtt" else IndexedBroker(config)
        await broker.start()
        _ready(info)
        await _wait_stdin_closed(stop)
        await broker.shutdown()
        return

    from fleet.registry import Registry
    from fleet.schemas import DeviceCreate, MarketCreate, VendorCreate
    from marketfleet import db
    from telemetry import open_store

    await db.connect(f"sqlite://{workdir / 'registry.sqlite3'}")
    registry = Registry(master_key=b"bench-master-key-0123456789abcdef")
    await registry.create_market(MarketCreate(code="M1", name="bench"))
    vendor, _ = await registry.create_vendor(VendorCreate(code="bench", name="bench"))
    rows = [DeviceCreate(serial=f"D{i:06d}", kind="env_sensor", market="M1") for i in range(args.devices)]  # type: ignore[arg-type]
    result = await registry.register_devices(vendor, rows)
    creds = {r.device_id: r.secret for r in result.rows if r.device_id}
    (workdir / "creds.json").write_text(json.dumps(creds))
    store_options: dict[str, Any]
    if args.influx:
        store_options = {"url": args.influx, "database": f"bench_{os.getpid()}", "spool_dir": str(workdir / "spool")}
        store_cm = open_store("influxdb", **store_options)
    else:
        store_cm = open_store("sqlite", path=workdir / "telemetry.sqlite3", retention_interval=None)
    from broker.service import BrokerParams, setup

    async with store_cm as store:
        if args.mode == "embedded":
            service = setup(BrokerParams(mode="embedded", port=args.port), registry, store)
        else:  # external: ingest worker(s) of an anonymous Mosquitto
            service = setup(BrokerParams(mode="external", port=args.port, workers=args.workers), registry, store)
        await service.start()
        if os.environ.get("MF_BENCH_GC"):
            import gc

            print(f"gc objects at start {len(gc.get_objects())}", file=sys.stderr, flush=True)
        _ready(info)
        await _wait_stdin_closed(stop)
        info = service.stats()
        await service.aclose()
        print("STATS " + json.dumps(info, default=str), flush=True)
    await db.close()


def _ready(info: dict[str, Any]) -> None:
    print("READY " + json.dumps(info), flush=True)


async def _wait_stdin_closed(stop: asyncio.Event) -> None:
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


class ServerProcess:
    """`python -m tests.bench.bench_broker serve …` until closed; `.pid` for its memory."""

    def __init__(
        self, mode: str, port: int, devices: int = 0, influx: str = "", workers: int = 1, uvloop: bool = False
    ) -> None:
        self.workdir = tempfile.mkdtemp(prefix=f"mf-bench-{mode}-")
        cmd = [sys.executable, "-m", "tests.bench.bench_broker", "serve", mode, "--port", str(port),
               "--devices", str(devices), "--workdir", self.workdir, "--workers", str(workers)]
        if influx:
            cmd += ["--influx", influx]
        if uvloop:
            cmd.append("--uvloop")
        self.stderr = open(Path(self.workdir) / "stderr.log", "w")  # amqtt logs a lot under load
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     stderr=self.stderr)
        line = ""
        assert self.proc.stdout is not None
        while not line.startswith("READY "):
            line = self.proc.stdout.readline()
            if not line and self.proc.poll() is not None:
                raise RuntimeError(
                    f"bench server {mode} exited with {self.proc.returncode}; see {self.workdir}/stderr.log"
                )
        self.info = json.loads(line[6:])
        self.stats: dict[str, Any] = {}

    @property
    def creds(self) -> dict[str, str]:
        return json.loads((Path(self.workdir) / "creds.json").read_text())

    def cpu_s(self) -> float:
        times = psutil.Process(self.info["pid"]).cpu_times()
        return times.user + times.system

    def rss_mib(self) -> float:
        return psutil.Process(self.info["pid"]).memory_info().rss / 2**20

    def close(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.close()
        out = self.proc.stdout.read()
        for line in out.splitlines():
            if line.startswith("STATS "):
                self.stats = json.loads(line[6:])
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.stderr.close()


# ==================================================================== the load side (this process)


async def connect_idle(port: int, ids: list[str], creds: dict[str, str] | None, concurrency: int = 250
                       ) -> tuple[list[WireClient], float]:
    gate = asyncio.Semaphore(concurrency)
    clients: list[WireClient] = []

    async def one(device_id: str) -> None:
        async with gate:
            client = WireClient()
            secret = creds[device_id] if creds else None
            rc = await client.connect("127.0.0.1", port, device_id, device_id if creds else None, secret,
                                      clean_session=creds is None, keepalive=900, within=120)
            if rc != 0:
                raise RuntimeError(f"{device_id}: CONNACK {rc}")
            await client.subscribe([(f"mf/v1/M1/{device_id}/down/#", 1)], within=120)
            clients.append(client)

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in ids))
    return clients, time.perf_counter() - started


async def _close_all(clients: list[WireClient]) -> None:
    await asyncio.gather(*(c.abort() for c in clients), return_exceptions=True)


async def relay_throughput(port: int, publishers: int, messages: int, window: int = 50) -> float:
    """Messages/s from `publishers` QoS 1 publishers to one QoS 1 subscriber of mf/v1/+/+/up/#."""
    sub = WireClient()
    await sub.connect("127.0.0.1", port, "ingest-sub", keepalive=900)
    await sub.subscribe([("mf/v1/+/+/up/#", 1)])
    pubs = []
    for i in range(publishers):
        client = WireClient()
        await client.connect("127.0.0.1", port, f"pub-{i}", keepalive=900)
        pubs.append(client)
    body = json.dumps({"seq": 0, "payload": {"temperature_c": 4.2, "humidity_pct": 81.0}}).encode()
    per = messages // publishers
    total = per * publishers

    async def publish(client: WireClient, i: int) -> None:
        topic = f"mf/v1/M1/pub-{i}/up/telemetry"
        gate = asyncio.Semaphore(window)
        for _ in range(per):
            await gate.acquire()
            client.publish_nowait(topic, body, 1).add_done_callback(lambda _f: gate.release())

    received = 0
    last = time.perf_counter()

    async def receive() -> None:
        # amqtt gives up on a QoS 1 delivery whose PUBACK takes > 5 s (an overloaded machine): count what
        # arrived and stop after 5 s of silence rather than wait for messages that will never come
        nonlocal received, last
        while received < total:
            try:
                await asyncio.wait_for(sub.messages.get(), 5)
            except TimeoutError:
                return
            received += 1
            last = time.perf_counter()

    started = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(receive(), *(publish(c, i) for i, c in enumerate(pubs))), 600)
    elapsed = last - started
    await _close_all([sub, *pubs])
    if received < total:
        print(f"relay: {total - received} of {total} messages not delivered (broker gave up on them)", flush=True)
    return received / elapsed


async def ingest_throughput(port: int, creds: dict[str, str], messages: int, per_uplink: int = 1,
                            window: int = 50, anonymous: bool = False) -> float:
    """Uplinks/s (× per_uplink readings) stored and acknowledged back to each publishing device."""
    devices = list(creds)
    clients = []
    for device_id in devices:
        client = WireClient()
        rc = await client.connect("127.0.0.1", port, device_id, None if anonymous else device_id,
                                  None if anonymous else creds[device_id], clean_session=anonymous, keepalive=900)
        assert rc == 0, rc
        await client.subscribe([(f"mf/v1/M1/{device_id}/down/ack", 1)])
        clients.append(client)
    uplinks = messages // len(devices) // per_uplink

    async def device(client: WireClient, device_id: str) -> None:
        topic = f"mf/v1/M1/{device_id}/up/telemetry"
        expected = uplinks * per_uplink
        acked: set[int] = set()
        in_flight = asyncio.Semaphore(window)

        async def read_acks() -> None:
            while len(acked) < expected:
                _topic, payload = await client.messages.get()
                seqs = json.loads(payload)["seqs"]
                acked.update(seqs)
                for _ in range(len(seqs) // per_uplink):
                    in_flight.release()

        reader = asyncio.create_task(read_acks())
        seq = 0
        for _ in range(uplinks):
            await in_flight.acquire()
            batch = [{"seq": s, "ts": TS0 + s, "payload": {"temperature_c": 4.2, "humidity_pct": 81.0}}
                     for s in range(seq, seq + per_uplink)]
            seq += per_uplink
            client.publish_nowait(topic, json.dumps(batch if per_uplink > 1 else batch[0]).encode(), 1)
        await reader

    started = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(device(c, d) for c, d in zip(clients, devices, strict=True))), 600)
    elapsed = time.perf_counter() - started
    await _close_all(clients)
    return uplinks * len(devices) / elapsed


# ==================================================================== the cases


async def _case_relay(mode: str, idle: int, messages: int) -> dict[str, Any]:
    port = find_free_port()
    mosquitto = None
    server = None
    if mode == "mosquitto":
        mosquitto = MosquittoServer(dynsec=False).start()
        port = mosquitto.port
        _pin_pid(mosquitto.proc.pid if mosquitto.proc else 0, 0)
        pid = mosquitto.proc.pid if mosquitto.proc else 0
    else:
        server = ServerProcess(mode, port)
        pid = server.info["pid"]
    try:
        clients, connect_s = await connect_idle(port, [f"dev-{i}" for i in range(idle)], None)
        rss = psutil.Process(pid).memory_info().rss / 2**20
        rate = await relay_throughput(port, publishers=10, messages=messages)
        await _close_all(clients)
    finally:
        if server is not None:
            server.close()
        if mosquitto is not None:
            mosquitto.close()
    return {"case": f"{mode} relay", "subscribed devices": idle, "connect s": round(connect_s, 2),
            "msgs/s": round(rate), "broker MiB": round(rss)}


def _pin_pid(pid: int, cpu: int) -> None:
    with contextlib.suppress(AttributeError, OSError, ProcessLookupError):
        cpus = sorted(os.sched_getaffinity(0))
        if pid and len(cpus) >= 2:
            os.sched_setaffinity(pid, {cpus[cpu]})


async def _case_embedded(
    idle: int, messages: int, per_uplink: int = 1, influx: str = "", uvloop: bool = False
) -> dict[str, Any]:
    port = find_free_port()
    publishers = 10
    server = ServerProcess("embedded", port, devices=idle + publishers, influx=influx, uvloop=uvloop)
    try:
        creds = server.creds
        ids = sorted(creds)
        cpu0 = server.cpu_s()
        clients, connect_s = await connect_idle(port, ids[:idle], creds)
        cpu1 = server.cpu_s()
        rss = server.rss_mib()
        rate = await ingest_throughput(port, {d: creds[d] for d in ids[idle:]}, messages, per_uplink)
        cpu2 = server.cpu_s()
        await _close_all(clients)
    finally:
        server.close()
    store = "InfluxDB" if influx else "SQLite"
    case = f"embedded ingest ({store}{', uvloop' if uvloop else ''})"
    uplinks = messages // publishers // per_uplink * publishers
    # CPU seconds of the broker process per device connected and per uplink: less sensitive to other load on
    # the machine than the wall-clock rates
    return {"case": case, "subscribed devices": idle, "connect s": round(connect_s, 2),
            "connect CPU ms/device": round((cpu1 - cpu0) / max(idle, 1) * 1000, 2),
            "msgs/s": round(rate), "CPU µs/msg": round((cpu2 - cpu1) / uplinks * 1e6),
            "readings/s": round(rate * per_uplink), "msgs/uplink": per_uplink, "broker MiB": round(rss)}


async def _case_external(idle: int, messages: int, influx: str = "") -> dict[str, Any]:
    mosquitto = MosquittoServer(dynsec=False).start()
    _pin_pid(mosquitto.proc.pid if mosquitto.proc else 0, 0)
    publishers = 10
    server = ServerProcess("external", mosquitto.port, devices=idle + publishers, influx=influx)
    try:
        ids = sorted(server.creds)
        clients, connect_s = await connect_idle(mosquitto.port, ids[:idle], None)
        rate = await ingest_throughput(mosquitto.port, {d: "" for d in ids[idle:]}, messages, anonymous=True)
        await _close_all(clients)
    finally:
        server.close()
        mosquitto.close()
    return {"case": "external ingest (Mosquitto + 1 worker)", "subscribed devices": idle,
            "connect s": round(connect_s, 2), "msgs/s": round(rate), "readings/s": round(rate)}


async def _case_churn(devices: int, period_s: float, duration_s: float) -> dict[str, Any]:
    """Embedded broker memory while every device reconnects once per `period_s` (spread over the period), plus
    100 refused CONNECTs with random client ids per period (the amqtt #123 pattern), for `duration_s`."""
    import uuid

    port = find_free_port()
    server = ServerProcess("embedded", port, devices=devices)
    samples: list[float] = []
    reconnects = 0
    try:
        creds = server.creds
        ids = sorted(creds)
        gate = asyncio.Semaphore(250)

        async def first_connect(device_id: str) -> tuple[str, WireClient]:
            async with gate:
                connected, _ = await connect_idle(port, [device_id], creds)
                return device_id, connected[0]

        live = dict(await asyncio.gather(*(first_connect(d) for d in ids)))
        started = time.perf_counter()
        while time.perf_counter() - started < duration_s:
            cycle_start = time.perf_counter()
            gap = period_s / len(ids)
            for n, device_id in enumerate(ids):
                old = live[device_id]
                await old.abort()  # no DISCONNECT: the broker sees a dropped link and publishes nothing else
                fresh, _ = await connect_idle(port, [device_id], creds)
                live[device_id] = fresh[0]
                reconnects += 1
                if n % (len(ids) // 100 or 1) == 0:
                    refused = WireClient()
                    await refused.connect("127.0.0.1", port, f"x-{uuid.uuid4().hex}", "nobody", "wrong")
                    await refused.abort()
                delay = cycle_start + (n + 1) * gap - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            samples.append(server.rss_mib())
        await _close_all(list(live.values()))
    finally:
        server.close()
    first, last = samples[0], samples[-1]
    return {"case": f"embedded churn: {devices:,} devices reconnecting every {period_s:.0f} s",
            "subscribed devices": devices, "minutes": round(duration_s / 60, 1), "reconnects": reconnects,
            "broker MiB": f"{first:.0f} → {last:.0f} (min {min(samples):.0f}, max {max(samples):.0f})",
            "drift %": round((last - first) / first * 100, 1)}


async def run(console: Any, quick: bool = False) -> list[dict[str, Any]]:
    sizes = [1, 1000] if quick else [1, 1000, 5000]
    messages = 5000 if quick else 10_000
    rows: list[dict[str, Any]] = []
    _pin(1)

    def note(row: dict[str, Any]) -> None:
        rows.append(row)
        console.print(row)

    for idle in sizes:
        for mode in ("amqtt", "indexed"):
            # amqtt as shipped needs minutes to connect 5,000 and then relays a few dozen msgs/s: fewer messages
            count = (500 if idle >= 5000 else 2000) if (mode == "amqtt" and idle >= 1000) else messages
            note(await _case_relay(mode, idle, count))
        if not MosquittoServer.missing_binaries():
            note(await _case_relay("mosquitto", idle, messages))
        note(await _case_embedded(idle, messages))
    note(await _case_embedded(sizes[-1], messages, uvloop=True))
    influx = None
    if not InfluxServer.missing_binaries():
        influx = InfluxServer().start()
    try:
        url = influx.url if influx else ""
        note(await _case_embedded(sizes[-1], messages, per_uplink=10, influx=url))
        if not MosquittoServer.missing_binaries():
            note(await _case_external(sizes[-1], messages, influx=url))
    finally:
        if influx is not None:
            influx.close()
    # issue 5: memory flat over 30 minutes of 1,000 devices reconnecting every minute (--quick: 3 minutes);
    # MF_BENCH_BROKER_NO_CHURN=1 leaves it out (e.g. to re-measure throughput without another 30 minutes)
    if not os.environ.get("MF_BENCH_BROKER_NO_CHURN"):
        note(await _case_churn(1000, 20 if quick else 60, 180 if quick else 1800))
    return rows


def _profile_on_signals(path: str) -> None:
    """SIGUSR1 starts a cProfile of the broker process, SIGUSR2 stops it and writes `path`.<n> (one phase)."""
    import cProfile
    import signal

    state: dict[str, Any] = {"n": 0, "profiler": None}

    def start(*_: Any) -> None:
        state["profiler"] = cProfile.Profile()
        state["profiler"].enable()

    def stop(*_: Any) -> None:
        profiler = state["profiler"]
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(f"{path}.{state['n']}")
            state["n"] += 1
            state["profiler"] = None

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve")
    serve.add_argument("mode", choices=["amqtt", "indexed", "embedded", "external"])
    serve.add_argument("--port", type=int, required=True)
    serve.add_argument("--devices", type=int, default=0)
    serve.add_argument("--workdir", required=True)
    serve.add_argument("--influx", default="")
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--uvloop", action="store_true")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        uvloop.install()
    profile = os.environ.get("MF_BENCH_PROFILE")  # write a cProfile of the broker process here
    if profile and os.environ.get("MF_BENCH_PROFILE_SIGNALS"):
        _profile_on_signals(profile)
        asyncio.run(_serve(args))
    elif profile:
        import cProfile

        cProfile.runctx("asyncio.run(_serve(args))", globals(), {"args": args, "asyncio": asyncio}, profile)
    else:
        asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
