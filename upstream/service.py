"""`UpstreamService`: records events into the durable outbox, and one sender per target pushes them in order.

Recording and sending are separate on purpose. Events are written to the registry (one insert per batch of
events) as they happen, whether or not the receiver is up; a sender per target reads its oldest undelivered
rows and POSTs them as one JSON batch. A receiver that is down holds its sender back (exponential back-off up
to `max_backoff_s`), never the others, and gets everything in order once it returns. A batch the receiver
refuses for good (4xx other than 408/429: our data does not fit its schema) is marked failed with the
reason and skipped, so one bad record cannot block a city's feed; `GET /api/v1/upstream` shows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterable
from datetime import UTC, datetime
from typing import Any

import httpx

from rules.delivery import body_bytes, sign
from upstream.mapping import map_fields, records_for
from upstream.models import UpstreamRecord
from upstream.settings import UpstreamSettings, UpstreamTarget

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-MarketFleet-Signature"
TIMESTAMP_HEADER = "X-MarketFleet-Timestamp"
_RETRYABLE_4XX = {408, 425, 429}


class _Refused(Exception):
    """The receiver refused this batch for good."""


def setup(settings: UpstreamSettings) -> UpstreamService:
    return UpstreamService(settings)


class UpstreamService:
    def __init__(self, settings: UpstreamSettings, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        self.targets = {t.name: t for t in settings.targets}
        self._pending: list[UpstreamRecord] = []
        self._recorded = asyncio.Event()
        self._wake = {name: asyncio.Event() for name in self.targets}
        self._tasks: list[asyncio.Task[None]] = []
        self._client = httpx.AsyncClient(transport=transport)
        self.state: dict[str, dict[str, Any]] = {
            name: {"delivered": 0, "failed": 0, "last_error": "", "last_delivery": None, "backoff_s": 0.0}
            for name in self.targets}

    # ---------------------------------------------------------------- recording

    def record(self, event: Any) -> int:
        """Queue the records an event makes for every target that wants them; returns how many."""
        made = 0
        for data_class, market, record in records_for(event):
            for target in self.targets.values():
                if data_class in target.classes and (not target.markets or market in target.markets):
                    body = map_fields(record, target.fields.get(data_class, {}))  # type: ignore[call-overload]
                    self._pending.append(UpstreamRecord(target=target.name, data_class=data_class, market=market,
                                                        body=body))
                    made += 1
        if made:
            self._recorded.set()
        return made

    async def flush(self) -> None:
        """Write what `record` queued to the outbox (one insert), then wake the senders concerned."""
        rows, self._pending = self._pending, []
        if not rows:
            return
        try:
            await UpstreamRecord.bulk_create(rows)
        except Exception:
            self._pending[:0] = rows  # keep them, in order, for the next flush
            raise
        for name in {row.target for row in rows}:
            self._wake[name].set()

    def wake(self, target: str) -> None:
        """Make a target's sender look at the outbox now (after records were re-queued by hand)."""
        self._wake[target].set()

    def follow(self, events: AsyncIterable[Any]) -> None:
        """Record every event of a stream (the ingest bus, the rules' alert stream) in a task of this service."""
        self._tasks.append(asyncio.create_task(self._consume(events), name="upstream-follow"))

    async def _consume(self, events: AsyncIterable[Any]) -> None:
        async for event in events:
            try:
                self.record(event)
            except Exception:  # one odd event must not end the feed
                log.exception("upstream: could not map %r", type(event).__name__)

    async def _flusher(self) -> None:
        while True:
            await self._recorded.wait()
            self._recorded.clear()
            await asyncio.sleep(0.1)  # gather a burst into one insert
            try:
                await self.flush()
            except Exception:
                log.exception("upstream: outbox write failed; retrying")
                self._recorded.set()
                await asyncio.sleep(1.0)

    # ---------------------------------------------------------------- sending

    async def send_once(self, target: UpstreamTarget) -> int:
        """Deliver the oldest batch of undelivered records to `target`; returns how many were delivered.

        Raises httpx errors / `RuntimeError` when the receiver is unreachable or answers 5xx/408/429."""
        rows = await UpstreamRecord.filter(target=target.name, delivered_at=None, failed_at=None) \
            .order_by("id").limit(target.batch_size)
        if not rows:
            return 0
        try:
            await self._post(target, rows)
        except _Refused as err:
            await UpstreamRecord.filter(id__in=[r.id for r in rows]).update(
                failed_at=datetime.now(UTC), last_error=str(err)[:500])
            self.state[target.name]["failed"] += len(rows)
            self.state[target.name]["last_error"] = str(err)
            return 0
        await UpstreamRecord.filter(id__in=[r.id for r in rows]).update(delivered_at=datetime.now(UTC))
        state = self.state[target.name]
        state["delivered"] += len(rows)
        state["last_delivery"] = datetime.now(UTC).isoformat()
        return len(rows)

    async def _post(self, target: UpstreamTarget, rows: list[UpstreamRecord]) -> None:
        body = body_bytes({"source": "marketfleet", "records": [
            {"id": r.id, "class": r.data_class, "market": r.market, "data": r.body} for r in rows]})
        stamp = str(int(time.time()))
        headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: stamp,
                   SIGNATURE_HEADER: sign(target.secret.get_secret_value(), stamp, body)}
        response = await self._client.post(str(target.url), content=body, headers=headers, timeout=target.timeout_s)
        if response.is_success:
            return
        detail = f"{response.status_code}: {response.text[:200]}"
        if 400 <= response.status_code < 500 and response.status_code not in _RETRYABLE_4XX:
            raise _Refused(detail)
        raise RuntimeError(detail)

    async def _sender(self, target: UpstreamTarget) -> None:
        state, wake, backoff = self.state[target.name], self._wake[target.name], 0.0
        while True:
            try:
                sent = await self.send_once(target)
                backoff = state["backoff_s"] = 0.0
                if sent:
                    state["last_error"] = ""
                    continue  # more may be waiting: drain before sleeping
            except (httpx.HTTPError, RuntimeError) as err:
                backoff = min(target.max_backoff_s, max(1.0, backoff * 2))
                state["backoff_s"], state["last_error"] = backoff, f"{type(err).__name__}: {err}"[:500]
                log.warning("upstream %s: %s; retrying in %.0f s", target.name, state["last_error"], backoff)
                await asyncio.sleep(backoff)
                continue
            except Exception:
                log.exception("upstream %s: sender error", target.name)
            wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), self.settings.poll_interval_s)

    # ---------------------------------------------------------------- lifecycle and status

    async def start(self, *, send: bool = True) -> None:
        """Record always; send only where `send` (one process per deployment: the scheduler role), so several
        ingest processes recording into the same outbox never post a record twice."""
        self._tasks.append(asyncio.create_task(self._flusher(), name="upstream-flush"))
        for target in self.targets.values() if send else ():
            self._tasks.append(asyncio.create_task(self._sender(target), name=f"upstream-{target.name}"))

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        with contextlib.suppress(Exception):
            await self.flush()  # what was recorded but not yet written still goes to the outbox
        await self._client.aclose()

    async def status(self) -> list[dict[str, Any]]:
        out = []
        for name, target in self.targets.items():
            pending = await UpstreamRecord.filter(target=name, delivered_at=None, failed_at=None).count()
            out.append({"name": name, "url": str(target.url), "classes": target.classes, "pending": pending,
                        **self.state[name]})
        return out
