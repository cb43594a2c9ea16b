"""The bare FastAPI "hello" ceiling for `marketfleet bench api`: `python -m tests.bench.hello_server HOST PORT`.

Served exactly as `marketfleet serve --role api` serves the platform (marketfleet.serve.http_server: uvicorn,
uvloop/httptools, no access log, SO_REUSEPORT), so several of these share one port like several api processes
do, and the ratio of a platform case to this one is what MarketFleet's stack costs over bare FastAPI.
"""

from __future__ import annotations

import asyncio
import sys

from fastapi import FastAPI

from marketfleet.serve import fast_loop_factory, http_server


def create_app() -> FastAPI:
    app = FastAPI()

    @app.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    server, sockets = http_server(create_app(), host, port, reuse_port=True)
    with asyncio.Runner(loop_factory=fast_loop_factory()) as runner:
        runner.run(server.serve(sockets=sockets))


if __name__ == "__main__":
    main()
