"""Fixtures for the rules service against the real registry (SQLite and PostgreSQL, via `platform`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from rules import RulesService, RulesSettings, setup
from rules.models import Delivery, Recipient, RuleState

T = TypeVar("T")

# Short intervals so tests see in a second what production spaces out over minutes.
FAST = RulesSettings(scheduler=False, retry_base_s=0.2, retry_max_s=0.6, state_flush_s=0.1, aux_flush_s=0.5,
                     alert_flush_s=0.05, escalation_check_s=0.2, device_refresh_s=3600)



async def start_service(data_dir: Path, settings: RulesSettings = FAST, **kwargs: Any) -> RulesService:
    service = setup(settings, data_dir=data_dir, timezone="Asia/Shanghai", **kwargs)
    await service.start()
    return service


async def forget_routing_and_state() -> None:
    """What one test leaves behind that could act in the next one: recipients, queued deliveries, timers."""
    await Delivery.all().delete()
    await Recipient.all().delete()
    await RuleState.all().delete()


@pytest.fixture
async def rules_service(platform, tmp_path: Path) -> AsyncIterator[RulesService]:
    """A started rules service with fast timings on the module's registry; stopped and tidied after the test."""
    service = await start_service(tmp_path)
    try:
        yield service
    finally:
        await service.aclose()
        await forget_routing_and_state()
