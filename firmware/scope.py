"""Which campaigns a caller limited to some markets may see and steer (issue 11: market scoping everywhere).

A campaign touches the markets of the devices it holds jobs for and the markets its target names. A caller
scoped to markets sees a campaign that touches one of theirs (its jobs listed only for their devices) and may
steer (pause, resume, cancel, retry, roll back) only one that stays inside theirs: no job elsewhere, a target
naming only their markets, and no dynamic enrolment that could reach beyond them. A new campaign from such a
caller must name its markets. Callers with every market (`markets is None`) are not limited.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from firmware.errors import CampaignNotFound, JobNotFound
from firmware.models import Campaign, DeviceJob
from firmware.schemas import Target
from fleet.errors import Forbidden

Markets = frozenset[str] | None


def _target_markets(target: dict[str, Any] | None) -> set[str]:
    return set((target or {}).get("markets") or [])


async def visible_ids(markets: Collection[str]) -> set[int]:
    """Every campaign touching one of `markets`."""
    ids = set(await DeviceJob.filter(device__market_id__in=list(markets)).distinct().values_list("campaign_id",
                                                                                                   flat=True))
    for campaign_id, target in await Campaign.all().values_list("id", "target"):
        if _target_markets(target) & set(markets):
            ids.add(campaign_id)
    return ids


async def ensure_visible(campaign_id: int, markets: Markets) -> None:
    """404 for a campaign the caller cannot see (the same answer as for one that does not exist)."""
    if markets is None:
        return
    campaign = await Campaign.get_or_none(id=campaign_id)
    if campaign is not None and (
        _target_markets(campaign.target) & markets
        or await DeviceJob.exists(campaign_id=campaign_id, device__market_id__in=list(markets))
    ):
        return
    raise CampaignNotFound(f"campaign {campaign_id} not found")


async def ensure_owned(campaign_id: int, markets: Markets) -> None:
    """403 unless the campaign stays inside the caller's markets (404 if they cannot see it at all)."""
    if markets is None:
        return
    await ensure_visible(campaign_id, markets)
    campaign = await Campaign.get(id=campaign_id)
    named = _target_markets(campaign.target)
    outside = await DeviceJob.filter(campaign_id=campaign_id).exclude(device__market_id__in=list(markets)).exists()
    if outside or not named <= markets or (campaign.dynamic_enrolment and not named):
        raise Forbidden(f"campaign {campaign_id} reaches devices outside your markets")


def ensure_target_inside(target: Target, markets: Markets) -> None:
    """A scoped caller's new campaign names its markets, all of them theirs."""
    if markets is None:
        return
    if not target.markets:
        raise Forbidden("name target.markets: you may update devices only in " + ", ".join(sorted(markets)))
    foreign = sorted(set(target.markets) - markets)
    if foreign:
        raise Forbidden(f"target.markets: {foreign[0]!r} is not one of your markets")


async def ensure_job_visible(job_id: int, markets: Markets) -> None:
    if markets is None:
        return
    if not await DeviceJob.exists(id=job_id, device__market_id__in=list(markets)):
        raise JobNotFound(f"job {job_id} not found")
