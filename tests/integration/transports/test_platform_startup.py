"""Start-up of the platform's transports when something is in the way (its own module: it starts and stops
whole platforms, which share the process-wide registry connection with any other platform fixture)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from broker.transports import TransportUnavailable
from tests.factories import start_test_platform

pytestmark = pytest.mark.timeout(120)


async def test_a_taken_coap_port_is_one_clear_error(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        with pytest.raises(TransportUnavailable) as refused:
            async with start_test_platform(tmp_path, f"sqlite://{tmp_path / 'registry.sqlite3'}", coap={"port": port}):
                pass
    assert f"127.0.0.1:{port}" in str(refused.value) and "MF_COAP__PORT" in str(refused.value)
    # Nothing was left half-started: the same data directory starts cleanly on a free port.
    async with start_test_platform(tmp_path, f"sqlite://{tmp_path / 'registry.sqlite3'}") as platform:
        assert platform.services["coap"].port != port
