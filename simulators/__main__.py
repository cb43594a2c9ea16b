"""`python -m simulators`: register a simulated market through the API and run it (what `marketfleet simulate`
wraps). Counts per kind: `--scales 200 --esl-stations 20 --env-sensors 10 …`."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence

from simulators.market import COUNT_OPTIONS, simulate


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m simulators", description=__doc__)
    p.add_argument("--api", default=os.environ.get("MF_API_URL", "http://127.0.0.1:8000"), help="platform API URL")
    p.add_argument("--admin-token", default=os.environ.get("MF_API__ADMIN_TOKEN"), help="admin bearer token")
    p.add_argument("--market", default="SIM-001", help="market code (created when missing)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds to run (0: until Ctrl-C)")
    p.add_argument("--mqtt-host", default="127.0.0.1")
    p.add_argument("--mqtt-port", type=int, default=1883)
    p.add_argument("--coap-host", default="127.0.0.1")
    p.add_argument("--coap-port", type=int, default=5683)
    p.add_argument("--speed", type=float, default=1.0, help="divide every report interval by this")
    p.add_argument("--seed", default="0")
    p.add_argument("--chaos", type=float, default=0.0, help="share of devices that get one random fault")
    p.add_argument("--credentials", help="JSON file: read devices from it, or write the registered ones to it")
    p.add_argument("--outbox", help="SQLite file for the outboxes (seq counters survive restarts)")
    p.add_argument("--http-auth", choices=["bearer", "hmac", "both"], default="bearer")
    p.add_argument("--transport", action="append", default=[], metavar="KIND=NAME",
                   help="override a kind's transport (mqtt, coap, http, loopback), e.g. env_sensor=coap")  # fmt: skip
    p.add_argument("--no-progress", action="store_true")
    for option, kind in COUNT_OPTIONS.items():
        p.add_argument(f"--{option.replace('_', '-')}", dest=option, type=int, default=0, metavar="N",
                       help=f"number of {kind} devices")  # fmt: skip
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    counts = {kind: getattr(args, option) for option, kind in COUNT_OPTIONS.items() if getattr(args, option)}
    if not counts and not args.credentials:
        print("nothing to simulate: give counts (e.g. --scales 20) or --credentials FILE", file=sys.stderr)
        return 2
    transports = dict(item.split("=", 1) for item in args.transport)
    summary = asyncio.run(
        simulate(
            args.api,
            args.admin_token,
            counts,
            args.duration or None,
            args.mqtt_host,
            args.mqtt_port,
            args.coap_host,
            args.coap_port,
            market=args.market,
            credentials_file=args.credentials,
            outbox_path=args.outbox,
            transports=transports,
            speed=args.speed,
            seed=args.seed,
            chaos=args.chaos,
            http_auth=args.http_auth,
            progress=not args.no_progress,
        )
    )
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
