"""Scale ↔ label price sync: the conflict rule, in one place (docs/retail.md, "Who wins").

The platform is the arbiter and keeps one version counter per stall's PLU table. Every price change made on the
platform (dashboard, API, schedule) bumps it, stamps the product with it and pushes the new table to the
stall's scales; a scale reports the table version it holds in its `state` (`plu_version`).

A price typed on a scale is **accepted** when the scale already held the version of the product's last
platform-side change: it is then the newest decision about that product, and it wins (last writer wins).
It is **refused as stale** when the platform changed the product in a version the scale had not received yet:
the person at the scale was looking at an old price, so the platform's newer price stands, the refusal is
kept in the price history (`accepted = false`), and the table is sent to the scale again.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ScaleChangeDecision", "decide_scale_change"]


@dataclass(frozen=True)
class ScaleChangeDecision:
    accepted: bool
    reason: str


def decide_scale_change(product_plu_version: int, scale_held_version: int) -> ScaleChangeDecision:
    if scale_held_version >= product_plu_version:
        return ScaleChangeDecision(True, "scale held the latest table: its change is the newest")
    return ScaleChangeDecision(
        False,
        f"stale: the platform changed the price in table v{product_plu_version}, the scale held v{scale_held_version}",
    )
