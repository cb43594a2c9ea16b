"""`marketfleet backup` / `restore`: one archive holding the registry, the telemetry and the data directory.

The registry is dumped logically, table by table through the ORM, so a backup taken on SQLite restores into
PostgreSQL and back (a market that outgrows SQLite moves this way). Telemetry is read through
`TelemetryStore.export()` and written back with `write()`, so it moves between SQLite and InfluxDB the same
way. The data directory's own files (master key, admin token, firmware images …) go along because device
credentials are derived from the master key: without it every device would have to be re-provisioned.

Archive layout (tar.gz): `manifest.json` (format, creation time, migrations applied, row counts and the SHA-256
of every member), `registry/<app>.<Model>.jsonl`, `telemetry.jsonl`, `files/…`. Restore checks every hash
and the migrations before it writes anything, and writes into an empty registry only (`--replace` empties it
first), so a wrong archive cannot half-overwrite a running market.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from tortoise import Tortoise, fields
from tortoise.models import Model
from tortoise.transactions import in_transaction

from accounts.append_only import writable_audit_log
from marketfleet import db
from marketfleet.settings import Settings
from telemetry import Reading, TelemetryStore

FORMAT = 1
PAGE = 2000
MIGRATIONS_TABLE = "tortoise_migrations"

#: Progress callback: (what, rows or files done so far in it).
Progress = Callable[[str, int], object]


class BackupError(Exception):
    """The archive cannot be made or restored; the message says why and what to do."""


@dataclass
class Manifest:
    format: int
    created_at: str
    migrations: list[list[str]]
    counts: dict[str, int] = field(default_factory=dict)
    sha256: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------- registry tables in dependency order


def registry_models() -> list[type[Model]]:
    """Every model of every domain app, parents before children (foreign keys point backwards)."""
    models = [m for label, app in Tortoise.apps.items() if label != "_migrations" for m in app.values()]
    ordered: list[type[Model]] = []
    placed: set[type[Model]] = set()

    def place(model: type[Model], path: tuple[type[Model], ...] = ()) -> None:
        if model in placed or model in path:
            return
        for name in (*model._meta.fk_fields, *model._meta.o2o_fields):
            parent = model._meta.fields_map[name].related_model  # type: ignore[attr-defined]
            if parent is not model:
                place(parent, (*path, model))
        placed.add(model)
        ordered.append(model)

    for model in sorted(models, key=lambda m: m._meta.db_table):
        place(model)
    return ordered


def _member(model: type[Model]) -> str:
    return f"registry/{model._meta.app}.{model.__name__}.jsonl"


def _encode(value: Any) -> Any:
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, timedelta):
        return value // timedelta(microseconds=1)
    raise TypeError(f"cannot back up a {type(value).__name__}")


_DECODERS: list[tuple[type[fields.Field[Any]], Callable[[Any], Any]]] = [
    (fields.DatetimeField, datetime.fromisoformat),
    (fields.DateField, date.fromisoformat),
    (fields.TimeField, time.fromisoformat),
    (fields.DecimalField, Decimal),
    (fields.UUIDField, uuid.UUID),
    (fields.BinaryField, base64.b64decode),
    (fields.TimeDeltaField, lambda us: timedelta(microseconds=us)),
]


def _decoder(model: type[Model], name: str) -> Callable[[Any], Any] | None:
    f = model._meta.fields_map.get(name)  # a plain field, or an FK's `<name>_id` column (typed as the parent's pk)
    for kind, decode in _DECODERS:
        if isinstance(f, kind):
            return decode
    return None


async def _rows(model: type[Model]) -> AsyncIterator[list[dict[str, Any]]]:
    pk = model._meta.pk_attr
    last = None
    while True:
        query = model.all().order_by(pk).limit(PAGE)
        if last is not None:
            query = query.filter(**{f"{pk}__gt": last})
        page = await query.values(*_field_names(model))
        if not page:
            return
        last = page[-1][pk]
        yield page


def _field_names(model: type[Model]) -> list[str]:
    """The stored columns by attribute name: plain fields and the `<fk>_id` of each foreign key."""
    meta = model._meta
    return [name for name in meta.fields_db_projection if name not in meta.fetch_fields]


async def _applied_migrations() -> list[list[str]]:
    conn = Tortoise.get_connection("default")
    rows = await conn.execute_query_dict(f'SELECT app, name FROM "{MIGRATIONS_TABLE}" ORDER BY app, name')
    return [[row["app"], row["name"]] for row in rows]


# ---------------------------------------------------------------- backup


def _data_files(settings: Settings, out: Path) -> Iterator[Path]:
    """The data directory's own files: not the databases (dumped logically), spools or earlier backups."""
    root = settings.data_dir
    skip = {settings.telemetry_sqlite_path.resolve(), out.resolve()}
    url = settings.registry_url
    if url.startswith("sqlite://"):
        skip.add(Path(url.removeprefix("sqlite://").split("?", 1)[0]).resolve())
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        resolved = path.resolve()
        base = Path(str(resolved).removesuffix("-wal").removesuffix("-shm").removesuffix("-journal"))
        rel = path.relative_to(root)
        if base in skip or rel.parts[0] in {"backups", "telemetry-spool"} or path.suffix == ".sock":
            continue
        yield path


