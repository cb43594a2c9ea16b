"""`marketfleet serve`: run the platform, whole or one role of it, until interrupted.

Roles (docs/scale-out.md): `all` (the default: everything in one process), `api` (HTTP API and dashboard),
`ingest` (broker or external-broker workers, the ingest pipeline and what reacts to it: rules evaluation,
firmware orchestration, retail), `scheduler` (scheduled checks, upstream delivery). Several `api` and `ingest`
processes may run side by side against one PostgreSQL registry, InfluxDB and an external MQTT broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Literal

import uvicorn
from rich.console import Console

from marketfleet.platform import running_platform
from marketfleet.settings import Settings

Role = Literal["all", "api", "ingest", "scheduler"]
ROLES: tuple[Role, ...] = ("all", "api", "ingest", "scheduler")


async def serve_forever(settings: Settings, *, demo: bool, console: Console, role: Role = "all") -> None:
    ingest, scheduler = role in ("all", "ingest"), role in ("all", "scheduler")
    async with running_platform(settings, ingest=ingest, scheduler=scheduler) as platform, \
            contextlib.AsyncExitStack() as extras:
        if demo:
            from marketfleet.demo import run_demo

            await extras.enter_async_context(run_demo(platform, console))
        loop = asyncio.get_running_loop()
        if role not in ("all", "api"):
            stop = asyncio.Event()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            console.print(f"MarketFleet {role} role running (registry {settings.data_dir}); Ctrl-C to stop")
            await stop.wait()
            return
        tls = settings.tls
        config = uvicorn.Config(
            platform.app,
            host=settings.api.host,
            port=settings.api.port,
            log_level="warning",
            lifespan="off",
            ssl_certfile=tls.cert_file or None,
            ssl_keyfile=tls.key_file or None,
        )
        server = uvicorn.Server(config)
        scheme = "https" if tls.enabled else "http"
        console.print(
            f"MarketFleet {'' if role == 'all' else 'api role '}on {scheme}://{settings.api.host}:{settings.api.port}/ "
            f"(API docs /docs); admin token in {settings.data_dir / 'admin.token'}"
        )
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
        await server.serve()
