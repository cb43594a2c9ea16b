"""Outbox: one seq counter per device, order, ack removal, persistence across reopen."""

from __future__ import annotations

from pathlib import Path

from simulators.outbox import OutboxStore, open_outbox


def test_append_assigns_consecutive_seqs_across_channels_and_pending_is_in_order() -> None:
    outbox = open_outbox(None, "dev-1")
    entries = [outbox.append(ch, {"n": n}, f"2026-11-23T08:00:0{n}.000Z")
               for n, ch in enumerate(["telemetry", "event", "state", "telemetry"])]  # fmt: skip
    assert [e.seq for e in entries] == [0, 1, 2, 3]
    assert outbox.next_seq == 4 and len(outbox) == 4
    assert [(e.seq, e.channel, e.payload) for e in outbox.pending()] == [
        (0, "telemetry", {"n": 0}), (1, "event", {"n": 1}), (2, "state", {"n": 2}), (3, "telemetry", {"n": 3})
    ]  # fmt: skip
    assert [e.seq for e in outbox.pending(limit=2)] == [0, 1]
    assert entries[0].message == {"seq": 0, "ts": "2026-11-23T08:00:00.000Z", "payload": {"n": 0}}
    assert outbox.append("state", {"x": 1}).message == {"seq": 4, "payload": {"x": 1}}  # no clock: no ts
    outbox.close()


def test_ack_removes_stored_and_rejected_and_ignores_unknown() -> None:
    outbox = open_outbox(None, "dev-1")
    for n in range(10):
        outbox.append("telemetry", {"n": n})
    assert outbox.ack([1, 3, 5, 99, 3]) == 3
    assert outbox.ack([]) == 0
    assert outbox.pending_seqs() == [0, 2, 4, 6, 7, 8, 9]
    assert len(outbox) == 7
    assert outbox.ack(range(0, 10)) == 7
    assert outbox.pending() == [] and len(outbox) == 0
    assert outbox.append("telemetry", {}).seq == 10  # seqs are never reused
    outbox.close()


def test_seq_counter_and_pending_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    outbox = open_outbox(path, "dev-1")
    for n in range(5):
        outbox.append("event", {"名称": "白菜", "n": n})
    outbox.ack([0, 1])
    outbox.close()

    again = open_outbox(path, "dev-1")
    assert again.next_seq == 5 and len(again) == 3
    assert [(e.seq, e.payload["名称"]) for e in again.pending()] == [(2, "白菜"), (3, "白菜"), (4, "白菜")]
    again.ack([2, 3, 4])
    again.close()

    emptied = open_outbox(path, "dev-1")  # everything acknowledged: the counter is still kept
    assert len(emptied) == 0 and emptied.append("state", {}).seq == 5
    emptied.close()


def test_one_store_many_independent_devices(tmp_path: Path) -> None:
    with OutboxStore(tmp_path / "market.sqlite3") as store:
        a, b = store.outbox("a"), store.outbox("b")
        assert store.outbox("a") is a
        for _ in range(3):
            a.append("telemetry", {})
        b.append("telemetry", {})
        a.ack([0, 1, 2])
        assert (a.next_seq, len(a), b.next_seq, len(b)) == (3, 0, 1, 1)
        assert store.device_ids() == ["a", "b"]
    with OutboxStore(tmp_path / "market.sqlite3") as store:
        assert store.outbox("a").next_seq == 3 and store.outbox("b").pending_seqs() == [0]


def test_many_acks_in_one_call() -> None:
    outbox = open_outbox()
    for n in range(1500):
        outbox.append("telemetry", {"n": n})
    assert outbox.ack(range(1400)) == 1400
    assert outbox.pending_seqs() == list(range(1400, 1500))
