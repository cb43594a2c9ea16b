"""The `marketfleet` command line. Every failure a user can cause ends in one clear line, not a traceback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console

from fleet.errors import MarketFleetError
from marketfleet import db
from marketfleet.firmware_cli import firmware_app, ota_app
from marketfleet.settings import ConfigFileError, Settings, load_settings, masked_dump
from telemetry import TelemetryError

app = typer.Typer(no_args_is_help=True, add_completion=False, help="MarketFleet: the smart market's device fleet.")
config_app = typer.Typer(no_args_is_help=True, help="Inspect settings.")
db_app = typer.Typer(no_args_is_help=True, help="Registry database schema.")
vendor_app = typer.Typer(no_args_is_help=True, help="Hardware vendors.")
device_app = typer.Typer(no_args_is_help=True, help="Devices.")
user_app = typer.Typer(no_args_is_help=True, help="People's accounts.")
certs_app = typer.Typer(no_args_is_help=True, help="TLS certificates.")
compliance_app = typer.Typer(no_args_is_help=True, help="Standards conformance: the market scorecard.")
app.add_typer(config_app, name="config")
app.add_typer(db_app, name="db")
app.add_typer(vendor_app, name="vendor")
app.add_typer(device_app, name="device")
app.add_typer(user_app, name="user")
app.add_typer(certs_app, name="certs")
app.add_typer(compliance_app, name="compliance")
app.add_typer(firmware_app, name="firmware")
app.add_typer(ota_app, name="ota")

console = Console()
err_console = Console(stderr=True)
T = TypeVar("T")

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML settings file (environment MF_… overrides it).")
]


class _State:
    config: Path | None = None


@app.callback()
def _main(config: ConfigOption = None) -> None:
    _State.config = config


def fail(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(2)


def settings() -> Settings:
    try:
        return load_settings(_State.config)
    except ConfigFileError as err:
        fail(str(err))
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        fail(f"setting {where}: {first['msg']} (from {_State.config or 'environment'})")
    raise AssertionError("unreachable")


def run(coro_factory: Callable[[], Awaitable[T]],
        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None) -> T:
    """Run a coroutine; turn the platform's own errors and unreachable services into one line."""
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(_with_registry_closed(coro_factory))
    except MarketFleetError as err:
        fail(str(err))
    except (db.DatabaseUnavailable, TelemetryError) as err:
        fail(str(err))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    raise AssertionError("unreachable")


async def _with_registry_closed(coro_factory: Callable[[], Awaitable[T]]) -> T:
    try:
        return await coro_factory()
    finally:
        await db.close()


# ---------------------------------------------------------------- serve


@app.command()
def serve(
    demo: Annotated[bool, typer.Option(help="Also seed and simulate a demo market.")] = False,
    role: Annotated[str, typer.Option(help="all, api, ingest, scheduler or vision (docs/scale-out.md)")] = "all",
) -> None:
    """Run the platform: registry, broker, CoAP, ingest and the API/dashboard (or one role of it)."""
    from marketfleet.serve import ROLES, fast_loop_factory, serve_forever

    if role == "vision":
        from marketfleet.vision_cli import vision_run

        vision_run()
        return
    if role not in ROLES:
        fail(f"unknown role {role!r}; choose all, api, ingest, scheduler or vision")
    if demo and role != "all":
        fail("--demo runs a whole market in one process; use it with --role all")
    run(lambda: serve_forever(settings(), demo=demo, console=console, role=role),  # type: ignore[arg-type]
        loop_factory=fast_loop_factory() if role == "api" else None)


# ---------------------------------------------------------------- config


@config_app.command("show")
def config_show() -> None:
    """Print the effective settings, secrets masked."""
    console.print_json(json.dumps(masked_dump(settings())))


