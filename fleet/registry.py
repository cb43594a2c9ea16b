"""Registry behaviour: vendors, device models, devices and their credentials, markets, metrology.

Every vendor-facing call takes the acting vendor and only ever sees that vendor's rows: another vendor's
device is `NotFound`, never `Forbidden`, so ids cannot be probed.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from tortoise.exceptions import IntegrityError
from tortoise.expressions import Subquery
from tortoise.transactions import in_transaction

from fleet.errors import Conflict, InvalidRequest, NotFound
from fleet.lookups import DeviceView, TtlCache, device_cache
from fleet.models import (
    Credential,
    Device,
    DeviceLabel,
    DeviceModel,
    DeviceStatus,
    Market,
    MetrologyRecord,
    Stall,
    Vendor,
)
from fleet.schemas import (
    BulkResult,
    BulkRow,
    DeviceCreate,
    DeviceFilter,
    DeviceModelCreate,
    DeviceUpdate,
    MarketCreate,
    MetrologyCreate,
    StallCreate,
    VendorCreate,
)
from fleet.search import search
from fleet.secrets import ApiKey, derive_device_secret, hash_secret, new_salt, secret_matches


class CredentialListener(Protocol):
    """Told of every credential change, e.g. to provision an external broker or drop a live session."""

    async def credential_issued(self, device: Device, secret: str) -> None: ...

    async def credential_revoked(self, device: Device) -> None: ...


def device_id_for(vendor_code: str, serial: str) -> str:
    # Vendor codes have no '-', so "<code>-<serial>" is unambiguous and readable in topics and logs.
    return f"{vendor_code}-{serial}"


@dataclass
class Registry:
    master_key: bytes
    listeners: list[CredentialListener] = field(default_factory=list)
    # per-process device lookup cache (fleet/lookups.py); off unless the platform sizes it
    lookups: TtlCache[str, DeviceView] = field(default_factory=device_cache)

    def _issue(self, device_id: str) -> tuple[str, str]:
        """A fresh (salt, secret) pair for a device."""
        salt = new_salt()
        return salt, derive_device_secret(self.master_key, device_id, salt)

    async def device_secret(self, device_id: str) -> str | None:
        """Re-derive the active secret of a device (to provision an external broker), None if revoked."""
        credential = await self.active_credential(device_id)
        if credential is None:
            return None
        return derive_device_secret(self.master_key, device_id, credential.salt)

    # ------------------------------------------------------------ markets and stalls

    async def create_market(self, data: MarketCreate) -> Market:
        if await Market.exists(code=data.code):
            raise Conflict(f"market {data.code!r} already exists")
        return await Market.create(**data.model_dump())

    async def list_markets(self, markets: Collection[str] | None = None) -> list[Market]:
        query = Market.all() if markets is None else Market.filter(code__in=list(markets))
        return await query.order_by("code")

    async def get_market(self, code: str) -> Market:
        market = await Market.get_or_none(code=code)
        if market is None:
            raise NotFound(f"market {code!r} not found")
        return market

    async def create_stall(self, market_code: str, data: StallCreate) -> Stall:
        market = await self.get_market(market_code)
        if await Stall.exists(market=market, number=data.number):
            raise Conflict(f"stall {data.number!r} already exists in market {market_code!r}")
        return await Stall.create(market=market, **data.model_dump())

    # ------------------------------------------------------------ vendors

    async def create_vendor(self, data: VendorCreate) -> tuple[Vendor, str]:
        """Create a vendor and return its API key, which is never shown again."""
        if await Vendor.exists(code=data.code):
            raise Conflict(f"vendor code {data.code!r} already exists")
        key = ApiKey.generate()
        vendor = await Vendor.create(
            **data.model_dump(), api_key_prefix=key.lookup, api_key_hash=hash_secret(key.secret)
        )
        return vendor, str(key)

    async def vendor_for_key(self, api_key: str) -> Vendor | None:
        key = ApiKey.parse(api_key)
        if key is None:
            return None
        vendor = await Vendor.get_or_none(api_key_prefix=key.lookup, active=True)
        if vendor is None or not secret_matches(key.secret, vendor.api_key_hash):
            return None
        return vendor

    async def rotate_vendor_key(self, vendor: Vendor) -> str:
        key = ApiKey.generate()
        vendor.api_key_prefix, vendor.api_key_hash = key.lookup, hash_secret(key.secret)
        await vendor.save(update_fields=["api_key_prefix", "api_key_hash"])
        return str(key)

    async def list_vendors(self) -> list[Vendor]:
        return await Vendor.all().order_by("code")

    # ------------------------------------------------------------ device models

    async def register_model(self, vendor: Vendor, data: DeviceModelCreate) -> DeviceModel:
        if await DeviceModel.exists(vendor=vendor, name=data.name):
            raise Conflict(f"model {data.name!r} is already registered by this vendor")
        return await DeviceModel.create(vendor=vendor, **data.model_dump())

    async def list_models(self, vendor: Vendor | None = None) -> list[DeviceModel]:
        query = DeviceModel.all() if vendor is None else DeviceModel.filter(vendor=vendor)
        return await query.order_by("id")

    # ------------------------------------------------------------ devices

    async def register_devices(self, vendor: Vendor, rows: Sequence[DeviceCreate]) -> BulkResult:
        """Register devices idempotently by serial; each new device gets a credential, returned once.

        Rows that cannot be placed (unknown model, market or stall; kind differing from the model's or
        from the already registered device) are reported with their row number and written nowhere;
        the valid rows are written in one transaction.
        """
        serials = [row.serial for row in rows]
        existing = {d.serial: d for d in await Device.filter(vendor=vendor, serial__in=serials)}
        models = {m.name: m for m in await DeviceModel.filter(vendor=vendor)}
        market_codes = {row.market for row in rows if row.market}
        markets = {m.code: m for m in await Market.filter(code__in=market_codes)}
        stalls = {
            (s.market_id, s.number): s  # type: ignore[attr-defined]
            for s in await Stall.filter(market_id__in=market_codes)
        }

        results: list[BulkRow] = []
        to_create: list[Device] = []
        secrets: dict[str, str] = {}
        salts: dict[str, str] = {}
        for index, row in enumerate(rows):
            error = None
            model = models.get(row.model) if row.model else None
            if row.model and model is None:
                error = f"devices[{index}].model: no model {row.model!r} registered by this vendor"
            elif model is not None and model.kind != row.kind:
                error = f"devices[{index}].kind: {row.kind.value!r} differs from model {model.name!r} ({model.kind})"
            elif row.market and row.market not in markets:
                error = f"devices[{index}].market: unknown market {row.market!r}"
            elif row.stall and (row.market, row.stall) not in stalls:
                error = f"devices[{index}].stall: no stall {row.stall!r} in market {row.market!r}"
            elif row.serial in existing and existing[row.serial].kind != row.kind:
                error = (
                    f"devices[{index}].kind: serial {row.serial!r} is registered as "
                    f"{existing[row.serial].kind}, not {row.kind.value}"
                )
            if error:
                results.append(BulkRow(row=index, serial=row.serial, status="error", error=error))
                continue
            if row.serial in existing:
                device = existing[row.serial]
                results.append(BulkRow(row=index, serial=row.serial, status="existing", device_id=device.id))
                continue
            device_id = device_id_for(vendor.code, row.serial)
            salt, secret = self._issue(device_id)
            secrets[device_id] = secret
            salts[device_id] = salt
            to_create.append(
                Device(
                    id=device_id,
                    serial=row.serial,
                    vendor=vendor,
                    kind=row.kind,
                    model=model,
                    market=markets.get(row.market) if row.market else None,
                    stall=stalls.get((row.market, row.stall)) if row.stall else None,
                    name=row.name,
                    firmware_version=row.firmware_version,
                    keepalive_s=row.keepalive_s,
                    labels=row.labels,
                    metadata=row.metadata,
                )
            )
            results.append(
                BulkRow(row=index, serial=row.serial, status="created", device_id=device_id, secret=secret)
            )

        if to_create:
            try:
                async with in_transaction():
                    await Device.bulk_create(to_create, batch_size=1000)
                    await DeviceLabel.bulk_create(
                        [DeviceLabel(device_id=d.id, key=k, value=v) for d in to_create for k, v in d.labels.items()],
                        batch_size=1000,
                    )
                    await Credential.bulk_create(
                        [
                            Credential(device_id=d.id, salt=salts[d.id], secret_hash=hash_secret(secrets[d.id]))
                            for d in to_create
                        ],
                        batch_size=1000,
                    )
            except IntegrityError as err:
                # A concurrent call registered one of these serials first; nothing of this call was kept.
                raise Conflict("a device in this batch was registered concurrently; retry the call") from err
            for device in to_create:
                await self._notify_issued(device, secrets[device.id])

        failed = sum(r.status == "error" for r in results)
        existing_count = sum(r.status == "existing" for r in results)
        return BulkResult(created=len(to_create), existing=existing_count, failed=failed, rows=results)

    async def get_device(
        self, device_id: str, vendor: Vendor | None = None, markets: Collection[str] | None = None
    ) -> Device:
        """A device as `vendor` (its own only) or a person scoped to `markets` may see it; else NotFound."""
        query = Device.filter(id=device_id)
        if vendor is not None:
            query = query.filter(vendor=vendor)
        if markets is not None:
            query = query.filter(market_id__in=list(markets))
        device = await query.first()
        if device is None:
            raise NotFound(f"device {device_id!r} not found")
        return device

    async def update_device(
        self, device_id: str, data: DeviceUpdate, markets: Collection[str] | None = None
    ) -> Device:
        device = await self.get_device(device_id, markets=markets)
        changes = data.model_dump(exclude_unset=True)
        if "market" in changes:
            code = changes.pop("market")
            device.market = await self.get_market(code) if code else None  # type: ignore[assignment]
        if "stall" in changes:
            number = changes.pop("stall")
            if number and device.market_id is None:  # type: ignore[attr-defined]
                raise InvalidRequest("stall: the device has no market")
            stall = await Stall.get_or_none(market_id=device.market_id, number=number) if number else None  # type: ignore[attr-defined]
            if number and stall is None:
                raise InvalidRequest(f"stall: no stall {number!r} in the device's market")
            device.stall = stall  # type: ignore[assignment]
        for name, value in changes.items():
            setattr(device, name, value)
        try:
            async with in_transaction():
                await device.save()
                if "labels" in changes:
                    await DeviceLabel.filter(device_id=device.id).delete()
                    await DeviceLabel.bulk_create(
                        [DeviceLabel(device_id=device.id, key=k, value=v) for k, v in device.labels.items()]
                    )
        finally:
            self.lookups.invalidate(device.id)
        return device

    async def list_devices(
        self,
        flt: DeviceFilter,
        limit: int = 50,
        offset: int = 0,
        vendor: Vendor | None = None,
        markets: Collection[str] | None = None,
    ) -> tuple[int, list[Device]]:
        query = Device.all()
        if vendor is not None:
            query = query.filter(vendor=vendor)
        if markets is not None:
            query = query.filter(market_id__in=list(markets))
        if flt.vendor_id is not None:
            query = query.filter(vendor_id=flt.vendor_id)
        if flt.kind is not None:
            query = query.filter(kind=flt.kind)
        if flt.market is not None:
            query = query.filter(market_id=flt.market)
        if flt.status is not None:
            query = query.filter(status=flt.status)
        if flt.online is not None:
            query = query.filter(online=flt.online)
        if flt.q:
            query = await search(query, flt.q)
        if flt.label:
            key, _, value = flt.label.partition("=")
            if not key or not value:
                raise InvalidRequest("label: expected key=value")
            query = query.filter(
                id__in=Subquery(DeviceLabel.filter(key=key.strip(), value=value.strip()).values("device_id"))
            )
        total = await query.count()
        items = await query.order_by("id").offset(offset).limit(limit)
        return total, items

    # ------------------------------------------------------------ credentials

    async def active_credential(self, device_id: str) -> Credential | None:
        return await Credential.filter(device_id=device_id, revoked_at=None).order_by("-id").first()

    async def check_device_secret(self, device_id: str, secret: str) -> Device | None:
        """The device if the secret is its current credential and the device may connect."""
        credential = await self.active_credential(device_id)
        if credential is None or not secret_matches(secret, credential.secret_hash):
            return None
        device = await Device.get_or_none(id=device_id)
        if device is None or device.status != DeviceStatus.ACTIVE:
            return None
        return device

    async def list_credentials(self, device_id: str, vendor: Vendor | None = None) -> list[Credential]:
        await self.get_device(device_id, vendor)
        return await Credential.filter(device_id=device_id).order_by("id")

    async def rotate_credential(self, device_id: str, vendor: Vendor | None = None) -> str:
        """Revoke the current secret and issue a new one, returned once."""
        device = await self.get_device(device_id, vendor)
        salt, secret = self._issue(device.id)
        async with in_transaction():
            await Credential.filter(device_id=device.id, revoked_at=None).update(revoked_at=datetime.now(UTC))
            await Credential.create(device=device, salt=salt, secret_hash=hash_secret(secret))
        await self._notify_issued(device, secret)
        return secret

    async def revoke_credentials(self, device_id: str, vendor: Vendor | None = None) -> int:
        """Revoke every active secret of a device; it can no longer connect until rotated."""
        device = await self.get_device(device_id, vendor)
        revoked = await Credential.filter(device_id=device.id, revoked_at=None).update(
            revoked_at=datetime.now(UTC)
        )
        for listener in self.listeners:
            await listener.credential_revoked(device)
        return revoked

    async def _notify_issued(self, device: Device, secret: str) -> None:
        for listener in self.listeners:
            await listener.credential_issued(device, secret)

    # ------------------------------------------------------------ metrology

    async def add_metrology_record(
        self, device_id: str, data: MetrologyCreate, vendor: Vendor | None = None
    ) -> MetrologyRecord:
        device = await self.get_device(device_id, vendor)
        if device.kind != "scale":
            raise InvalidRequest(f"device {device_id!r} is a {device.kind}; metrology records are for scales")
        return await MetrologyRecord.create(device=device, **data.model_dump())

    async def metrology_records(self, device_id: str, vendor: Vendor | None = None) -> list[MetrologyRecord]:
        await self.get_device(device_id, vendor)
        return await MetrologyRecord.filter(device_id=device_id).order_by("-verified_on")
