"""The pipeline's fast-path duplicate window and the batcher."""

from __future__ import annotations

import asyncio

import pytest

from broker.batcher import Batcher
from broker.ingest import SeqWindow

pytestmark = pytest.mark.timeout(30)


def test_window_remembers_recent_seqs_exactly() -> None:
    window = SeqWindow(size=8)
    for seq in (1, 2, 3, 10):
        window.add("d", seq)
    assert window.seen("d", 10) and window.seen("d", 3)
    assert not window.seen("d", 4)  # a gap is not a duplicate
    assert not window.seen("d", 11)
    assert not window.seen("other", 10)
    assert window.high("d") == 10


def test_late_seq_inside_the_window_is_recorded() -> None:
    window = SeqWindow(size=8)
    window.add("d", 10)
    window.add("d", 5)  # arrived late (another path, a replay)
    assert window.seen("d", 5)
    assert window.high("d") == 10


def test_seqs_older_than_the_window_are_unknown_not_duplicates() -> None:
    window = SeqWindow(size=8)
    window.add("d", 1)
    window.add("d", 100)
    assert not window.seen("d", 1)  # left to the idempotent store
    window.add("d", 50)  # too old to record: ignored
    assert not window.seen("d", 50)
    assert window.seen("d", 100)


def test_big_jump_resets_the_mask() -> None:
    window = SeqWindow(size=4)
    window.add("d", 1)
    window.add("d", 2)
    window.add("d", 1000)
    assert window.seen("d", 1000) and not window.seen("d", 999)


async def test_batcher_groups_items_and_answers_in_order() -> None:
    batches: list[list[int]] = []

    async def process(items: list[int]) -> list[int]:
        batches.append(items)
        await asyncio.sleep(0.01)
        return [i * 10 for i in items]

    batcher: Batcher[int, int] = Batcher(process, lambda item, exc: -1, max_delay_s=0.005, max_items=50)
    batcher.start()
    futures = [await batcher.enqueue(i) for i in range(120)]
    assert await asyncio.gather(*futures) == [i * 10 for i in range(120)]
    assert len(batches) <= 4 and max(len(b) for b in batches) <= 50
    await batcher.aclose()


async def test_batcher_turns_a_failing_batch_into_error_answers() -> None:
    async def process(items: list[int]) -> list[int]:
        raise RuntimeError("store exploded")

    batcher: Batcher[int, str] = Batcher(process, lambda item, exc: f"error {item}", max_delay_s=0.001)
    batcher.start()
    assert await batcher.submit(3) == "error 3"
    await batcher.aclose()


async def test_batcher_applies_back_pressure() -> None:
    release = asyncio.Event()

    async def process(items: list[int]) -> list[int]:
        await release.wait()
        return items

    batcher: Batcher[int, int] = Batcher(process, lambda item, exc: -1, max_delay_s=0, max_items=1, max_pending=2)
    batcher.start()
    first = await batcher.enqueue(0)
    await asyncio.sleep(0.01)  # item 0 is being processed
    await batcher.enqueue(1)
    await batcher.enqueue(2)
    blocked = asyncio.create_task(batcher.enqueue(3))
    await asyncio.sleep(0.02)
    assert not blocked.done()
    release.set()
    await asyncio.wait_for(blocked, 1)
    assert await first == 0
    await batcher.aclose()
