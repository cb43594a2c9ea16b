"""`marketfleet simulate`: register a simulated market's devices through the vendor API and run them all.

Wiring only: the settings give the defaults (where the API, the broker and CoAP listen, the admin token);
`simulators.market.simulate` does the work. See docs/simulators.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from fleet.kinds import DeviceKind


def _local(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def parse_counts(items: list[str]) -> dict[str, int]:
    """`["scale=20", "esl=100"]` → counts; a bad item raises typer.BadParameter naming it."""
    counts: dict[str, int] = {}
    for item in items:
        kind, sep, number = item.partition("=")
        if not sep or kind not in DeviceKind._value2member_map_ or not number.isdigit():
            known = ", ".join(k.value for k in DeviceKind)
            raise typer.BadParameter(f"{item!r}: expected KIND=N with KIND one of {known}", param_hint="--kind")
        counts[kind] = counts.get(kind, 0) + int(number)
    return counts


def parse_faults(items: list[str]) -> dict[str, list[Any]]:
    """`NAME[:KIND][@SECONDS]` → faults per kind (`*`: every device), e.g. `out_of_range:cold_locker@30`."""
    from simulators.faults import NAMED_FAULTS

    faults: dict[str, list[Any]] = {}
    for item in items:
        head, _, at = item.partition("@")
        name, _, kind = head.partition(":")
        if name not in NAMED_FAULTS:
            raise typer.BadParameter(f"{item!r}: unknown fault {name!r}; one of {', '.join(NAMED_FAULTS)}",
                                     param_hint="--fault")  # fmt: skip
        if kind and kind not in DeviceKind._value2member_map_:
            raise typer.BadParameter(f"{item!r}: unknown kind {kind!r}", param_hint="--fault")
        try:
            at_s = float(at) if at else 10.0
        except ValueError:
            raise typer.BadParameter(f"{item!r}: {at!r} is not a number of seconds", param_hint="--fault") from None
        faults.setdefault(kind or "*", []).append(NAMED_FAULTS[name](at_s=at_s))
    return faults


def simulate_command(
    market: Annotated[str, typer.Option(help="Market code (created when missing).")] = "SZ-FT-001",
    devices: Annotated[int, typer.Option(help="Devices in all, spread over every kind like a real market.")] = 50,
    kind: Annotated[list[str] | None, typer.Option("--kind", help="KIND=N, repeatable; replaces --devices.")] = None,
    api: Annotated[str | None, typer.Option(help="Platform API URL (default: the configured api host/port).")] = None,
    duration: Annotated[float, typer.Option(help="Seconds to run; 0 runs until Ctrl-C.")] = 60.0,
    speed: Annotated[float, typer.Option(help="Report this many times faster than real devices.")] = 1.0,
    seed: Annotated[str, typer.Option(help="Seed of every device's data (same seed, same data).")] = "0",
    fault: Annotated[list[str] | None, typer.Option(
        help="NAME, NAME:KIND or NAME:KIND@SECONDS (default 10 s), repeatable: offline, garbage, skew, burst, "
             "out_of_range, failed_test.")] = None,
    chaos: Annotated[float, typer.Option(help="Share of devices that get one random link fault.")] = 0.0,
    admin_token: Annotated[str | None, typer.Option(
        envvar="MF_ADMIN_TOKEN", help="Admin token (default: the configured one, or data_dir/admin.token).")] = None,
    mqtt_host: Annotated[str | None, typer.Option(help="Broker host (default: the configured broker).")] = None,
    mqtt_port: Annotated[int | None, typer.Option(help="Broker port.")] = None,
    coap_host: Annotated[str | None, typer.Option(help="CoAP host (default: the configured CoAP server).")] = None,
    coap_port: Annotated[int | None, typer.Option(help="CoAP port.")] = None,
    credentials: Annotated[Path | None, typer.Option(
        help="JSON file: reuse the devices in it, or write the newly registered ones there.")] = None,
    outbox: Annotated[Path | None, typer.Option(
        help="Outbox file (seq counters survive restarts); default data_dir/simulator-outbox.sqlite3.")] = None,
    progress: Annotated[bool, typer.Option(help="Show the live table.")] = True,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Simulate a market: register its devices through the vendor API, run every one over its real protocol."""
    from marketfleet.cli import console, err_console, fail, run, settings
    from simulators.market import RegistrationError, market_mix, simulate

    s = settings()
    counts = parse_counts(kind or []) or market_mix(devices)
    faults = parse_faults(fault or [])
    if not counts and credentials is None:
        fail("nothing to simulate: give --devices N (N > 0) or --kind KIND=N")
    token = admin_token or s.api.admin_token.get_secret_value()
    token_file = s.data_dir / "admin.token"
    if not token and token_file.exists():
        token = token_file.read_text().strip()
    scheme = "https" if s.tls.enabled else "http"
    api_url = api or f"{scheme}://{_local(s.api.host)}:{s.api.port}"
    outbox_path = outbox or s.data_dir / "simulator-outbox.sqlite3"

    async def main() -> dict[str, Any]:
        return await simulate(
            api_url, token or None, counts, duration or None,
            mqtt_host or _local(s.broker.host), mqtt_port or s.broker.port,
            coap_host or _local(s.coap.host), coap_port or s.coap.port,
            market=market, credentials_file=credentials, outbox_path=outbox_path, speed=speed, seed=seed,
            chaos=chaos, faults=faults, progress=progress, console=err_console,
        )  # fmt: skip

    try:
        summary = run(main)
    except RegistrationError as err:
        fail(str(err))
    except httpx.HTTPError as err:
        fail(f"cannot reach the platform's API at {api_url}: {err} (is `marketfleet serve` running? --api URL)")
    total = summary["total"]
    if json_out:
        console.print_json(json.dumps(summary))
    else:
        console.print(
            f"{total['devices']} devices in {market}: {total['generated']} messages made, {total['acked']} stored "
            f"and acknowledged, {total['rejected']} rejected, {total['pending']} still in outboxes "
            f"({total['resent']} resent after breaks, {total['commands']} commands carried out)"
        )
