"""Batcher's callback replies (`push`) and AckPublisher's merging: what the external worker relies on."""

from __future__ import annotations

import asyncio

from broker.acks import AckPublisher, merge_acks
from broker.batcher import Batcher
from broker.uplink import Ack, Rejection


async def _until(condition, within: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.002)


async def test_pushed_items_get_their_answers_by_callback_in_order_beside_futures() -> None:
    batches: list[list[int]] = []

    async def process(items: list[int]) -> list[int]:
        batches.append(items)
        return [i * 10 for i in items]

    batcher: Batcher[int, int] = Batcher(process, lambda item, _exc: -item, max_delay_s=0.001)
    batcher.start()
    got: list[tuple[str, int]] = []
    try:
        for i in range(5):
            batcher.push(i, lambda answer: got.append(("cb", answer)))
        future = batcher.enqueue_nowait(5)
        batcher.push(6, lambda answer: got.append(("cb", answer)))
        assert await asyncio.wait_for(future, 10) == 50
        await _until(lambda: len(got) == 6)
        assert got == [("cb", 0), ("cb", 10), ("cb", 20), ("cb", 30), ("cb", 40), ("cb", 60)]
        assert sum(len(b) for b in batches) == 7
    finally:
        await batcher.aclose()


async def test_a_failing_reply_callback_does_not_stop_the_others_or_the_batcher() -> None:
    async def process(items: list[int]) -> list[int]:
        return items

    batcher: Batcher[int, int] = Batcher(process, lambda item, _exc: -item, max_delay_s=0.001)
    batcher.start()
    got: list[int] = []

    def bad(_answer: int) -> None:
        raise RuntimeError("reply bug")

    try:
        batcher.push(1, bad)
        batcher.push(2, got.append)
        await _until(lambda: got == [2])
        batcher.push(3, got.append)  # still running
        await _until(lambda: got == [2, 3])
    finally:
        await batcher.aclose()


async def test_a_failed_batch_and_a_closing_batcher_answer_pushed_items_through_on_error() -> None:
    async def process(items: list[int]) -> list[int]:
        raise RuntimeError("store down")

    batcher: Batcher[int, int] = Batcher(process, lambda item, _exc: -item, max_delay_s=0.001)
    batcher.start()
    got: list[int] = []
    batcher.push(4, got.append)
    await _until(lambda: got == [-4])
    await batcher.aclose()

    idle: Batcher[int, int] = Batcher(process, lambda item, _exc: -item)  # never started: closing answers
    idle.push(7, got.append)
    await idle.aclose()
    assert got == [-4, -7]


def test_merge_acks_keeps_every_seq_and_rejection_in_order_and_the_highest_high() -> None:
    a = Ack("d1", seqs=[1, 2], high=2)
    b = Ack("d1", seqs=[], high=-1, rejected=[Rejection(3, "schema", "bad")])
    c = Ack("d1", seqs=[4], high=4)
    merged = merge_acks(a, b, c)
    assert (merged.seqs, merged.high, [r.seq for r in merged.rejected]) == ([1, 2, 4], 4, [3])
    assert merge_acks(a) is a


async def test_replies_to_one_topic_in_one_turn_leave_as_one_ack() -> None:
    sent: list[tuple[str, bytes]] = []

    async def publish(topic: str, data: bytes) -> None:
        sent.append((topic, data))

    acks = AckPublisher(publish)
    reply = acks.reply_to("mf/v1/M1/d1/down/ack")
    other = acks.reply_to("mf/v1/M1/d2/down/ack")
    for seq in range(3):
        reply(Ack("d1", seqs=[seq], high=seq))
    other(Ack("d2", seqs=[9], high=9))
    await acks.drain()
    assert sorted(sent) == [
        ("mf/v1/M1/d1/down/ack", b'{"seqs":[0,1,2],"high":2,"rejected":[]}'),
        ("mf/v1/M1/d2/down/ack", b'{"seqs":[9],"high":9,"rejected":[]}'),
    ]
