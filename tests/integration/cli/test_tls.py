"""TLS: `marketfleet certs dev` makes a CA and a server certificate; the API served with it speaks HTTPS only,
clients that trust the CA get in, plain HTTP and clients that do not trust it are refused; bad TLS settings are
one clear line."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.services import find_free_port

MARKETFLEET = [sys.executable, "-m", "marketfleet"]
pytestmark = pytest.mark.timeout(120)


def test_certs_dev_then_https_only(tmp_path: Path) -> None:
    env = {**os.environ, "MF_DATA_DIR": str(tmp_path / "var"), "COLUMNS": "200"}
    made = subprocess.run([*MARKETFLEET, "certs", "dev"], env=env, capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    certs = tmp_path / "var" / "certs"
    assert "cert_file" in made.stdout and (certs / "server.key").stat().st_mode & 0o077 == 0

    port = find_free_port()
    env |= {"MF_API__PORT": str(port), "MF_BROKER__PORT": str(find_free_port()), "MF_COAP__PORT": str(find_free_port()),
            "MF_TLS__CERT_FILE": str(certs / "server.pem"), "MF_TLS__KEY_FILE": str(certs / "server.key")}
    proc = subprocess.Popen([*MARKETFLEET, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        trust = ssl.create_default_context(cafile=str(certs / "ca.pem"))
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"https://127.0.0.1:{port}/healthz", verify=trust, timeout=2).is_success:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "serve did not answer over HTTPS within 60 s"
            time.sleep(0.3)
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)  # plain HTTP: no answer on a TLS port
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"https://127.0.0.1:{port}/healthz", timeout=5)  # the system CAs do not know the dev CA
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_incomplete_tls_settings_are_one_clear_line(tmp_path: Path) -> None:
    env = {**os.environ, "MF_DATA_DIR": str(tmp_path / "var"), "MF_TLS__CERT_FILE": str(tmp_path / "missing.pem")}
    result = subprocess.run([*MARKETFLEET, "config", "show"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "tls" in result.stderr and "Traceback" not in result.stderr
    env["MF_TLS__ONLY"] = "true"
    env.pop("MF_TLS__CERT_FILE")
    result = subprocess.run([*MARKETFLEET, "config", "show"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "only = true needs cert_file" in result.stderr
