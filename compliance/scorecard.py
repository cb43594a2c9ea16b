"""The market scorecard: SZ appendix A's hardware section and data-transmission rows, and the device-related
rows of the Zhengzhou scoring rules, computed from plain facts about one market.

`score_market(facts)` is pure: `MarketFacts` (compliance/facts.py) in, `Scorecard` out;
`compliance/collector.py` gathers the facts. The tables give maxima, not partial-credit rules, so the policy
is ours (docs/compliance.md):

- SZ rows whose criterion *is* a model parameter (scale type approval, detector ≥ 5 channels, tablet) score
  max × share of devices whose model is shown to meet the clause: no proof, no points (unknown when nothing is
  proven either way).
- SZ rows about quantity (one camera per 60 m², one flow counter per entrance, a screen per stall) score
  max × coverage × (1 − share of devices whose model is shown to *fail* the clause).
- SZ data transmission: loss < 5 % scores the row, otherwise nothing.
- ZZ rows are all-or-nothing as the rules write them; `partly` marks progress that earns no points yet.
Points are rounded down to 0.1 so the card never promises more than an evaluator would give.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from compliance.checks import check_model
from compliance.facts import (
    LOSS_LIMIT,
    DeviceFacts,
    MarketFacts,
    cameras_required,
    entrance_coverage,
    loss_figures,
)
from compliance.requirements import Standard, load_standards, select_standards
from compliance.schemas import Scorecard, ScorecardTotal, ScoreItem, ScoreStatus

__all__ = ["ROWS", "Row", "score_market"]

SZ_HARDWARE = "SZ A.1 硬件设备"
SZ_TRANSMISSION = "SZ A.1 数据传输"
ZZ_DEVICES = "ZZ 附件1 (device rows)"


@dataclass(frozen=True, slots=True)
class Row:
    """One row of an evaluation table as the scorecard shows it."""

    id: str
    section: str
    clause: str
    title: str
    title_zh: str
    max_points: float
    scoring: str


def _sz(id: str, clause: str, title: str, title_zh: str, max_points: float, scoring: str) -> Row:
    return Row(id, SZ_HARDWARE, clause, title, title_zh, max_points, scoring)


_SHARE = "max × share of devices whose model meets {} (no proof, no points)"
_ONE = "max if ≥ 1 registered, less the share of models failing {}"
_ATTEST = "not judged: outside the device fleet"
_LOSS = "max if data loss (sequence gaps) < 5 % over the window, else 0"

ROWS: dict[str, Row] = {row.id: row for row in (
    _sz("sz-a1-scale", "SZ A.1 数据采集设备; SZ 6.2", "Traceable scales with type approval", "智能溯源电子秤", 4.0,
        _SHARE.format("SZ 6.2")),
    _sz("sz-a1-food-detector", "SZ A.1 数据采集设备; SZ 6.3", "Rapid-test detectors, ≥ 5 channels", "快速检测设备", 4.0,
        _SHARE.format("SZ 6.3")),
    _sz("sz-a1-inspection-tablet", "SZ A.1 数据采集设备; SZ 6.4", "Inspection tablets", "巡检仪", 3.0,
        _SHARE.format("SZ 6.4")),
    _sz("sz-a1-vending", "SZ A.1 数据采集设备 (扩展设备); SZ 6.14", "Contact-free vending (cold-chain lockers)",
        "无人接触售卖机", 0.5, _ONE.format("SZ 6.14")),
    _sz("sz-a1-stall-screen", "SZ A.1 信息展示设备; SZ 6.5", "A screen above every stall", "商户公示屏", 3.0,
        "max × stalls with an online stall screen / stalls, less the share of models failing SZ 6.5"),
    _sz("sz-a1-public-screen", "SZ A.1 信息展示设备; SZ 6.6", "Public information screen", "智慧公示屏", 3.0,
        _ONE.format("SZ 6.6")),
    _sz("sz-a1-broadcast", "SZ A.1 信息展示设备; SZ 6.7", "Broadcast system", "广播设备", 3.0, _ONE.format("SZ 6.7")),
    _sz("sz-a1-camera", "SZ A.1 监控设备; SZ 6.8.1", "One camera per 60 m²", "视频监控设备", 3.0,
        "max × min(cameras / ⌈floor area / 60 m²⌉, 1), less the share of models failing SZ 6.8"),
    _sz("sz-a1-flow-counter", "SZ A.1 监控设备; SZ 6.9.1", "One flow counter per entrance", "客流监测设备", 3.0,
        "max × entrances with a counter / entrances, less the share of models failing SZ 6.9"),
    _sz("sz-a1-emergency", "SZ A.1 监控设备 (扩展设备); SZ 6.13", "Emergency management devices (fire alarm data)",
        "应急管理设备", 1.0, _ONE.format("SZ 6.13")),
    _sz("sz-a1-network", "SZ A.1 计算机网络; SZ 6.10", "Computer network", "计算机网络建设", 3.0, _ATTEST),
    _sz("sz-a1-machine-room", "SZ A.1 计算机机房; SZ 6.11", "Machine room", "计算机机房建设", 3.0, _ATTEST),
    _sz("sz-a1-other", "SZ A.1 其它设备 (扩展设备); SZ 6.15", "Attendance and office equipment",
        "考勤打卡机、电脑、打印机等", 1.5, _ATTEST),
    Row("sz-a1-transmission-management", SZ_TRANSMISSION, "SZ A.1 智慧农贸市场管理系统 / 数据传输",
        "Data transmission: all devices", "数据传输（管理系统）", 1.0, _LOSS),
    Row("sz-a1-transmission-merchant", SZ_TRANSMISSION, "SZ A.1 商户经营管理系统 / 数据传输; SZ 7.2.1, 7.2.10",
        "Data transmission: scales", "数据传输（商户经营管理系统）", 1.0, _LOSS),
    Row("sz-a1-transmission-consumer", SZ_TRANSMISSION, "SZ A.1 消费者互动系统 / 数据传输",
        "Data transmission: consumer apps", "数据传输（消费者互动系统）", 1.0, _ATTEST),
    Row("zz-stall-screens", ZZ_DEVICES, "ZZ 附件1 市场商户信息智能化展示", "Every stall's screen lit",
        "所有商户亮屏显示经营信息", 10.0,
        "10 − 1 per stall without an online stall screen (what the screens show is not checked)"),
    Row("zz-cameras", ZZ_DEVICES, "ZZ 附件1 应急体系: 配备摄像头，在线实时监控", "Cameras online, full coverage",
        "配备摄像头，在线实时监控，实现功能全覆盖", 5.0,
        "5 if online cameras ≥ ⌈floor area / 60 m²⌉ (SZ 6.8.1 as the coverage yardstick), else 0"),
    Row("zz-fire", ZZ_DEVICES, "ZZ 附件1 应急体系: 配备消防设施", "Fire facilities connected",
        "配备消防设施，实现功能全覆盖", 5.0, "5 if ≥ 1 fire panel and all of them online, else 0"),
    Row("zz-thermal", ZZ_DEVICES, "ZZ 附件1 应急体系: 配备热成像 AI 测温设施", "Thermal-imaging temperature screening",
        "热成像 AI 测温设施", 5.0,
        "5 if every entrance has an online thermometer not stated to lack thermal imaging, else 0"),
    Row("zz-fever-warning", ZZ_DEVICES, "ZZ 附件1 应急体系: 进出人员体温异常预警", "Fever warning", "体温异常预警", 1.0,
        "1 if ≥ 1 online thermometer (its kind reports fever events; alert routing is not checked)"),
    Row("zz-flow-analysis", ZZ_DEVICES, "ZZ 附件1 应急体系: 客流分析", "Passenger-flow analysis", "客流分析", 2.0,
        "2 if ≥ 1 online flow counter"),
    Row("zz-fire-warning", ZZ_DEVICES, "ZZ 附件1 应急体系: 消防预警", "Fire warning", "消防预警", 2.0,
        "2 if ≥ 1 online fire panel"),
    Row("zz-big-screen", ZZ_DEVICES, "ZZ 附件1 数据分析体系: 配备多媒体显示大屏", "Multimedia big screen",
        "多媒体显示大屏", 5.0, "5 if ≥ 1 online public screen"),
)}


# ---------------------------------------------------------------- model conformity against clauses


@dataclass
class Conformity:
    conforming: int = 0
    failing: int = 0
    unverified: int = 0
    failed_clauses: set[str] = field(default_factory=set)
    missing_keys: set[str] = field(default_factory=set)

    def evidence(self) -> dict[str, Any]:
        return {
            "models_conforming": self.conforming,
            "models_failing": self.failing,
            "models_unverified": self.unverified,
            **({"failed_clauses": sorted(self.failed_clauses)} if self.failed_clauses else {}),
            **({"missing_spec_keys": sorted(self.missing_keys)} if self.missing_keys else {}),
        }

    def actions(self, kind: str) -> list[str]:
        found = []
        if self.failing:
            found.append(f"{self.failing} device(s) have a model failing {', '.join(sorted(self.failed_clauses))}: "
                         "replace them or correct the specs.")
        if self.unverified:
            keys = f" ({', '.join(sorted(self.missing_keys))})" if self.missing_keys else ""
            found.append(f"{self.unverified} device(s) have no model or incomplete specs{keys}: the vendor states "
                         f"them (GET /api/v1/compliance/spec-keys/{kind}).")
        return found


class _Checker:
    """Checks device models against clause prefixes, once per (model, screen, prefix)."""

    def __init__(self, standards: Sequence[Standard]) -> None:
        self.standards = tuple(standards)
        self.cache: dict[tuple[Any, ...], tuple[str, set[str], set[str]]] = {}

    def conformity(self, devices: Sequence[DeviceFacts], prefix: str) -> Conformity:
        result = Conformity()
        for device in devices:
            verdict, clauses, keys = self.verdict(device, prefix)
            if verdict == "conforming":
                result.conforming += 1
            elif verdict == "failing":
                result.failing += 1
                result.failed_clauses |= clauses
            else:
                result.unverified += 1
                result.missing_keys |= keys
        return result

    def verdict(self, device: DeviceFacts, prefix: str) -> tuple[str, set[str], set[str]]:
        """("conforming" | "failing" | "unverified", failed clauses, missing spec keys) for clauses under prefix."""
        if device.specs is None:
            return "unverified", set(), set()
        model = device.model_id if device.model_id is not None else id(device.specs)
        key = (model, device.kind, device.screen, prefix)
        if key not in self.cache:
            specs = dict(device.specs)
            if device.screen and "screen" not in specs:
                specs["screen"] = device.screen  # the device's role decides which display clauses apply
            report = check_model(device.kind, specs, self.standards)

            def under(clause: str) -> bool:
                return clause == prefix or clause.startswith((prefix + ".", prefix + " "))

            failed = {r.clause for r in report.failed if under(r.clause)}
            missing = {r.key for r in report.missing if under(r.clause)}
            self.cache[key] = ("failing" if failed else "unverified" if missing else "conforming", failed, missing)
        return self.cache[key]


# ---------------------------------------------------------------- the card


def _points(max_points: float, share: float) -> float:
    return math.floor(max_points * max(0.0, min(1.0, share)) * 10 + 1e-9) / 10


def _status(points: float | None, max_points: float) -> ScoreStatus:
    if points is None:
        return "unknown"
    if points >= max_points - 1e-9:
        return "met"
    return "not_met" if points <= 0 else "partly"


@dataclass
class _Card:
    facts: MarketFacts
    checker: _Checker
    items: list[ScoreItem] = field(default_factory=list)

    def add(self, row_id: str, points: float | None, evidence: dict[str, Any], actions: Sequence[str] = (),
            status: ScoreStatus | None = None) -> None:
        row = ROWS[row_id]
        self.items.append(ScoreItem(
            id=row.id, source="ZZ" if row.section == ZZ_DEVICES else "SZ", section=row.section, clause=row.clause,
            title=row.title, title_zh=row.title_zh, max_points=row.max_points, points=points,
            status=status or _status(points, row.max_points), evidence=evidence,
            action=" ".join(a for a in actions if a), scoring=row.scoring,
        ))

    def model_criterion(self, row_id: str, kind: str, prefix: str) -> None:
        """A row whose criterion is the model itself (scale type approval, detector channels, tablet)."""
        devices = self.facts.of_kind(kind)
        if not devices:
            self.add(row_id, 0.0, {"devices": 0}, [f"Register the market's {kind} devices ({prefix})."])
            return
        conf = self.checker.conformity(devices, prefix)
        proven = conf.conforming or conf.failing
        points = _points(ROWS[row_id].max_points, conf.conforming / len(devices)) if proven else None
        evidence = {"devices": len(devices), "online": sum(d.is_online() for d in devices), **conf.evidence()}
        self.add(row_id, points, evidence, conf.actions(kind))

    def quantity(self, row_id: str, kind: str, prefix: str, devices: Sequence[DeviceFacts], required: int | None,
                 covered: int, evidence: dict[str, Any], actions: Sequence[str]) -> None:
        """A row about how many devices there are: coverage × (1 − share of models shown to fail the clause)."""
        if required is None:
            self.add(row_id, None, evidence, actions)
            return
        conf = self.checker.conformity(devices, prefix)
        failing_share = conf.failing / len(devices) if devices else 0.0
        coverage = min(covered, required) / required if required else 1.0
        points = _points(ROWS[row_id].max_points, coverage * (1 - failing_share))
        evidence = {**evidence, "online": sum(d.is_online() for d in devices), **conf.evidence()}
        self.add(row_id, points, evidence, [*actions, *conf.actions(kind)])

    def present(self, row_id: str, kind: str, prefix: str, devices: Sequence[DeviceFacts], missing: str) -> None:
        self.quantity(row_id, kind, prefix, devices, 1, len(devices), {"devices": len(devices)},
                      [] if devices else [missing])

    def all_or_nothing(self, row_id: str, done: bool | None, progress: bool, evidence: dict[str, Any],
                       action: str) -> None:
        if done is None:
            self.add(row_id, None, evidence, [action])
            return
        row = ROWS[row_id]
        status: ScoreStatus = "met" if done else "partly" if progress else "not_met"
        self.add(row_id, row.max_points if done else 0.0, {**evidence, "online_basis": self.facts.online_basis},
                 [] if done else [action], status)


def _sz_hardware(card: _Card) -> None:
    facts = card.facts
    card.model_criterion("sz-a1-scale", "scale", "SZ 6.2")
    card.model_criterion("sz-a1-food-detector", "food_detector", "SZ 6.3")
    card.model_criterion("sz-a1-inspection-tablet", "inspection_tablet", "SZ 6.4")
    card.present("sz-a1-vending", "cold_locker", "SZ 6.14", facts.of_kind("cold_locker"),
                 "Place a cold-chain locker in a public area (SZ 6.14.1).")

    screens, stalls = facts.screens("stall"), facts.stalls
    lit = {d.stall for d in screens if d.stall and d.is_online()}
    unassigned = sum(1 for d in screens if not d.stall)
    actions = [] if stalls else ["Declare the stall count in the layout or register the stalls."]
    if stalls and len(lit) < stalls:
        actions.append(f"{stalls - len(lit)} stall(s) lack an online stall screen (SZ 6.5.2: one for every stall).")
    if unassigned:
        actions.append(f"{unassigned} stall screen(s) are not assigned to a stall.")
    card.quantity("sz-a1-stall-screen", "display", "SZ 6.5", screens, stalls or None, len(lit),
                  {"stalls": stalls, "stall_screens": len(screens), "stalls_with_online_screen": len(lit),
                   "screens_offline": sum(1 for d in screens if d.stall and not d.is_online()),
                   "screens_unassigned": unassigned}, actions)

    card.present("sz-a1-public-screen", "display", "SZ 6.6", facts.screens("public"),
                 "Install a public screen (a display with screen = public) (SZ 6.6.1).")
    card.present("sz-a1-broadcast", "broadcast", "SZ 6.7", facts.of_kind("broadcast"),
                 "Connect the broadcast system (SZ 6.7.1).")

    layout, cameras = facts.layout, facts.of_kind("camera")
    required = cameras_required(layout.floor_area_m2) if layout else None
    if required is None:
        actions = ["Declare the floor area (PUT /api/v1/compliance/markets/{code}/layout)."]
    else:
        actions = [f"Install {required - len(cameras)} more camera(s)."] if len(cameras) < required else []
    card.quantity("sz-a1-camera", "camera", "SZ 6.8", cameras, required, len(cameras),
                  {"cameras": len(cameras), "floor_area_m2": layout.floor_area_m2 if layout else None,
                   "cameras_required": required}, actions)

    counters, entrances = facts.of_kind("flow_counter"), facts.entrances
    coverage = entrance_coverage(entrances, counters)
    actions = [] if entrances else ["Declare the market's entrances in the layout."]
    if coverage.uncovered:
        actions.append(f"Install a flow counter at: {', '.join(coverage.uncovered)}.")
    if coverage.assumed:
        actions.append("Label each counter with its entrance (labels.entrance).")
    card.quantity("sz-a1-flow-counter", "flow_counter", "SZ 6.9", counters, len(entrances) or None,
                  len(coverage.covered),
                  {"entrances": len(entrances), "flow_counters": len(counters),
                   "entrances_covered": len(coverage.covered), "uncovered_entrances": list(coverage.uncovered),
                   "counters_without_entrance_label": coverage.assumed}, actions)

    card.present("sz-a1-emergency", "fire_panel", "SZ 6.13", facts.of_kind("fire_panel"),
                  "Connect the fire-alarm panel (SZ 6.13.1).")
    for row_id in ("sz-a1-network", "sz-a1-machine-room", "sz-a1-other"):
        card.add(row_id, None, {}, ["Not a registered device: attest on site."])


def _sz_transmission(card: _Card) -> None:
    facts = card.facts
    for row_id, devices in (("sz-a1-transmission-management", list(facts.devices)),
                            ("sz-a1-transmission-merchant", facts.of_kind("scale"))):
        ids = [d.id for d in devices]
        figures = None if facts.sequence_spans is None else loss_figures(facts.sequence_spans, ids)
        if figures is None:
            no_source = facts.sequence_spans is None
            reason = "no sequence-number source" if no_source else "no messages in the window"
            card.add(row_id, None, {"devices": len(ids), "basis": facts.sequence_basis, "reason": reason},
                     ["Connect the ingest pipeline's sequence statistics."] if no_source else [])
            continue
        met = figures.rate < LOSS_LIMIT
        card.add(row_id, 1.0 if met else 0.0,
                 {"devices": len(ids), "devices_reporting": figures.devices, "expected": figures.expected,
                  "received": figures.received, "lost": figures.lost, "loss_rate_pct": round(figures.rate * 100, 2),
                  "window_days": facts.window_days, "basis": facts.sequence_basis},
                 [] if met else ["Find the devices with the largest gaps and check their outbox replay (断点续传)."])
    card.add("sz-a1-transmission-consumer", None, {}, ["Consumer apps are not devices: attest separately."])


def _zz(card: _Card) -> None:
    facts = card.facts
    stalls = facts.stalls
    lit = {d.stall for d in facts.screens("stall") if d.stall and d.is_online()}
    dark = max(0, stalls - len(lit))
    card.add("zz-stall-screens", float(max(0, 10 - dark)) if stalls else None,
             {"stalls": stalls, "stalls_with_online_screen": len(lit), "stalls_dark": dark,
              "online_basis": facts.online_basis},
             [f"{dark} stall(s) have no lit screen; each costs 1 point."] if dark
             else [] if stalls else ["Declare the stall count in the layout or register the stalls."])

    cameras_online = sum(d.is_online() for d in facts.of_kind("camera"))
    required = cameras_required(facts.layout.floor_area_m2) if facts.layout else None
    card.all_or_nothing("zz-cameras", None if required is None else cameras_online >= required, cameras_online > 0,
                        {"cameras": len(facts.of_kind("camera")), "cameras_online": cameras_online,
                         "cameras_required": required},
                        "Declare the floor area." if required is None else f"Bring online cameras to {required}.")

    panels = facts.of_kind("fire_panel")
    panels_online = sum(d.is_online() for d in panels)
    card.all_or_nothing("zz-fire", bool(panels) and panels_online == len(panels), panels_online > 0,
                        {"fire_panels": len(panels), "fire_panels_online": panels_online},
                        "Connect every fire-alarm panel and keep it online.")

    thermometers = [d for d in facts.of_kind("thermometer") if d.is_online()]
    # A model stated to lack thermal imaging does not count; one that does not say is given the benefit.
    thermal = [d for d in thermometers if card.checker.verdict(d, "ZZ 附件1")[0] != "failing"]
    coverage = entrance_coverage(facts.entrances, thermal)
    card.all_or_nothing("zz-thermal", not coverage.uncovered if facts.entrances else None, bool(coverage.covered),
                        {"entrances": len(facts.entrances), "entrances_covered": len(coverage.covered),
                         "uncovered_entrances": list(coverage.uncovered), "thermometers_online": len(thermometers),
                         "not_thermal_imaging": len(thermometers) - len(thermal)},
                        f"Install an online thermal-imaging thermometer at: {', '.join(coverage.uncovered)}."
                        if facts.entrances else "Declare the market's entrances in the layout.")

    card.all_or_nothing("zz-fever-warning", bool(thermometers), False, {"thermometers_online": len(thermometers)},
                        "Connect an infrared thermometer; its fever events raise the warning.")
    counters_online = sum(d.is_online() for d in facts.of_kind("flow_counter"))
    card.all_or_nothing("zz-flow-analysis", counters_online > 0, False, {"flow_counters_online": counters_online},
                        "Connect a passenger-flow counter.")
    card.all_or_nothing("zz-fire-warning", panels_online > 0, False, {"fire_panels_online": panels_online},
                        "Connect a fire-alarm panel; its alarms raise the warning.")
    public_online = sum(d.is_online() for d in facts.screens("public"))
    card.all_or_nothing("zz-big-screen", public_online > 0, False, {"public_screens_online": public_online},
                        "Install a public screen (a display with screen = public).")


def _totals(items: Sequence[ScoreItem]) -> list[ScorecardTotal]:
    totals = []
    for section in (SZ_HARDWARE, SZ_TRANSMISSION, ZZ_DEVICES):
        chosen = [i for i in items if i.section == section]
        totals.append(ScorecardTotal(
            section=section,
            points=round(sum(i.points or 0.0 for i in chosen), 1),
            max_points=round(sum(i.max_points for i in chosen), 1),
            unknown_points=round(sum(i.max_points for i in chosen if i.points is None), 1),
        ))
    return totals


def score_market(
    facts: MarketFacts, standards: Sequence[Standard] | None = None, now: Callable[[], datetime] | None = None
) -> Scorecard:
    """Score one market from its facts (pure: reads nothing but the cached standards files)."""
    chosen = tuple(load_standards() if standards is None else standards)
    card = _Card(facts, _Checker(select_standards(["SZ"], chosen) + tuple(s for s in chosen if s.code == "ZZ")))
    _sz_hardware(card)
    _sz_transmission(card)
    _zz(card)
    return Scorecard(
        market=facts.market,
        generated_at=(now or (lambda: datetime.now(UTC)))(),
        window_days=facts.window_days,
        online_basis=facts.online_basis,
        sequence_basis=facts.sequence_basis,
        items=card.items,
        totals=_totals(card.items),
    )
