"""The CoAP and serial settings as operators write them (docs/configuration.md, docs/serial.md)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from marketfleet.settings import load_settings


def test_serial_ports_from_the_environment_as_documented(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MF_SERIAL__PORTS", '[{"url": "/dev/ttyUSB0", "devices": ["acme-SC000"], "baudrate": 19200}]')
    monkeypatch.setenv("MF_COAP__HOST", "0.0.0.0")
    settings = load_settings(None)
    [port] = settings.serial.ports
    assert (port.url, port.devices, port.baudrate, port.parity, port.stopbits) == (
        "/dev/ttyUSB0", ["acme-SC000"], 19200, "N", 1)
    assert settings.coap.host == "0.0.0.0" and settings.coap.enabled and settings.coap.state_path == ""


def test_no_serial_ports_by_default() -> None:
    assert load_settings(None).serial.ports == []


@pytest.mark.parametrize(
    "port",
    [
        {"url": "/dev/ttyUSB0", "devices": []},  # a port with no scale wired to it accepts nothing: refuse
        {"url": "/dev/ttyUSB0", "devices": ["acme-SC000"], "parity": "X"},
        {"devices": ["acme-SC000"]},
    ],
)
def test_bad_serial_ports_are_refused_at_start(port: dict[str, object]) -> None:
    with pytest.raises(ValidationError) as refused:
        load_settings(None, serial={"ports": [port]})
    assert "serial.ports.0" in str(refused.value)  # pydantic names the setting
