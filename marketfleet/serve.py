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
import socket
from collections.abc import Callable
from typing import Literal

import uvicorn
from rich.console import Console
from starlette.types import ASGIApp

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
        server, sockets = http_server(platform.app, settings.api.host, settings.api.port,
                                      reuse_port=settings.api.reuse_port, ssl_certfile=tls.cert_file or None,
                                      ssl_keyfile=tls.key_file or None)
        scheme = "https" if tls.enabled else "http"
        console.print(
            f"MarketFleet {'' if role == 'all' else 'api role '}on {scheme}://{settings.api.host}:{settings.api.port}/ "
            f"(API docs /docs); admin token in {settings.data_dir / 'admin.token'}"
        )
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
        await server.serve(sockets=sockets)


def fast_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when installed (about twice the requests per second of asyncio's for the API here;
    BENCHMARKS.md), else None: asyncio's own. Used by the api role, whose clients (database drivers, the
    Mosquitto provisioner) all run on it; the roles with CoAP, serial and the embedded broker keep asyncio's."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def http_server(app: ASGIApp, host: str, port: int, *, reuse_port: bool = False,
                ssl_certfile: str | None = None, ssl_keyfile: str | None = None
                ) -> tuple[uvicorn.Server, list[socket.socket] | None]:
    """The uvicorn server every HTTP role runs (and `marketfleet bench api` serves its bare "hello" ceiling with).

    uvloop and httptools when installed (`loop`/`http` "auto"), no access log (the audit log records what
    changes; a line per GET would cost more than the lookup). With `reuse_port` the listening socket is bound
    with SO_REUSEPORT, so several `--role api` processes on one machine share one port and the kernel spreads
    connections over them (docs/scale-out.md); → the server and the sockets to pass to `serve()` (None: uvicorn
    binds itself).
    """
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off",
                            loop="auto", http="auto", ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile)
    sockets = None
    if reuse_port:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.set_inheritable(True)
        sockets = [sock]
    return uvicorn.Server(config), sockets