# ---------------------------------------------------------------- db


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply pending schema migrations to the registry database (data is kept)."""
    s = settings()

    def report(event: str, app_label: str, name: str) -> None:
        if event == "apply_done":
            console.print(f"applied {app_label}.{name}")

    run(lambda: db.upgrade(s.registry_url, progress=report))
    console.print(f"registry at {db.redact(s.registry_url)} is up to date")


@db_app.command("reindex")
def db_reindex() -> None:
    """Rebuild the fleet search index from the devices (after a SQLite VACUUM, or to repair it)."""
    from fleet import search

    s = settings()

    async def go() -> bool:
        await db.connect(s.registry_url)
        try:
            return await search.rebuild()
        finally:
            await db.close()

    rebuilt = run(go)
    console.print("search index rebuilt" if rebuilt else
                  "nothing to rebuild: this registry's search index follows the table by itself (or it has none)")


@db_app.command("makemigrations")
def db_makemigrations(name: Annotated[str | None, typer.Option(help="Name for the migration.")] = None) -> None:
    """(Developers) write a migration for model changes into marketfleet/migrations."""
    import subprocess

    cmd = [sys.executable, "-m", "tortoise", "-c", "marketfleet.db.MIGRATION_CONFIG", "makemigrations"]
    if name:
        cmd += ["--name", name]
    raise typer.Exit(subprocess.call(cmd))


# ---------------------------------------------------------------- vendors and devices


@vendor_app.command("create")
def vendor_create(
    code: Annotated[str, typer.Argument(help="short lowercase code, e.g. acme")],
    name: Annotated[str, typer.Option(help="display name")],
    contact: Annotated[str, typer.Option()] = "",
) -> None:
    """Create a vendor and print its API key (shown only this once)."""
    from fleet.schemas import VendorCreate

    try:
        data = VendorCreate(code=code, name=name, contact=contact)
    except ValidationError as err:
        first = err.errors()[0]
        fail(f"{first['loc'][0]}: {first['msg']}")
        return
    s = settings()

    async def create() -> tuple[Any, str]:
        from fleet.registry import Registry
        from marketfleet.platform import master_key

        await db.connect(s.registry_url)
        return await Registry(master_key=master_key(s)).create_vendor(data)

    vendor, api_key = run(create)
    console.print(f"vendor [bold]{vendor.code}[/] created (id {vendor.id})")
    console.print(f"API key (store it now, it is not shown again): [bold]{api_key}[/]", soft_wrap=True)


@user_app.command("create")
def user_create(
    username: Annotated[str, typer.Argument()],
    role: Annotated[str, typer.Option(help="admin, maintainer, manager or vendor")],
    market: Annotated[list[str] | None, typer.Option(help="market code the person may see (repeat)")] = None,
    vendor: Annotated[str | None, typer.Option(help="vendor code, for the vendor role")] = None,
    password: Annotated[str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True)] = "",
) -> None:
    """Create a person's account (the password is asked for, not echoed)."""
    from accounts.service import Accounts, UserCreate

    try:
        data = UserCreate(username=username, password=password, role=role, markets=market or [], vendor=vendor)
    except ValidationError as err:
        first = err.errors()[0]
        fail(f"{'.'.join(str(p) for p in first['loc']) or 'input'}: {first['msg']}")
        return
    s = settings()

    async def create() -> Any:
        await db.connect(s.registry_url)
        return await Accounts().create_user(data)

    user = run(create)
    console.print(f"user [bold]{user.username}[/] ({user.role.value}) created")


@device_app.command("import")
def device_import(
    csv_file: Annotated[Path, typer.Argument(help="CSV with a header: serial,kind[,model,market,stall,name,…]")],
    vendor: Annotated[str, typer.Option(help="vendor code the devices belong to")],
    out: Annotated[Path, typer.Option(help="where to write the issued credentials (CSV)")] = Path(
        "credentials.csv"
    ),
) -> None:
    """Register devices from a CSV file, idempotent by serial; new credentials go to --out."""
    from marketfleet.device_import import CsvImportError, import_devices, read_devices_csv, write_credentials

    try:
        rows = read_devices_csv(csv_file)
    except CsvImportError as err:
        fail(str(err))
        return
    s = settings()
    result = run(lambda: import_devices(s, vendor, rows, console))
    write_credentials(result, out)
    console.print(
        f"{result.created} created, {result.existing} already registered, {result.failed} failed;"
        f" credentials of new devices written to {out}"
    )
    for row in result.rows:
        if row.status == "error":
            err_console.print(f"{csv_file} line {row.row + 2}: {row.error}", highlight=False)
    if result.failed:
        raise typer.Exit(1)


@certs_app.command("dev")
def certs_dev(
    out: Annotated[Path | None, typer.Option(help="directory; default {data_dir}/certs")] = None,
    host: Annotated[list[str] | None, typer.Option(help="name or address the server is reached by (repeat)")] = None,
) -> None:
    """Make a local CA and a server certificate for HTTPS and MQTT over TLS (tests and demos only)."""
    from marketfleet.certs import DEFAULT_HOSTS, make_dev_certificates

    target = out or settings().data_dir / "certs"
    made = make_dev_certificates(target, tuple(host or DEFAULT_HOSTS))
    console.print(f"CA {made.ca_cert} (give it to devices and browsers), server certificate {made.server_cert}")
    console.print("Add to your settings file:", highlight=False)
    console.print(f'[tls]\ncert_file = "{made.server_cert}"\nkey_file = "{made.server_key}"', markup=False,
                  highlight=False)


