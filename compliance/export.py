"""The scorecard as CSV, for the spreadsheet an evaluator fills in."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from compliance.schemas import Scorecard

__all__ = ["scorecard_csv"]

COLUMNS = ("section", "id", "clause", "title", "title_zh", "status", "points", "max_points", "evidence", "action",
           "scoring")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def scorecard_csv(card: Scorecard) -> str:
    """One row per item, then one per section total. Starts with a UTF-8 byte-order mark so that spreadsheet
    programs (Excel on Chinese Windows in particular) read the Chinese titles correctly."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for item in card.items:
        evidence = "; ".join(f"{k}={_cell(v)}" for k, v in item.evidence.items())
        writer.writerow([item.section, item.id, item.clause, item.title, item.title_zh, item.status,
                         _cell(item.points), _cell(item.max_points), evidence, item.action, item.scoring])
    for total in card.totals:
        writer.writerow([total.section, "total", "", "", "", "", _cell(total.points), _cell(total.max_points),
                         f"unknown_points={_cell(total.unknown_points)}", "", ""])
    return "\ufeff" + out.getvalue()
