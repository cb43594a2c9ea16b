"""The persistent outbox every device keeps (docs/protocol.md, "Acknowledgement").

A message stays in the outbox until its seq comes back in an ack's `seqs` or `rejected`; after a reconnect the
device replays what is left, in seq order (断点续传). `seq` is one counter per device across all channels, kept
across restarts: the counter lives in the same SQLite file as the messages and is bumped in the same
transaction as the insert, so a crash can neither reuse a seq nor lose a message that got one.

One SQLite file (an `OutboxStore`) may hold the outboxes of many devices (a whole simulated market uses one
file and one connection); `OutboxStore(None)` is an in-memory store for tests. Not thread-safe: use a store
from one thread (the event loop's).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox_counter (
    device_id TEXT PRIMARY KEY,
    next_seq  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox_message (
    device_id TEXT    NOT NULL,
    seq       INTEGER NOT NULL,
    channel   TEXT    NOT NULL,
    ts        TEXT,
    payload   TEXT    NOT NULL,
    PRIMARY KEY (device_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox_reservation (
    device_id TEXT NOT NULL,
    name      TEXT NOT NULL,
    next      INTEGER NOT NULL,
    PRIMARY KEY (device_id, name)
) WITHOUT ROWID;
"""


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One stored message: its seq, the channel it goes to, and the wire message."""

    seq: int
    channel: str
    ts: str | None
    payload: dict[str, Any]

    @property
    def message(self) -> dict[str, Any]:
        """`{"seq", "ts", "payload"}` as it goes on the wire (`ts` left out when the device has no clock)."""
        if self.ts is None:
            return {"seq": self.seq, "payload": self.payload}
        return {"seq": self.seq, "ts": self.ts, "payload": self.payload}

    @property
    def size(self) -> int:
        """Approximate encoded size in bytes, for batching."""
        return len(json.dumps(self.message, ensure_ascii=False, separators=(",", ":")).encode())


class OutboxStore:
    """A SQLite file (or `:memory:` when `path` is None) holding the outboxes of any number of devices."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = None if path is None else Path(path)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(":memory:" if self.path is None else str(self.path), isolation_level=None)
        if self.path is not None:
            self._db.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: a commit survives a process crash (the simulated device "rebooting").
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._outboxes: dict[str, Outbox] = {}

    def outbox(self, device_id: str) -> Outbox:
        """The outbox of one device (the same object for the same id)."""
        if device_id not in self._outboxes:
            self._outboxes[device_id] = Outbox(self, device_id)
        return self._outboxes[device_id]

    def reserve(self, device_id: str, name: str, block: int) -> int:
        """Reserve `block` numbers of a per-device counter (e.g. the OSCORE sender sequence number) and return
        the first. The next call starts after the block, so a restarted device never reuses a number, even if
        it did not use them all (docs/coap.md: "reserve ahead, never reuse one")."""
        with self._db:
            self._db.execute("BEGIN")
            row = self._db.execute(
                "SELECT next FROM outbox_reservation WHERE device_id = ? AND name = ?", (device_id, name)
            ).fetchone()
            start = 0 if row is None else int(row[0])
            self._db.execute(
                "INSERT INTO outbox_reservation (device_id, name, next) VALUES (?, ?, ?) "
                "ON CONFLICT (device_id, name) DO UPDATE SET next = excluded.next",
                (device_id, name, start + block),
            )
        return start

    def device_ids(self) -> list[str]:
        return [row[0] for row in self._db.execute("SELECT device_id FROM outbox_counter ORDER BY device_id")]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> OutboxStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Outbox:
    """One device's outbox. Get it from `OutboxStore.outbox(device_id)` or `open_outbox(path, device_id)`."""

    def __init__(self, store: OutboxStore, device_id: str) -> None:
        self.store = store
        self.device_id = device_id
        self._db = store._db
        self._owns_store = False
        row = self._db.execute("SELECT next_seq FROM outbox_counter WHERE device_id = ?", (device_id,)).fetchone()
        if row is None:
            self._db.execute("INSERT INTO outbox_counter (device_id, next_seq) VALUES (?, 0)", (device_id,))
            self._next = 0
        else:
            self._next = int(row[0])
        self._count = int(
            self._db.execute("SELECT count(*) FROM outbox_message WHERE device_id = ?", (device_id,)).fetchone()[0]
        )

    @property
    def next_seq(self) -> int:
        """The seq the next appended message will get (= how many messages this device ever made)."""
        return self._next

    def append(self, channel: str, payload: Mapping[str, Any], ts: str | None = None) -> OutboxEntry:
        """Store a new message under the next seq and return it. The counter and the row commit together."""
        seq = self._next
        body = dict(payload)
        text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
        with self._db:  # BEGIN … COMMIT
            self._db.execute("BEGIN")
            self._db.execute(
                "UPDATE outbox_counter SET next_seq = ? WHERE device_id = ?", (seq + 1, self.device_id)
            )
            self._db.execute(
                "INSERT INTO outbox_message (device_id, seq, channel, ts, payload) VALUES (?, ?, ?, ?, ?)",
                (self.device_id, seq, channel, ts, text),
            )
        self._next = seq + 1
        self._count += 1
        return OutboxEntry(seq, channel, ts, body)

    def pending(self, limit: int | None = None) -> list[OutboxEntry]:
        """Messages not yet acknowledged, oldest (lowest seq) first."""
        sql = "SELECT seq, channel, ts, payload FROM outbox_message WHERE device_id = ? ORDER BY seq"
        params: tuple[Any, ...] = (self.device_id,)
        if limit is not None:
            sql += " LIMIT ?"
            params += (limit,)
        return [OutboxEntry(int(s), c, t, json.loads(p)) for s, c, t, p in self._db.execute(sql, params)]

    def pending_seqs(self) -> list[int]:
        rows = self._db.execute("SELECT seq FROM outbox_message WHERE device_id = ? ORDER BY seq", (self.device_id,))
        return [int(r[0]) for r in rows]

    def ack(self, seqs: Iterable[int]) -> int:
        """Drop acknowledged (or rejected) seqs; unknown seqs are ignored. Returns how many were dropped."""
        wanted = sorted({int(s) for s in seqs})
        if not wanted:
            return 0
        removed = 0
        with self._db:
            self._db.execute("BEGIN")
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                marks = ",".join("?" * len(chunk))
                cursor = self._db.execute(
                    f"DELETE FROM outbox_message WHERE device_id = ? AND seq IN ({marks})",
                    (self.device_id, *chunk),
                )
                removed += cursor.rowcount
        self._count -= removed
        return removed

    def __len__(self) -> int:
        return self._count

    def close(self) -> None:
        """Close the store when this outbox owns it (`open_outbox`); a shared store is closed by its owner."""
        if self._owns_store:
            self.store.close()


def open_outbox(path: str | Path | None = None, device_id: str = "device") -> Outbox:
    """A single device's outbox in its own file (or in memory when `path` is None); `close()` closes the file."""
    outbox = OutboxStore(path).outbox(device_id)
    outbox._owns_store = True
    return outbox
