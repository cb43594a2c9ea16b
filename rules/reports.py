"""The daily data-quality report per market (BJ 6.2.2): silent devices, dead letters, sequence gaps, abnormal
orders, alerts by rule — as HTML for people and CSV for the supervision platform.
"""

from __future__ import annotations

import csv
import html
import io
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from tortoise import Tortoise
from tortoise.functions import Count

from fleet.models import Device, DeviceStatus, Market
from rules.models import Alert

__all__ = ["DataQualityReport", "build_data_quality_report", "report_csv", "report_html", "write_report"]


@dataclass
class DataQualityReport:
    market: str
    market_name: str
    day: date
    timezone: str
    generated_at: datetime
    devices: int
    silent: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    sequence_gaps: list[dict[str, Any]] = field(default_factory=list)
    abnormal_orders: list[dict[str, Any]] = field(default_factory=list)
    alerts_by_rule: list[dict[str, Any]] = field(default_factory=list)

    @property
    def summary(self) -> dict[str, int]:
        return {
            "devices": self.devices,
            "silent devices": len(self.silent),
            "dead letters": sum(row["count"] for row in self.dead_letters),
            "missing sequence numbers": sum(row["missing"] for row in self.sequence_gaps),
            "abnormal orders": len(self.abnormal_orders),
            "alerts opened": sum(row["opened"] for row in self.alerts_by_rule),
        }


async def build_data_quality_report(
    market: str, day: date, *, timezone: str = "Asia/Shanghai", sequence_gaps: dict[str, int] | None = None,
) -> DataQualityReport:
    """The report of one market for one local day. `sequence_gaps` (device → missing numbers) comes from the
    engine, which counts gaps since the previous report; without it the section is empty."""
    row = await Market.get_or_none(code=market)
    zone = ZoneInfo(row.timezone if row and row.timezone else timezone)
    start = datetime.combine(day, time(0), zone).astimezone(UTC)
    end = start + timedelta(days=1)
    devices = await Device.filter(market_id=market).exclude(status=DeviceStatus.RETIRED).values_list(
        "id", "kind", "name", "last_seen")
    report = DataQualityReport(market, row.name if row else market, day, str(zone), datetime.now(UTC),
                               len(devices))
    for device_id, kind, name, last_seen in devices:
        if last_seen is None or last_seen < start:
            report.silent.append({"device_id": device_id, "kind": str(kind), "name": name,
                                  "last_seen": last_seen.isoformat() if last_seen else "never"})
    ids = [d[0] for d in devices]
    # The dead-letter table belongs to the transports (broker/); rules may not import broker, so it reads the
    # table through the ORM registry by name, and reports nothing where no transport keeps one.
    apps = Tortoise.apps
    try:
        dead_letter = apps.get_model("models", "DeadLetter") if apps is not None else None
    except Exception:
        dead_letter = None
    for chunk in range(0, len(ids), 1000) if dead_letter is not None else ():
        assert dead_letter is not None
        grouped = await (dead_letter.filter(received_at__gte=start, received_at__lt=end,
                                           device_id__in=ids[chunk:chunk + 1000])
                         .annotate(count=Count("id")).group_by("device_id", "reason")
                         .values("device_id", "reason", "count"))
        report.dead_letters += [{"device_id": g["device_id"], "reason": g["reason"], "count": int(g["count"])}
                                for g in grouped]
    report.dead_letters.sort(key=lambda r: (-r["count"], r["device_id"], r["reason"]))
    known = set(ids)
    report.sequence_gaps = sorted(({"device_id": d, "missing": n} for d, n in (sequence_gaps or {}).items()
                                   if d in known and n > 0), key=lambda r: (-r["missing"], r["device_id"]))
    opened = await Alert.filter(market=market, opened_at__gte=start, opened_at__lt=end).order_by("opened_at")
    by_rule: dict[str, dict[str, Any]] = {}
    for alert in opened:
        entry = by_rule.setdefault(alert.rule_id, {"rule_id": alert.rule_id, "rule_name": alert.rule_name,
                                                   "severity": alert.severity, "opened": 0})
        entry["opened"] += 1
        if alert.category == "trade":
            report.abnormal_orders.append({
                "alert_id": alert.id, "rule_id": alert.rule_id, "device_id": alert.device_id,
                "opened_at": alert.opened_at.isoformat(), "occurrences": alert.occurrences,
                "message": alert.message,
            })
    report.alerts_by_rule = sorted(by_rule.values(), key=lambda r: (-r["opened"], r["rule_id"]))
    return report


