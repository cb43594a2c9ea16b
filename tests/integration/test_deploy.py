"""deploy/ (issue 11, scale-out): the compose file runs the issue's topology with commands the CLI has and files
that exist, and deploy/mosquitto/mosquitto.conf starts a real Mosquitto that takes devices over TLS only from
outside, with dynamic security (anonymous and plain connections on the device port are refused)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import ssl
import subprocess
import time
from pathlib import Path

import aiomqtt
import pytest
import yaml

from marketfleet.certs import make_dev_certificates
from tests.services import _dynsec_plugin, find_free_port

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
ROLES = {"api", "ingest", "scheduler", "vision"}
pytestmark = pytest.mark.timeout(120)


def test_compose_runs_two_api_two_ingest_one_scheduler_with_real_commands_and_files() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    roles: dict[str, int] = {}
    for name, service in services.items():
        command = service.get("command")
        if not command or command[0] != "marketfleet":
            continue
        if command[1:] == ["db", "upgrade"]:
            continue
        assert command[1:3] == ["serve", "--role"] and command[3] in ROLES, (name, command)
        roles[command[3]] = roles.get(command[3], 0) + service.get("deploy", {}).get("replicas", 1)
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
    assert roles["api"] >= 2 and roles["ingest"] >= 2 and roles["scheduler"] == 1
    assert (ROOT / services["api"]["build"]["context"].replace("..", ".")).is_dir()
    assert (DEPLOY / "Dockerfile").is_file()
    for service in services.values():
        for volume in service.get("volumes", []):
            if volume.startswith("./"):
                assert (DEPLOY / volume.split(":")[0]).exists(), volume  # a bind mount of a folder we ship
    assert "8883:8883" in services["mosquitto"]["ports"]
    assert not any(p.startswith("1883") for p in services["mosquitto"]["ports"])  # devices: TLS only


def test_systemd_units_run_a_role_each() -> None:
    unit = (DEPLOY / "systemd" / "marketfleet@.service").read_text()
    exec_start = re.search(r"^ExecStart=(.+)$", unit, re.M)
    assert exec_start and exec_start.group(1).endswith("serve --role %i")
    assert "Restart=on-failure" in unit and "NoNewPrivileges=true" in unit
    assert (DEPLOY / "systemd" / "marketfleet-backup.timer").is_file()


ADMIN_PASSWORD = "deploy-admin-secret"


def start_shipped_mosquitto(tmp_path: Path) -> tuple[subprocess.Popen[bytes], int, int, Path]:
    """Mosquitto with deploy/mosquitto/mosquitto.conf; returns (process, internal port, device port, CA file)."""
    plugin = _dynsec_plugin()
    assert plugin and shutil.which("mosquitto") and shutil.which("mosquitto_ctrl")
    certs = make_dev_certificates(tmp_path / "certs")
    dynsec = tmp_path / "dynamic-security.json"
    subprocess.run(["mosquitto_ctrl", "dynsec", "init", str(dynsec), "admin", ADMIN_PASSWORD], check=True,
                   capture_output=True, timeout=30)
    internal, device_port = find_free_port(), find_free_port()
    text = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text()
    # Only what differs between the image and this machine: paths and port numbers.
    text = (text.replace("/usr/lib/mosquitto_dynamic_security.so", plugin)
            .replace("/mosquitto/config/dynamic-security.json", str(dynsec))
            .replace("/mosquitto/data/", f"{tmp_path}/data/")
            .replace("/mosquitto/config/certs/server.pem", str(certs.server_cert))
            .replace("/mosquitto/config/certs/server.key", str(certs.server_key))
            .replace("listener 1883", f"listener {internal} 127.0.0.1")
            .replace("listener 8883", f"listener {device_port} 127.0.0.1"))
    if os.geteuid() == 0:
        text += "user root\n"
    (tmp_path / "data").mkdir()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(text)
    log = (tmp_path / "mosquitto.log").open("w")
    proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    return proc, internal, device_port, certs.ca_cert


async def test_the_shipped_mosquitto_config_serves_tls_with_dynamic_security(tmp_path: Path) -> None:
    proc, internal, device_port, ca = start_shipped_mosquitto(tmp_path)
    admin_password = ADMIN_PASSWORD
    try:
        trust = ssl.create_default_context(cafile=str(ca))
        deadline = time.monotonic() + 30
        while True:
            try:
                async with aiomqtt.Client("127.0.0.1", device_port, identifier="admin-tls", username="admin",
                                          password=admin_password, tls_context=trust):
                    break
            except aiomqtt.MqttError:
                assert proc.poll() is None, (tmp_path / "mosquitto.log").read_text()
                assert time.monotonic() < deadline, (tmp_path / "mosquitto.log").read_text()
                await asyncio.sleep(0.3)
        async with aiomqtt.Client("127.0.0.1", internal, identifier="admin-plain", username="admin",
                                  password=admin_password):
            pass  # the compose network's own listener
        with pytest.raises(aiomqtt.MqttError):
            async with aiomqtt.Client("127.0.0.1", device_port, identifier="plain", username="admin",
                                      password=admin_password, timeout=5):
                pass  # plain MQTT on the device port: refused
        with pytest.raises(aiomqtt.MqttError):
            async with aiomqtt.Client("127.0.0.1", device_port, identifier="anon", tls_context=trust):
                pass  # anonymous: refused by allow_anonymous false
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 20)
