"""`marketfleet serve`: run every configured part in one process until interrupted."""

from __future__ import annotations

import asyncio
import contextlib
import signal

import uvicorn
from rich.console import Console

from marketfleet.platform import running_platform
from marketfleet.settings import Settings


async def serve_forever(settings: Settings, *, demo: bool, console: Console) -> None:
    async with running_platform(settings) as platform, contextlib.AsyncExitStack() as extras:
        if demo:
            from marketfleet.demo import run_demo

            await extras.enter_async_context(run_demo(platform, console))
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
            f"MarketFleet on {scheme}://{settings.api.host}:{settings.api.port}/ "
            f"(API docs /docs); admin token in {settings.data_dir / 'admin.token'}"
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
        await server.serve()