@compliance_app.command("report")
def compliance_report(
    market: Annotated[str, typer.Option(help="market code")],
    standard: Annotated[str, typer.Option(help="sz (Shenzhen appendix A), zz (Zhengzhou rules) or all")] = "all",
    format: Annotated[str, typer.Option(help="html (printable) or csv")] = "html",
    lang: Annotated[str, typer.Option(help="zh or en (html)")] = "zh",
    days: Annotated[int, typer.Option(help="window for online and data-loss rates, days")] = 30,
    out: Annotated[Path | None, typer.Option(help="file to write; default scorecard-<market>.<format>")] = None,
) -> None:
    """The market's scorecard from live fleet data, with points, evidence and what would raise it most."""
    from compliance.export import scorecard_csv
    from compliance.report import filter_source, scorecard_html
    from compliance.service import setup as setup_compliance
    from marketfleet.platform import build_store

    sources = {"sz": "SZ", "zz": "ZZ", "all": None}
    if standard not in sources or format not in ("html", "csv") or lang not in ("zh", "en"):
        fail("--standard sz|zz|all, --format html|csv, --lang zh|en")
    s = settings()

    async def make() -> str:
        await db.connect(s.registry_url)
        async with build_store(s) as store:
            card = await setup_compliance(telemetry=store).scorecard(market, None, days)
        card = filter_source(card, sources[standard])  # type: ignore[arg-type]
        return scorecard_html(card, lang) if format == "html" else scorecard_csv(card)  # type: ignore[arg-type]

    text = run(make)
    target = out or Path(f"scorecard-{market}.{format}")
    target.write_text(text, encoding="utf-8")
    console.print(f"scorecard of {market} written to {target}")


@app.command("backup")
def backup_command(
    out: Annotated[Path | None, typer.Option(help="archive; default {data_dir}/backups/<time>.tar.gz")] = None,
) -> None:
    """Back up the registry, the telemetry and the data directory into one archive (docs/operations.md)."""
    from datetime import UTC, datetime

    from marketfleet.backup import BackupError, backup

    s = settings()
    target = out or s.data_dir / "backups" / f"marketfleet-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.tar.gz"
    with _progress() as report:
        try:
            manifest = run(lambda: backup(s, target, report))
        except BackupError as err:
            fail(str(err))
            return
    rows = sum(v for k, v in manifest.counts.items() if k.startswith("registry/"))
    console.print(f"backed up {rows} registry rows, {manifest.counts['telemetry.jsonl']} readings and "
                  f"{sum(1 for m in manifest.sha256 if m.startswith('files/'))} files to {target}")


@app.command("restore")
def restore_command(
    archive: Annotated[Path, typer.Argument(help="archive made by `marketfleet backup`")],
    replace: Annotated[bool, typer.Option(help="delete the registry's rows first (default: refuse a non-empty one)")]
    = False,
) -> None:
    """Restore an archive into the configured registry, telemetry store and data directory."""
    from marketfleet.backup import BackupError, restore

    if not archive.is_file():
        fail(f"no such backup: {archive}")
    s = settings()
    with _progress() as report:
        try:
            manifest = run(lambda: restore(s, archive, replace=replace, progress=report))
        except BackupError as err:
            fail(str(err))
            return
    console.print(f"restored the backup of {manifest.created_at} ({len(manifest.counts)} parts) from {archive}")


@contextlib.contextmanager
def _progress() -> Iterator[Callable[[str, int], None]]:
    """A rich progress display with one line per part (table, telemetry, files) and its count so far."""
    from rich.progress import Progress, SpinnerColumn, TextColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TextColumn("{task.completed:>10,}"),
                  console=err_console, transient=True) as bar:
        tasks: dict[str, Any] = {}

        def report(what: str, done: int) -> None:
            if what not in tasks:
                tasks[what] = bar.add_task(what, total=None)
            bar.update(tasks[what], completed=done)

        yield report


@app.command()
def bench(
    area: Annotated[str, typer.Argument(help="registry, ingest, broker, coap, rules, ota, esl, vision, api or soak")],
    quick: Annotated[bool, typer.Option(help="Smaller sizes, for a smoke run.")] = False,
) -> None:
    """Run a benchmark from tests/bench/ and print its table (record results in BENCHMARKS.md)."""
    from marketfleet.bench import UnknownBenchmark, run_benchmark

    try:
        run_benchmark(area, console, quick)
    except UnknownBenchmark as err:
        fail(str(err))


from marketfleet.vision_cli import vision_app  # noqa: E402  (its commands use this module's helpers)

app.add_typer(vision_app, name="vision")

from marketfleet.simulate_cli import simulate_command  # noqa: E402  (its command uses this module's helpers)

app.command("simulate")(simulate_command)


def main() -> None:
    app()
