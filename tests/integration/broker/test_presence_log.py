"""Presence history (broker/presence_log.py): every change on the bus lands in the telemetry store, and
what is still buffered when the platform stops is written before it closes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from broker.bus import EnvelopeBus, PresenceChanged
from broker.presence_log import PresenceLog, presence_history
from telemetry import open_store
from tests.factories import eventually


async def test_changes_are_kept_newest_first_and_the_buffer_is_written_on_close(tmp_path) -> None:
    bus = EnvelopeBus()
    t0 = datetime.now(UTC) - timedelta(minutes=5)
    async with open_store("sqlite", path=tmp_path / "telemetry.sqlite3") as store:
        log = PresenceLog(store, bus.subscribe(maxsize=100, kinds=(PresenceChanged,), name="presence-log"))
        log.start()
        bus.publish(PresenceChanged("D1", "FT01", True, "connected", t0))
        bus.publish("not a presence change")  # other events on the bus are not its business
        bus.publish(PresenceChanged("D1", "FT01", False, "will", t0 + timedelta(seconds=30)))
        await eventually(lambda: _written(log, 2))
        bus.publish(PresenceChanged("D1", "FT01", True, "status", t0 + timedelta(seconds=60)))
        await log.aclose()  # stops following the bus, after writing what it holds
        history = await presence_history(store, "D1", t0 - timedelta(seconds=1), datetime.now(UTC), 10)
    assert [(r.fields["online"], r.fields["reason"]) for r in history] == [
        (True, "status"), (False, "will"), (True, "connected")]
    assert history[0].tags == {"market": "FT01"}


async def _written(log: PresenceLog, n: int) -> bool:
    return log.written >= n
