"""What goes in and out of the registry: one pydantic model per use (create, public view, bulk result)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fleet.kinds import DeviceKind
from fleet.models import DeviceStatus

# Serials and codes end up in MQTT topics and CoAP paths: no '/', '+', '#' or spaces.
SERIAL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,47}$"
CODE_PATTERN = r"^[a-z0-9][a-z0-9_]{1,15}$"
MARKET_CODE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class MarketCreate(Strict):
    code: str = Field(pattern=MARKET_CODE_PATTERN)
    name: str = Field(min_length=1, max_length=200)
    district: str = Field(default="", max_length=100)
    timezone: str = "Asia/Shanghai"


class MarketPublic(MarketCreate):
    model_config = ConfigDict(from_attributes=True)


class StallCreate(Strict):
    number: str = Field(min_length=1, max_length=32)
    holder_name: str = Field(default="", max_length=100)
    category: str = Field(default="", max_length=50)


class VendorCreate(Strict):
    code: str = Field(pattern=CODE_PATTERN, description="short lowercase code; prefixes the vendor's device ids")
    name: str = Field(min_length=1, max_length=200)
    contact: str = Field(default="", max_length=200)


class VendorPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    code: str
    name: str
    contact: str
    active: bool
    created_at: datetime


class VendorCreated(VendorPublic):
    api_key: str = Field(description="shown once; only its hash is stored")


class DeviceModelCreate(Strict):
    kind: DeviceKind
    name: str = Field(min_length=1, max_length=100)
    firmware_line: str = Field(default="", max_length=64)
    specs: dict[str, Any] = Field(default_factory=dict)


class DeviceModelPublic(DeviceModelCreate):
    model_config = ConfigDict(from_attributes=True, extra="ignore")
    id: int
    vendor_id: int
    created_at: datetime


class DeviceCreate(Strict):
    serial: str = Field(pattern=SERIAL_PATTERN)
    kind: DeviceKind
    model: str | None = Field(default=None, max_length=100, description="name of a model this vendor registered")
    market: str | None = Field(default=None, pattern=MARKET_CODE_PATTERN)
    stall: str | None = Field(default=None, max_length=32)
    name: str = Field(default="", max_length=200)
    firmware_version: str = Field(default="", max_length=64)
    keepalive_s: int = Field(default=60, ge=5, le=3600)
    labels: dict[str, str] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _stall_needs_market(self) -> DeviceCreate:
        if self.stall and not self.market:
            raise ValueError("stall given without market")
        return self


class DeviceBulkCreate(Strict):
    devices: list[DeviceCreate] = Field(min_length=1)

    @model_validator(mode="after")
    def _serials_unique(self) -> DeviceBulkCreate:
        seen: dict[str, int] = {}
        for row, device in enumerate(self.devices):
            if device.serial in seen:
                raise ValueError(
                    f"devices[{row}].serial {device.serial!r} repeats devices[{seen[device.serial]}].serial"
                )
            seen[device.serial] = row
        return self


class DeviceCredential(BaseModel):
    device_id: str
    username: str
    secret: str = Field(description="shown once; only its hash is stored")


class BulkRow(BaseModel):
    row: int
    serial: str
    status: Literal["created", "existing", "error"]
    device_id: str | None = None
    secret: str | None = Field(default=None, description="only for newly created devices")
    error: str | None = None


class BulkResult(BaseModel):
    created: int
    existing: int
    failed: int
    rows: list[BulkRow]


class DevicePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    serial: str
    kind: DeviceKind
    vendor_id: int
    model_id: int | None
    market_id: str | None
    stall_id: int | None
    name: str
    status: DeviceStatus
    online: bool
    last_seen: datetime | None
    firmware_version: str
    keepalive_s: int
    labels: dict[str, Any]
    metadata: dict[str, Any]
    created_at: datetime


class DeviceUpdate(Strict):
    name: str | None = Field(default=None, max_length=200)
    market: str | None = Field(default=None, pattern=MARKET_CODE_PATTERN)
    stall: str | None = Field(default=None, max_length=32)
    status: DeviceStatus | None = None
    labels: dict[str, str] | None = None
    metadata: dict[str, Any] | None = None


class DeviceFilter(BaseModel):
    kind: DeviceKind | None = None
    market: str | None = None
    status: DeviceStatus | None = None
    online: bool | None = None
    vendor_id: int | None = None
    q: str | None = Field(default=None, max_length=100, description="text in id, serial or name")
    label: str | None = Field(default=None, description="key=value")


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    total: int
    limit: int
    offset: int
    items: list[T]


class CredentialPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    device_id: str
    created_at: datetime
    revoked_at: datetime | None


class MetrologyCreate(Strict):
    certificate_no: str = Field(min_length=1, max_length=64)
    verified_on: date
    due_on: date
    authority: str = Field(default="", max_length=200)

    @model_validator(mode="after")
    def _due_after_verified(self) -> MetrologyCreate:
        if self.due_on <= self.verified_on:
            raise ValueError("due_on must be after verified_on")
        return self


class MetrologyPublic(MetrologyCreate):
    model_config = ConfigDict(from_attributes=True, extra="ignore")
    id: int
    device_id: str