def _open_store(settings: Settings) -> TelemetryStore:
    from marketfleet.platform import build_store  # the platform decides which backend the settings mean

    return build_store(settings)


async def backup(settings: Settings, out: Path, progress: Progress = lambda *_: None) -> Manifest:
    """Write the archive to `out` (atomically: a temp file renamed at the end)."""
    out = await asyncio.to_thread(out.resolve)
    with tempfile.TemporaryDirectory(prefix="mf-backup-") as tmp:
        work = Path(tmp)
        manifest = Manifest(FORMAT, datetime.now(UTC).isoformat(), [])
        await db.connect(settings.registry_url)
        try:
            manifest.migrations = await _applied_migrations()
            for model in registry_models():
                member, done = _member(model), 0
                (work / member).parent.mkdir(parents=True, exist_ok=True)
                with (work / member).open("w", encoding="utf-8") as fh:
                    async for page in _rows(model):
                        fh.writelines(json.dumps(row, default=_encode, ensure_ascii=False) + "\n" for row in page)
                        done += len(page)
                        progress(member, done)
                manifest.counts[member] = done
        finally:
            await db.close()

        manifest.counts["telemetry.jsonl"] = await _dump_telemetry(settings, work / "telemetry.jsonl", progress)

        await asyncio.to_thread(_pack, settings, work, out, manifest, progress)
    return manifest


