"""Upward data flow of detector results (issue 11, "push transactions, detector results, …"): a food detector's
test results reach a target that takes the `food_tests` class, under that target's field names, signed and in
order; a target that did not ask for them gets none."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from fleet.envelope import Envelope
from marketfleet import db
from tests.integration.upstream.test_upstream import SECRET, T0, Receiver, _all_delivered, transaction, wait_for
from tests.services import find_free_port
from upstream import UpstreamService, UpstreamSettings


@pytest.fixture
async def registry_db(registry_url_factory) -> AsyncIterator[None]:
    await db.connect(registry_url_factory("sqlite"))
    try:
        yield
    finally:
        await db.close()


def food_test(n: int) -> Envelope:
    return Envelope(device_id="acme-FD1", kind="food_detector", market="SZ-FT-001", channel="event",
                    ts=T0 + timedelta(seconds=n), seq=n,
                    payload={"type": "test_result", "sample": f"spinach-{n}", "item": "pesticide_residue",
                             "inhibition_pct": 12.5 + n, "verdict": "pass"})


async def test_detector_results_go_up_as_food_tests_with_the_targets_field_names(registry_db) -> None:
    food_port, sales_port = find_free_port(), find_free_port()
    targets = [
        {"name": "district-food", "url": f"http://127.0.0.1:{food_port}/feed", "secret": SECRET,
         "classes": ["food_tests"], "fields": {"food_tests": {"sample": "ypmc", "verdict": "jcjg"}}},
        {"name": "city-sales", "url": f"http://127.0.0.1:{sales_port}/feed", "secret": SECRET,
         "classes": ["transactions"]},
    ]
    food, sales = Receiver(food_port), Receiver(sales_port)
    async with food.running(), sales.running():
        service = UpstreamService(UpstreamSettings(targets=targets, poll_interval_s=0.1))
        await service.start()
        try:
            for n in range(5):
                service.record(food_test(n))
                service.record(transaction(n))
            await service.flush()
            await wait_for(_all_delivered)
        finally:
            await service.aclose()
    assert food.bad_signatures == 0 and sales.bad_signatures == 0
    assert {r["class"] for r in food.records} == {"food_tests"} and len(food.records) == 5
    first = food.records[0]["data"]
    assert (first["ypmc"], first["jcjg"], first["device_id"], first["item"]) == (
        "spinach-0", "pass", "acme-FD1", "pesticide_residue")
    assert "sample" not in first and "verdict" not in first and "type" not in first
    assert [r["data"]["seq"] for r in food.records] == list(range(5))  # in order
    assert {r["class"] for r in sales.records} == {"transactions"} and len(sales.records) == 5
