"""Database unavailable at start-up (issue 11): `marketfleet serve` started before PostgreSQL accepts
connections keeps retrying and comes up by itself once the database does, with no restart by an operator."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from tests.factories import wait_serving
from tests.services import PostgresServer, find_free_port

pytestmark = pytest.mark.timeout(240)
TOKEN = "late-db-admin-token"


async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, port: int) -> None:
    """A TCP hop to the real server: the database 'comes up' when this starts listening."""
    upstream_reader, upstream_writer = await asyncio.open_connection(host, port)

    async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        dst.close()

    await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))


def serve(home: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    log = (home / "serve.log").open("ab")
    return subprocess.Popen([sys.executable, "-m", "marketfleet", "serve", "--role", "api"], cwd=home, env=env,
                            stdout=log, stderr=subprocess.STDOUT)


async def test_serve_waits_for_a_database_that_comes_up_late(tmp_path: Path, postgres_server: PostgresServer) -> None:
    dsn = postgres_server.create_database(f"mf_late_{uuid.uuid4().hex[:8]}")
    real = urlsplit(dsn)
    late_port = find_free_port()  # nothing listens here yet
    late = real._replace(netloc=f"{real.username}:{real.password}@127.0.0.1:{late_port}")
    api_port = find_free_port()
    env = {**os.environ, "MF_DATA_DIR": str(tmp_path / "var"), "MF_API__PORT": str(api_port),
           "MF_API__ADMIN_TOKEN": TOKEN, "MF_REGISTRY__URL": urlunsplit(late), "MF_COAP__ENABLED": "false",
           "MF_BROKER__PORT": str(find_free_port())}
    proc = serve(tmp_path, env)
    server = None
    try:
        async with httpx.AsyncClient() as client:
            await asyncio.sleep(3)  # serve has met a refused connection at least once by now
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            with pytest.raises(httpx.TransportError):
                await client.get(f"http://127.0.0.1:{api_port}/healthz", timeout=2)  # not serving without it
            server = await asyncio.start_server(
                lambda r, w: forward(r, w, real.hostname or "127.0.0.1", real.port or 5432), "127.0.0.1", late_port)
            await wait_serving(f"http://127.0.0.1:{api_port}/healthz", proc,
                               lambda: (tmp_path / "serve.log").read_text()[-3000:])  # up once the database is
            created = await client.post(f"http://127.0.0.1:{api_port}/api/v1/admin/markets",
                                        json={"code": "M-LATE", "name": "Late"},
                                        headers={"Authorization": f"Bearer {TOKEN}"})
            assert created.status_code == 201, created.text  # the registry behind it works
    finally:
        proc.terminate()
        # In a thread, not proc.wait() here: its database connections go through this loop's forwarder.
        await asyncio.to_thread(proc.wait, 60)
        if server is not None:
            server.close()
    assert "Traceback" not in (tmp_path / "serve.log").read_text()
