"""HTTP ingest's derived identities: result seqs and signatures (api/routes/ingest.py)."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime

from api.routes.ingest import RESULT_SEQ_BASE, _result_time, result_seq, sign


def test_result_seq_is_deterministic_and_outside_device_counters() -> None:
    seqs = {result_seq(f"R-{n}") for n in range(10_000)}
    assert len(seqs) == 10_000
    assert all(RESULT_SEQ_BASE <= s <= 2**63 - 1 for s in seqs)
    assert result_seq("R-1") == result_seq("R-1") != result_seq("R-2")


def test_result_time_stays_within_the_tested_second() -> None:
    tested = datetime(2026, 11, 23, 8, 15, 2, 987654, tzinfo=UTC)
    times = {_result_time(f"R-{n}", tested) for n in range(200)}
    assert all(tested.replace(microsecond=0) <= t < tested.replace(microsecond=0).replace(second=3) for t in times)
    assert len({t.microsecond // 1000 for t in times}) > 150  # spread over the milliseconds of that second
    assert _result_time("R-1", tested) == _result_time("R-1", tested)


def test_signature_format() -> None:
    expected = hmac.new(b"secret", b"1700000000.{}", hashlib.sha256).hexdigest()
    assert sign("secret", 1700000000, b"{}") == f"sha256={expected}"
