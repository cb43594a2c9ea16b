"""The embedded broker raises the collector's thresholds of its process, unless they were already chosen."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from broker.embedded import GC_THRESHOLD, tune_gc


@pytest.fixture
def saved_threshold() -> Iterator[None]:
    before = gc.get_threshold()
    try:
        yield
    finally:
        gc.set_threshold(*before)


def test_defaults_are_raised(saved_threshold: None) -> None:
    gc.set_threshold(700, 10, 10)
    assert tune_gc() is True
    assert gc.get_threshold() == GC_THRESHOLD


def test_a_threshold_chosen_elsewhere_is_kept(saved_threshold: None) -> None:
    gc.set_threshold(1234, 5, 6)
    assert tune_gc() is False
    assert gc.get_threshold() == (1234, 5, 6)


def test_none_leaves_the_collector_alone(saved_threshold: None) -> None:
    gc.set_threshold(700, 10, 10)
    assert tune_gc(None) is False
    assert gc.get_threshold() == (700, 10, 10)
