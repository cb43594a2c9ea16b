"""A minimal test device that follows docs/protocol.md: persistent outbox, seq counter, acks, replay.

Not the simulator package: just enough device to prove resume-after-break (断点续传). Messages go into an
SQLite outbox (the device's flash) before they are sent; an ack (`seqs` or `rejected`) removes them; on every
(re)connect the outbox is replayed in seq order. `run()` keeps reconnecting until `stop()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from pathlib import Path
from typing import Any

from broker import topics
from tests.integration.broker.mqtt_wire import Will, WireClient, WireError


class TestDevice:
    __test__ = False  # not a pytest class

    def __init__(
        self, host: str, port: int, device_id: str, secret: str, market: str | None, outbox: Path, keepalive: int = 60
    ) -> None:
        self.host, self.port = host, port
        self.device_id, self.secret, self.market = device_id, secret, market
        self.keepalive = keepalive
        self.db = sqlite3.connect(outbox)
        self.db.execute("CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY, channel TEXT, body BLOB)")
        self.db.execute("CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER)")
        self.db.commit()
        row = self.db.execute("SELECT v FROM meta WHERE k = 'next_seq'").fetchone()
        self.next_seq = int(row[0]) if row else 0
        self.client: WireClient | None = None
        self.acked: set[int] = set()
        self.rejected: dict[int, dict[str, Any]] = {}
        self.connects = 0
        self.publishes = 0
        self._stop = asyncio.Event()
        self._connected = asyncio.Event()
        self._changed = asyncio.Event()

    # ---------------------------------------------------------------- producing

    def produce(self, payload: dict[str, Any], channel: str = "telemetry", ts: str | int | None = None) -> int:
        """Put a new message in the outbox (persisted first) and send it if connected."""
        seq = self.next_seq
        self.next_seq += 1
        message: dict[str, Any] = {"seq": seq, "payload": payload}
        if ts is not None:
            message["ts"] = ts
        body = json.dumps(message).encode()
        self.db.execute("INSERT INTO outbox VALUES (?, ?, ?)", (seq, channel, body))
        self.db.execute("INSERT OR REPLACE INTO meta VALUES ('next_seq', ?)", (self.next_seq,))
        self.db.commit()
        self._send(seq, channel, body)
        return seq

    def pending(self) -> list[int]:
        return [row[0] for row in self.db.execute("SELECT seq FROM outbox ORDER BY seq")]

    def _send(self, seq: int, channel: str, body: bytes) -> None:
        client = self.client
        if client is None or not self._connected.is_set():
            return
        try:
            future = client.publish_nowait(topics.up_topic(self.market, self.device_id, channel), body, 1)
            future.add_done_callback(lambda f: f.exception() if not f.cancelled() else None)
            self.publishes += 1
        except WireError:
            pass

    # ---------------------------------------------------------------- the connection

    async def run(self) -> None:
        """Stay connected (reconnecting every 0.2 s) until stop(); replay the outbox after each connect."""
        while not self._stop.is_set():
            client = WireClient()
            try:
                rc = await client.connect(
                    self.host, self.port, self.device_id, self.device_id, self.secret, clean_session=False,
                    keepalive=self.keepalive,
                    will=Will(topics.status_topic(self.market, self.device_id), b"offline", 1, True),
                    within=3,
                )
                if rc != 0:
                    await asyncio.sleep(0.2)
                    continue
                await client.subscribe([(topics.device_down_filter(self.market, self.device_id), 1)])
                client.publish_nowait(topics.status_topic(self.market, self.device_id), b"online", 1, retain=True)
                self.client = client
                self.connects += 1
                self._connected.set()
                for seq, channel, body in list(self.db.execute("SELECT seq, channel, body FROM outbox ORDER BY seq")):
                    self._send(seq, channel, body)
                await self._receive(client)
            except (OSError, WireError, TimeoutError):
                pass
            finally:
                self._connected.clear()
                self.client = None
                await client.abort()
            if not self._stop.is_set():
                await asyncio.sleep(0.2)

    async def _receive(self, client: WireClient) -> None:
        closed = asyncio.create_task(client.closed.wait())
        stop = asyncio.create_task(self._stop.wait())
        try:
            while True:
                getter = asyncio.create_task(client.messages.get())
                done, _ = await asyncio.wait({getter, closed, stop}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    return
                topic, payload = getter.result()
                if topic.endswith("/down/ack"):
                    self._on_ack(json.loads(payload))
        finally:
            for task in (closed, stop):
                task.cancel()

    def _on_ack(self, ack: dict[str, Any]) -> None:
        done = list(ack.get("seqs", []))
        for rejection in ack.get("rejected", []):
            if rejection.get("seq") is not None:
                self.rejected[rejection["seq"]] = rejection
                done.append(rejection["seq"])
        self.acked.update(ack.get("seqs", []))
        if done:
            self.db.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in done])
            self.db.commit()
        self._changed.set()

    async def wait_connected(self, within: float = 10) -> None:
        await asyncio.wait_for(self._connected.wait(), within)

    async def wait_outbox_empty(self, within: float = 30) -> None:
        async with asyncio.timeout(within):
            while self.pending():
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), 0.5)

    async def drop_link(self) -> None:
        """Cut the TCP connection without DISCONNECT (the broker sends the will)."""
        if self.client is not None:
            await self.client.abort()

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self.db.close()
