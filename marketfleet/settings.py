"""Effective settings: environment variables `MF_…` over an optional TOML file over embedded defaults.

Validated once at start-up; everything else receives the parts it needs as arguments.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from firmware.settings import FirmwareSettings
from retail.settings import RetailSettings
from rules.service import RulesSettings
from upstream.settings import UpstreamSettings
from vision.config import VisionSettings


class RegistrySettings(BaseModel):
    # sqlite://{data_dir}/registry.sqlite3 when empty; postgres://user:pass@host:port/db for PostgreSQL
    url: str = ""


class SqliteTelemetrySettings(BaseModel):
    backend: Literal["sqlite"] = "sqlite"
    path: str = ""  # {data_dir}/telemetry.sqlite3 when empty
    retention_days: int = Field(default=1095, ge=1)  # SZ 6.11.2 b: keep three years


class InfluxTelemetrySettings(BaseModel):
    backend: Literal["influxdb"]
    url: str = "http://127.0.0.1:8086"
    database: str = "marketfleet"
    username: str = ""
    password: SecretStr = SecretStr("")
    retention: str = "156w"  # SZ 6.11.2 b: keep three years
    batch_size: int = 5000
    flush_interval_s: float = 0.2
    # Disk kept for writes while InfluxDB is away (docs/operations.md); when full, ingest refuses and alerts.
    spool_max_bytes: int = Field(default=1 << 30, ge=64 * 1024)


TelemetrySettings = Annotated[
    SqliteTelemetrySettings | InfluxTelemetrySettings, Field(discriminator="backend")
]


class BrokerSettings(BaseModel):
    mode: Literal["embedded", "external"] = "embedded"
    host: str = "127.0.0.1"
    port: int = 1883
    # external mode: the MQTT broker the ingest workers subscribe to, and the platform's own account there
    username: str = ""
    password: SecretStr = SecretStr("")
    shared_group: str = "mf-ingest"
    max_payload_bytes: int = 64 * 1024
    keepalive_s: int = 60
    # MQTT uplinks per second per device and the burst saved up (0: no limit); beyond: dead-lettered, not
    # acknowledged. Generous: a device replays its outbox one message per uplink after an outage.
    device_rate_per_s: float = Field(default=100.0, ge=0)
    device_burst: int = Field(default=2000, ge=1)
    # external mode: ingest clients sharing the load, and Mosquitto's dynamic-security admin account (empty:
    # broker accounts are managed outside the platform, e.g. EMQX HTTP auth — docs/scale-out.md)
    workers: int = Field(default=1, ge=1, le=64)
    admin_username: str = ""
    admin_password: SecretStr = SecretStr("")


class CoapSettings(BaseModel):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 5683
    # OSCORE sequence numbers and replay windows (docs/coap.md); {data_dir}/coap-oscore.sqlite3 when empty
    state_path: str = ""
    max_queued_commands: int = Field(default=100, ge=1)
    # requests per second per device (uplinks, observe registrations), and how many may be saved up: 4.29 beyond
    device_rate_per_s: float = Field(default=20.0, gt=0)
    device_burst: int = Field(default=200, ge=1)


class SerialPortSettings(BaseModel):
    """One RS-232 port and the scales wired to it (docs/serial.md)."""

    url: str  # /dev/ttyUSB0, /dev/serial/by-id/…, rfc2217://host:port
    devices: list[str] = Field(min_length=1)
    name: str = ""  # defaults to the url
    baudrate: int = 9600
    bytesize: Literal[5, 6, 7, 8] = 8
    parity: Literal["N", "E", "O", "M", "S"] = "N"
    stopbits: Literal[1, 1.5, 2] = 1


class SerialSettings(BaseModel):
    # e.g. MF_SERIAL__PORTS='[{"url": "/dev/ttyUSB0", "devices": ["acme-SC000"]}]'; none: no gateway runs
    ports: list[SerialPortSettings] = []


class TlsSettings(BaseModel):
    """Certificates for HTTPS and MQTT over TLS (docs/security.md); `marketfleet certs dev` makes a local set."""

    cert_file: str = ""  # PEM certificate (chain) of this server; empty: no TLS
    key_file: str = ""
    mqtt_port: int = 8883
    only: bool = False  # refuse plain connections: no MQTT on broker.port, the API is HTTPS anyway

    @property
    def enabled(self) -> bool:
        return bool(self.cert_file)

    @model_validator(mode="after")
    def _complete(self) -> TlsSettings:
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("give both cert_file and key_file, or neither")
        if self.only and not self.cert_file:
            raise ValueError("only = true needs cert_file and key_file")
        for path in (self.cert_file, self.key_file):
            if path and not Path(path).is_file():
                raise ValueError(f"no such file: {path}")
        return self


class ApiSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8000
    # the first admin API key, created at start-up when no admin exists yet
    admin_token: SecretStr = SecretStr("")
    max_bulk_devices: int = 10_000
    # requests per second and burst, per vendor API key and per client address (429 beyond; docs/security.md)
    key_rate: float = Field(default=20.0, gt=0)
    key_burst: float = Field(default=200.0, ge=1)
    ip_rate: float = Field(default=200.0, gt=0)
    ip_burst: float = Field(default=1000.0, ge=1)
    rate_limits: bool = True
    # HTTP ingest uploads per second per device (detectors send results in batches) and the burst; 429 beyond
    device_upload_rate: float = Field(default=5.0, gt=0)
    device_upload_burst: int = Field(default=50, ge=1)
    # several `--role api` processes on one machine share `port` (SO_REUSEPORT; docs/scale-out.md)
    reuse_port: bool = False
    # per-process device lookup cache: entries, and seconds another process's change may stay unseen (0: off)
    lookup_cache_size: int = Field(default=100_000, ge=0)
    lookup_cache_ttl_s: float = Field(default=2.0, ge=0)


class Settings(BaseSettings):
    """Everything the platform can be told. `marketfleet config show` prints the effective values."""

    model_config = SettingsConfigDict(env_prefix="MF_", env_nested_delimiter="__", extra="forbid")

    data_dir: Path = Path("./var")
    # Root key that device secrets are diversified from (fleet/secrets.py); {data_dir}/master.key when empty.
    secret_key: SecretStr = SecretStr("")
    market_timezone: str = "Asia/Shanghai"
    registry: RegistrySettings = RegistrySettings()
    telemetry: TelemetrySettings = SqliteTelemetrySettings()
    broker: BrokerSettings = BrokerSettings()
    coap: CoapSettings = CoapSettings()
    serial: SerialSettings = SerialSettings()
    api: ApiSettings = ApiSettings()
    firmware: FirmwareSettings = FirmwareSettings()  # docs/ota.md
    tls: TlsSettings = TlsSettings()
    rules: RulesSettings = RulesSettings()  # docs/rules.md
    retail: RetailSettings = RetailSettings()  # docs/retail.md
    upstream: UpstreamSettings = UpstreamSettings()  # docs/upstream.md
    vision: VisionSettings = VisionSettings()  # the `marketfleet vision run` worker (docs/vision.md)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (env_settings, init_settings)

    @property
    def registry_url(self) -> str:
        return self.registry.url or f"sqlite://{self.data_dir / 'registry.sqlite3'}"

    @property
    def telemetry_sqlite_path(self) -> Path:
        if isinstance(self.telemetry, SqliteTelemetrySettings) and self.telemetry.path:
            return Path(self.telemetry.path)
        return self.data_dir / "telemetry.sqlite3"


class ConfigFileError(ValueError):
    """The TOML file given with --config cannot be read."""


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Defaults < TOML file < environment (< explicit overrides, used by tests and the CLI)."""
    values: dict[str, Any] = {}
    if config_file is not None:
        try:
            values = tomllib.loads(Path(config_file).read_text(encoding="utf-8"))
        except FileNotFoundError as err:
            raise ConfigFileError(f"config file not found: {config_file}") from err
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise ConfigFileError(f"config file {config_file} is not valid TOML: {err}") from err
    values.update(overrides)
    return Settings(**values)


_URL_PASSWORD = re.compile(r"(?P<head>[a-z0-9+]+://[^:/@]+:)[^@]+@")


def masked_dump(settings: Settings) -> dict[str, Any]:
    """Settings as plain data with every secret (SecretStr fields, passwords inside URLs) masked."""
    data = settings.model_dump(mode="json")
    data["registry"]["url"] = _URL_PASSWORD.sub(r"\g<head>**********@", settings.registry_url)
    data["data_dir"] = str(settings.data_dir)
    return data