def _pack(settings: Settings, work: Path, out: Path, manifest: Manifest, progress: Progress) -> None:
    for n, path in enumerate(_data_files(settings, out), 1):
        target = work / "files" / path.relative_to(settings.data_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
        progress("files", n)
    members = sorted(p.relative_to(work).as_posix() for p in work.rglob("*") if p.is_file())
    manifest.sha256 = {m: _sha256(work / m) for m in members}
    (work / "manifest.json").write_text(json.dumps(manifest.__dict__, indent=2, ensure_ascii=False))
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    with tarfile.open(partial, "w:gz") as tar:
        tar.add(work / "manifest.json", "manifest.json")
        for m in members:
            tar.add(work / m, m)
    os.replace(partial, out)


async def _dump_telemetry(settings: Settings, path: Path, progress: Progress) -> int:
    done = 0
    async with _open_store(settings) as store:
        with path.open("w", encoding="utf-8") as fh:
            async for page in store.export(batch=5000):
                fh.writelines(json.dumps(_reading_row(r), ensure_ascii=False) + "\n" for r in page)
                done += len(page)
                progress("telemetry", done)
    return done


def _reading_row(r: Reading) -> dict[str, Any]:
    return {"d": r.device_id, "m": r.measurement, "t": r.ts.isoformat(), "f": r.fields, "g": r.tags, "s": r.seq}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------- restore


def read_manifest(work: Path) -> Manifest:
    try:
        data = json.loads((work / "manifest.json").read_text(encoding="utf-8"))
        manifest = Manifest(**data)
    except (OSError, ValueError, TypeError) as err:
        raise BackupError(f"not a MarketFleet backup (manifest.json unreadable: {err})") from err
    if manifest.format != FORMAT:
        raise BackupError(f"backup format {manifest.format} is not supported (this version reads {FORMAT})")
    for member, digest in manifest.sha256.items():
        if not (work / member).is_file() or _sha256(work / member) != digest:
            raise BackupError(f"backup is damaged: {member} does not match its SHA-256 in the manifest")
    return manifest


def _extract(archive: Path, work: Path) -> None:
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(work, filter="data")  # refuses absolute paths, '..' and links out of `work`
    except (OSError, tarfile.TarError) as err:
        raise BackupError(f"cannot read backup {archive}: {err}") from err


async def restore(settings: Settings, archive: Path, *, replace: bool = False,
                  progress: Progress = lambda *_: None) -> Manifest:
    """Restore `archive` into the configured registry, telemetry store and data directory."""
    with tempfile.TemporaryDirectory(prefix="mf-restore-") as tmp:
        work = Path(tmp)
        await asyncio.to_thread(_extract, archive, work)
        manifest = await asyncio.to_thread(read_manifest, work)
        await db.connect(settings.registry_url)
        try:
            applied = await _applied_migrations()
            if applied != manifest.migrations:
                missing = sorted(map(tuple, manifest.migrations), key=str)
                raise BackupError(
                    "the backup was made at another schema version than this registry "
                    f"(backup: {len(manifest.migrations)} migrations, here: {len(applied)}); restore it with the "
                    f"MarketFleet version that made it, then upgrade (first backup migration: {missing[:1]})"
                )
            models = registry_models()
            filled = await _check_empty(models, replace)
            # One transaction: emptying (with --replace) and loading, so a failed restore leaves the registry,
            # its audit log included, as it was.
            async with in_transaction() as conn:
                if filled:
                    async with writable_audit_log(conn):  # the audit log's one permitted delete
                        for model in reversed(models):
                            await model.all().delete()
                for model in models:
                    member = _member(model)
                    count = await _load_table(model, work / member, progress)
                    expected = manifest.counts.get(member, 0)
                    if count != expected:
                        raise BackupError(f"{member}: restored {count} rows, the manifest says {expected}")
            await _reset_sequences(models)
        finally:
            await db.close()
        await _load_telemetry(settings, work / "telemetry.jsonl", progress)
        await asyncio.to_thread(_restore_files, work / "files", settings.data_dir)
    return manifest


def _restore_files(files: Path, data_dir: Path) -> None:
    if files.is_dir():
        data_dir.mkdir(parents=True, exist_ok=True)
        shutil.copytree(files, data_dir, dirs_exist_ok=True)


async def _check_empty(models: Iterable[type[Model]], replace: bool) -> bool:
    """Whether the registry has rows to delete first; refuses them unless `replace`."""
    filled = [m.__name__ for m in models if await m.all().exists()]
    if filled and not replace:
        raise BackupError(
            f"the registry is not empty ({', '.join(filled[:5])}{' …' if len(filled) > 5 else ''} have rows); "
            "restore into a fresh database, or pass --replace to delete what is there first"
        )
    return bool(filled)


@contextlib.contextmanager
def _stored_timestamps(model: type[Model]) -> Iterator[None]:
    """Let `auto_now` fields take the archived value: a restored row keeps when it was last updated."""
    stamped = [f for f in model._meta.fields_map.values()
               if isinstance(f, fields.DatetimeField) and f.auto_now]
    for f in stamped:
        f.auto_now = False
    try:
        yield
    finally:
        for f in stamped:
            f.auto_now = True


async def _load_table(model: type[Model], path: Path, progress: Progress) -> int:
    if not await asyncio.to_thread(path.is_file):
        return 0
    with _stored_timestamps(model):
        return await _load_rows(model, path, progress)


async def _load_rows(model: type[Model], path: Path, progress: Progress) -> int:
    decoders = {name: _decoder(model, name) for name in _field_names(model)}
    done, batch = 0, []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            for name, decode in decoders.items():
                if decode is not None and row.get(name) is not None:
                    row[name] = decode(row[name])
            batch.append(model(**row))
            if len(batch) >= PAGE:
                await model.bulk_create(batch)
                done += len(batch)
                batch = []
                progress(path.name, done)
    if batch:
        await model.bulk_create(batch)
        done += len(batch)
        progress(path.name, done)
    return done


async def _reset_sequences(models: Iterable[type[Model]]) -> None:
    """PostgreSQL hands out ids from a sequence that explicit inserts do not advance: move it past them."""
    conn = Tortoise.get_connection("default")
    if conn.capabilities.dialect != "postgres":
        return
    for model in models:
        pk = model._meta.pk
        if not isinstance(pk, fields.IntField | fields.BigIntField | fields.SmallIntField) or not pk.generated:
            continue
        table, column = model._meta.db_table, model._meta.pk.source_field or model._meta.pk_attr
        await conn.execute_query(
            f"SELECT setval(pg_get_serial_sequence('\"{table}\"', '{column}'), "
            f'COALESCE((SELECT MAX("{column}") FROM "{table}"), 1), '
            f'(SELECT MAX("{column}") FROM "{table}") IS NOT NULL)'
        )


async def _load_telemetry(settings: Settings, path: Path, progress: Progress) -> int:
    if not await asyncio.to_thread(path.is_file):
        return 0
    done, batch = 0, []
    # Readings already in the store merge with identical ones (TelemetryStore contract), so no emptiness check.
    async with _open_store(settings) as store:
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                row = json.loads(line)
                batch.append(Reading(row["d"], row["m"], datetime.fromisoformat(row["t"]), row["f"], row["g"],
                                     row["s"]))
                if len(batch) >= 5000:
                    await store.write(batch)
                    done += len(batch)
                    batch = []
                    progress("telemetry", done)
        if batch:
            await store.write(batch)
            done += len(batch)
            progress("telemetry", done)
        wait = getattr(store, "wait_drained", None)
        if wait is not None:  # InfluxDB may have spooled part of it: restore is done when it is stored
            await wait()
    return done
