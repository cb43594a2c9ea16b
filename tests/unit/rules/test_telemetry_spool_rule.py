"""The telemetry_spool rules: what the rules service makes of this process's InfluxDB spool level.

The service's check reads a `SpoolStatus` (the store's own numbers) and steps the engine; these tests hand it
statuses directly and read the engine's transitions, the same ones the alert writer records.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rules import RuleError, RulesService, RulesSettings, parse_rule
from rules.engine import Transition
from rules.packs import BUILTIN_PACK, load_pack
from rules.routing import RecipientView, in_markets
from rules.schemas import Preferences
from telemetry import SpoolStatus

LIMIT = 100_000


def status(fill_percent: float, *, refused: int = 0, refusing: bool = False,
           directory: str = "/var/mf/telemetry-spool/marketfleet") -> SpoolStatus:
    return SpoolStatus(directory=directory, bytes=int(LIMIT * fill_percent / 100), max_bytes=LIMIT, batches=7,
                       refused=refused, refusing=refusing, spooling=fill_percent > 0)


@pytest.fixture
def service(tmp_path: Path) -> RulesService:
    svc = RulesService(RulesSettings(scheduler=False), data_dir=tmp_path, timezone="Asia/Shanghai", publish=None,
                       presence_sweep=None, telemetry=None)
    svc.engine.set_rules(load_pack(BUILTIN_PACK))
    return svc


async def changes(service: RulesService, spool: SpoolStatus) -> list[tuple[str, str]]:
    await service.check_telemetry_spool(spool)
    drained: list[Transition] = service.engine.drain()
    return [(t.action, t.rule.id) for t in drained]


async def test_filling_opens_once_at_80_percent_and_clears_below_70(service: RulesService) -> None:
    assert await changes(service, status(50)) == []
    assert await changes(service, status(81)) == [("open", "telemetry-spool-filling")]
    # Still filling: no second alert, no repeat per check.
    assert await changes(service, status(85)) == []
    assert await changes(service, status(75)) == []  # between the clear and open levels: stays open
    assert await changes(service, status(60)) == [("clear", "telemetry-spool-filling")]


async def test_full_opens_on_a_refused_write_and_resolves_once_drained(service: RulesService) -> None:
    opened = await changes(service, status(99.5, refused=3, refusing=True))
    assert sorted(opened) == [("open", "telemetry-spool-filling"), ("open", "telemetry-spool-full")]
    assert await changes(service, status(99.9, refused=40, refusing=True)) == []  # one alert, not one per write
    # InfluxDB back: the replay drains the spool; below 90 % the full alert resolves, below 70 % the warning.
    assert await changes(service, status(95, refused=40)) == []
    assert await changes(service, status(80, refused=40)) == [("clear", "telemetry-spool-full")]
    assert await changes(service, status(0, refused=40)) == [("clear", "telemetry-spool-filling")]


async def test_a_refusal_between_two_checks_counts_as_full(service: RulesService) -> None:
    """A batch was refused, then a smaller one fitted: the spool refused writes, so it says so."""
    await changes(service, status(10, refused=0))
    assert ("open", "telemetry-spool-full") in await changes(service, status(97, refused=1, refusing=False))


async def test_each_spool_has_its_own_alert(service: RulesService) -> None:
    """Two ingest processes (two spools) never resolve each other's alert."""
    a, b = "/srv/ingest-1/telemetry-spool/mf", "/srv/ingest-2/telemetry-spool/mf"
    await changes(service, status(90, directory=a))
    assert await changes(service, status(90, directory=b)) == [("open", "telemetry-spool-filling")]
    cleared = await service.check_telemetry_spool(status(0, directory=a))
    drained = service.engine.drain()
    assert cleared == 0 and len(drained) == 1 and drained[0].element.endswith(a)
    assert service.engine.state_of("telemetry-spool-filling", "", drained[0].element) is None
    assert service.engine.state_of("telemetry-spool-filling", "", drained[0].element.replace(a, b)) == "firing"


async def test_the_alert_message_names_the_host_and_level(service: RulesService) -> None:
    await service.check_telemetry_spool(status(99.5, refused=2, refusing=True))
    full = next(t for t in service.engine.drain() if t.rule.id == "telemetry-spool-full")
    assert full.value == 99.5 and full.device_id == "" and full.market is None
    assert full.context is not None and full.context["refused"] == 2 and full.context["max_bytes"] == LIMIT


def test_a_spool_rule_is_about_the_platform_not_devices() -> None:
    with pytest.raises(RuleError, match="scope: a telemetry_spool rule watches the platform itself"):
        parse_rule({"id": "s", "name": "s", "scope": {"markets": ["M1"]},
                    "condition": {"type": "telemetry_spool"}})


@pytest.mark.parametrize(("condition", "problem"), [
    ({"type": "telemetry_spool", "state": "filling", "percent": 80, "clear_percent": 85}, "must be below 80"),
    ({"type": "telemetry_spool", "state": "full", "percent": 95}, "percent is for state 'filling'"),
    ({"type": "telemetry_spool", "state": "filling", "percent": 120}, "less than or equal to 100"),
])
def test_spool_levels_that_make_no_sense_are_refused(condition: dict[str, object], problem: str) -> None:
    with pytest.raises(RuleError, match=problem):
        parse_rule({"id": "s", "name": "s", "condition": condition})


def test_a_custom_level_is_kept() -> None:
    rule = parse_rule({"id": "s", "name": "Spool at half", "condition": {"type": "telemetry_spool", "percent": 50}})
    assert rule.condition.fire_percent == 50 and rule.condition.clear_below == 40  # type: ignore[union-attr]


def test_a_platform_alert_reaches_managers_of_any_market() -> None:
    """The spool serves every market: a manager scoped to one market hears of it and may see it."""
    manager = RecipientView(1, "Manager of M1", "manager", frozenset({"M1"}), ({"type": "sse"},),
                            Preferences(markets=["M1"]))
    platform = {"category": "platform", "market": None, "severity": "critical", "kind": ""}
    device = {"category": "device", "market": None, "severity": "critical", "kind": "env_sensor"}
    assert manager.wants(platform) and not manager.wants(device)
    assert in_markets(None, "platform", {"M1"}) and not in_markets(None, "device", {"M1"})
    assert not in_markets("M2", "device", {"M1"}) and in_markets("M2", "device", None)
