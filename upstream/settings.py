"""Where data goes upward: one entry per supervision platform, each with its data classes and field names."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, HttpUrl, SecretStr, field_validator

DataClass = Literal["transactions", "food_tests", "device_status", "alerts"]


class UpstreamTarget(BaseModel):
    model_config = {"extra": "forbid"}

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$", description="e.g. futian-district")
    url: HttpUrl
    # HMAC-SHA256 key shared with the receiver; every request carries X-MarketFleet-Signature over timestamp + body
    secret: SecretStr
    classes: list[DataClass] = Field(default=["transactions", "food_tests", "device_status", "alerts"], min_length=1)
    markets: list[str] = Field(default_factory=list, description="only these markets; empty: every market")
    # their field name for ours, per data class: {"transactions": {"total": "amount"}}; unnamed fields keep ours
    fields: dict[DataClass, dict[str, str]] = Field(default_factory=dict)
    batch_size: int = Field(default=200, ge=1, le=10_000)
    timeout_s: float = Field(default=10.0, gt=0)
    max_backoff_s: float = Field(default=300.0, ge=1)

    @field_validator("fields")
    @classmethod
    def _targets_unique(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        for data_class, mapping in value.items():
            renamed = list(mapping.values())
            if len(set(renamed)) != len(renamed):
                raise ValueError(f"fields.{data_class}: two of our fields map to the same name")
        return value


class UpstreamSettings(BaseModel):
    model_config = {"extra": "forbid"}

    targets: list[UpstreamTarget] = Field(default_factory=list)
    poll_interval_s: float = Field(default=1.0, gt=0)

    @field_validator("targets")
    @classmethod
    def _names_unique(cls, value: list[UpstreamTarget]) -> list[UpstreamTarget]:
        names = [t.name for t in value]
        if len(set(names)) != len(names):
            raise ValueError("upstream target names must be unique")
        return value
