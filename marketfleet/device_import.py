"""`marketfleet device import`: devices from a CSV file, validated whole before anything is written."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from fleet.errors import NotFound
from fleet.models import Vendor
from fleet.registry import Registry
from fleet.schemas import BulkResult, BulkRow, DeviceCreate
from marketfleet import db
from marketfleet.settings import Settings

COLUMNS = ("serial", "kind", "model", "market", "stall", "name", "firmware_version", "keepalive_s", "labels")
REQUIRED = ("serial", "kind")
CHUNK = 1000


class CsvImportError(ValueError):
    """The file cannot be imported; the message names the line and field."""


def read_devices_csv(path: Path) -> list[DeviceCreate]:
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise CsvImportError(f"cannot read {path}: {err.strerror}") from err
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise CsvImportError(
            f"{path} line {line}: not UTF-8 (byte 0x{raw[err.start]:02x}); save the file as UTF-8"
        ) from err
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    header = reader.fieldnames or []
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise CsvImportError(f"{path} line 1: header lacks column(s) {', '.join(missing)}; found {header}")
    unknown = [c for c in header if c not in COLUMNS]
    if unknown:
        raise CsvImportError(f"{path} line 1: unknown column(s) {', '.join(unknown)}; allowed: {', '.join(COLUMNS)}")
    devices: list[DeviceCreate] = []
    seen: dict[str, int] = {}
    try:
        for record in reader:
            line = reader.line_num
            if None in record:
                raise CsvImportError(f"{path} line {line}: more fields than the header has")
            values = {k: v for k, v in record.items() if v not in (None, "")}
            if "labels" in values:
                values["labels"] = _parse_labels(values["labels"], path, line)
            try:
                device = DeviceCreate(**values)
            except ValidationError as err:
                first = err.errors()[0]
                field = ".".join(str(p) for p in first["loc"]) or "row"
                raise CsvImportError(f"{path} line {line}, field {field}: {first['msg']}") from err
            if device.serial in seen:
                raise CsvImportError(
                    f"{path} line {line}, field serial: {device.serial!r} repeats line {seen[device.serial]}"
                )
            seen[device.serial] = line
            devices.append(device)
    except csv.Error as err:
        raise CsvImportError(f"{path} line {reader.line_num}: malformed CSV ({err})") from err
    if not devices:
        raise CsvImportError(f"{path}: no device rows")
    return devices


def _parse_labels(text: str, path: Path, line: int) -> dict[str, str]:
    labels = {}
    for pair in text.split(";"):
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise CsvImportError(f"{path} line {line}, field labels: expected key=value;key=value, got {text!r}")
        labels[key.strip()] = value.strip()
    return labels


async def import_devices(
    settings: Settings, vendor_code: str, devices: list[DeviceCreate], console: Console
) -> BulkResult:
    from marketfleet.platform import master_key

    await db.connect(settings.registry_url)
    vendor = await Vendor.get_or_none(code=vendor_code)
    if vendor is None:
        raise NotFound(f"no vendor with code {vendor_code!r}; create it with `marketfleet vendor create`")
    registry = Registry(master_key=master_key(settings))
    rows: list[BulkRow] = []
    with Progress(
        TextColumn("importing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console
    ) as progress:
        task = progress.add_task("devices", total=len(devices))
        for start in range(0, len(devices), CHUNK):
            chunk = devices[start : start + CHUNK]
            result = await registry.register_devices(vendor, chunk)
            rows += [r.model_copy(update={"row": r.row + start}) for r in result.rows]
            progress.advance(task, len(chunk))
    new = [r for r in rows if r.status == "created"]
    return BulkResult(
        created=len(new),
        existing=sum(r.status == "existing" for r in rows),
        failed=sum(r.status == "error" for r in rows),
        rows=rows,
    )


def write_credentials(result: BulkResult, out: Path) -> int:
    """Write the secrets of newly created devices (shown only once) to a 0600 CSV file."""
    new = [r for r in result.rows if r.status == "created"]
    if new:
        out.touch(mode=0o600)
        with out.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["serial", "device_id", "secret"])
            writer.writerows([r.serial, r.device_id, r.secret] for r in new)
    return len(new)
