"""retail.group_commit.GroupCommit: batching, per-caller results and errors, a failed batch retried item by item."""

from __future__ import annotations

import asyncio

import pytest

from retail.group_commit import GroupCommit


class Ledger:
    """A tiny store whose write of a batch is all-or-nothing, like a transaction."""

    def __init__(self) -> None:
        self.rows: list[int] = []
        self.batches: list[list[int]] = []

    async def write(self, items: list[int]) -> list[int | Exception]:
        await asyncio.sleep(0.001)
        if 13 in items:
            raise ValueError("13 cannot be stored")  # fails the whole batch, as a failed commit would
        self.batches.append(list(items))
        self.rows += items
        return [item * 10 if item >= 0 else ValueError(f"{item} is negative") for item in items]


async def test_concurrent_items_share_a_batch_and_each_caller_gets_its_own_result() -> None:
    ledger = Ledger()
    writes = GroupCommit(ledger.write, window_s=0.01)
    results = await asyncio.gather(*(writes.submit(n) for n in range(20, 70)), return_exceptions=True)
    assert results == [n * 10 for n in range(20, 70)]
    assert ledger.batches == [list(range(20, 70))]  # one write, in arrival order


async def test_an_item_answered_with_an_error_fails_alone() -> None:
    ledger = Ledger()
    writes = GroupCommit(ledger.write)
    results = await asyncio.gather(writes.submit(1), writes.submit(-2), writes.submit(3), return_exceptions=True)
    assert results[0] == 10 and results[2] == 30
    assert isinstance(results[1], ValueError) and str(results[1]) == "-2 is negative"


async def test_a_batch_that_fails_as_a_whole_is_retried_item_by_item() -> None:
    ledger = Ledger()
    writes = GroupCommit(ledger.write)
    results = await asyncio.gather(*(writes.submit(n) for n in (11, 12, 13, 14)), return_exceptions=True)
    assert results[:2] == [110, 120] and results[3] == 140
    assert isinstance(results[2], ValueError) and "13 cannot be stored" in str(results[2])
    assert ledger.rows == [11, 12, 14]  # nothing written twice, the bad one not at all
    assert writes.stats.retried_alone == 1


async def test_items_arriving_during_a_write_form_the_next_batch_in_order() -> None:
    ledger = Ledger()
    writes = GroupCommit(ledger.write, window_s=0, max_batch=3)
    first = [asyncio.create_task(writes.submit(n)) for n in range(20, 25)]
    await asyncio.sleep(0)
    later = [asyncio.create_task(writes.submit(n)) for n in range(25, 27)]
    await asyncio.gather(*first, *later)
    assert [row for batch in ledger.batches for row in batch] == list(range(20, 27))
    assert max(len(batch) for batch in ledger.batches) == 3


async def test_a_caller_that_gave_up_before_its_batch_is_left_out() -> None:
    ledger = Ledger()
    writes = GroupCommit(ledger.write, window_s=0.05)
    kept, dropped = asyncio.create_task(writes.submit(1)), asyncio.create_task(writes.submit(2))
    await asyncio.sleep(0.001)
    dropped.cancel()
    assert await kept == 10
    assert ledger.rows == [1]


async def test_a_submit_from_inside_a_write_does_not_wait_for_itself() -> None:
    writes: GroupCommit[int, int]

    async def write(items: list[int]) -> list[int | Exception]:
        if 1 in items:
            await writes.submit(100)  # e.g. a sender that answers before the write returns
        return items

    writes = GroupCommit(write)
    assert await asyncio.wait_for(writes.submit(1), 10) == 1


async def test_after_close_queued_items_are_written_and_new_ones_refused() -> None:
    ledger = Ledger()
    writes = GroupCommit(ledger.write, window_s=0.01)
    queued = asyncio.create_task(writes.submit(5))
    await asyncio.sleep(0)
    await writes.aclose()
    assert await queued == 50
    with pytest.raises(RuntimeError, match="closed"):
        await writes.submit(6)


async def test_close_does_not_wait_forever_for_a_write_that_hangs() -> None:
    async def hang(items: list[int]) -> list[int | Exception]:
        await asyncio.Event().wait()  # a database that never answers
        return items

    writes = GroupCommit(hang, window_s=0)
    stuck = asyncio.create_task(writes.submit(1))
    await asyncio.sleep(0.01)
    await writes.aclose(timeout_s=0.05)
    with pytest.raises(RuntimeError, match="interrupted"):
        await stuck
