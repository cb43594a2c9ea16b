"""Specs of device models that meet every item of every standard for their kind (conforming_models.json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

_CONFORMING: dict[str, dict[str, Any]] = json.loads(
    (Path(__file__).parent / "conforming_models.json").read_text(encoding="utf-8")
)


def conforming(name: str, **changes: Any) -> dict[str, Any]:
    """A fresh copy of the named model's specs (scale, food_detector, inspection_tablet, stall_screen,
    public_screen), with `changes` applied."""
    return {**_CONFORMING[name], **changes}
