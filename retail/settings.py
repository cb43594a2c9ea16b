"""What `Settings.retail` holds (env `MF_RETAIL__…`). Only pydantic here, so the settings module can import it
without loading the ORM."""

from __future__ import annotations

from pydantic import BaseModel, Field


class RetailSettings(BaseModel):
    # SZ 6.11.2 b: scale sales are kept three years; the retail service deletes older ones at start and hourly
    transaction_retention_days: int = Field(default=1095, ge=1, description="days the scale ledger keeps sales")