_SECTIONS = (
    ("Silent devices (no data since the day began)", "silent", ("device_id", "kind", "name", "last_seen")),
    ("Dead letters (uplinks refused)", "dead_letters", ("device_id", "reason", "count")),
    ("Sequence gaps (numbers never received)", "sequence_gaps", ("device_id", "missing")),
    ("Abnormal orders", "abnormal_orders", ("alert_id", "rule_id", "device_id", "opened_at", "occurrences",
                                             "message")),
    ("Alerts opened, by rule", "alerts_by_rule", ("rule_id", "rule_name", "severity", "opened")),
)


def report_html(report: DataQualityReport) -> str:
    esc = html.escape
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Data quality — {esc(report.market_name)} — {report.day}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:2em}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}th{background:#f3f3f3}</style></head><body>",
        f"<h1>Data-quality report: {esc(report.market_name)} ({esc(report.market)})</h1>",
        f"<p>Day {report.day} ({esc(report.timezone)}), generated {report.generated_at.isoformat(timespec='seconds')}"
        " — BJ 6.2.2</p>",
        "<table><tr><th>measure</th><th>value</th></tr>",
        *(f"<tr><td>{esc(k)}</td><td>{v}</td></tr>" for k, v in report.summary.items()),
        "</table>",
    ]
    for title, attribute, columns in _SECTIONS:
        rows = getattr(report, attribute)
        parts.append(f"<h2>{esc(title)}</h2>")
        if not rows:
            parts.append("<p>none</p>")
            continue
        parts.append("<table><tr>" + "".join(f"<th>{esc(c)}</th>" for c in columns) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{esc(str(row.get(c, '')))}</td>" for c in columns) + "</tr>"
                  for row in rows]
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def report_csv(report: DataQualityReport) -> str:
    """One row per finding: section, subject, measure, value — flat, so any spreadsheet can pivot it."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["market", "day", "section", "subject", "measure", "value"])
    for measure, value in report.summary.items():
        writer.writerow([report.market, report.day, "summary", "", measure, value])
    for row in report.silent:
        writer.writerow([report.market, report.day, "silent", row["device_id"], "last_seen", row["last_seen"]])
    for row in report.dead_letters:
        writer.writerow([report.market, report.day, "dead_letters", row["device_id"], row["reason"], row["count"]])
    for row in report.sequence_gaps:
        writer.writerow([report.market, report.day, "sequence_gaps", row["device_id"], "missing", row["missing"]])
    for row in report.abnormal_orders:
        writer.writerow([report.market, report.day, "abnormal_orders", row["device_id"], row["rule_id"],
                         row["message"]])
    for row in report.alerts_by_rule:
        writer.writerow([report.market, report.day, "alerts_by_rule", row["rule_id"], "opened", row["opened"]])
    return out.getvalue()


def write_report(report: DataQualityReport, directory: Path) -> list[Path]:
    """`{directory}/{market}/{day}.html` and `.csv`; returns both paths."""
    folder = directory / report.market
    folder.mkdir(parents=True, exist_ok=True)
    html_path, csv_path = folder / f"{report.day}.html", folder / f"{report.day}.csv"
    html_path.write_text(report_html(report), encoding="utf-8")
    csv_path.write_text(report_csv(report), encoding="utf-8")
    return [html_path, csv_path]
