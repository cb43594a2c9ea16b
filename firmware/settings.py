"""What `Settings.firmware` holds (env `MF_FIRMWARE__…`). Only pydantic here, so the settings module can import
it without loading the ORM."""

from __future__ import annotations

from pydantic import BaseModel, Field


class FirmwareSettings(BaseModel):
    """Empty paths default under the data directory; empty URLs default to the API's and CoAP's own address."""

    enabled: bool = Field(default=True, description="run the OTA orchestrator in this process")
    blob_dir: str = Field(default="", description="image store; {data_dir}/firmware when empty")
    signing_key_path: str = Field(default="", description="Ed25519 key; {data_dir}/firmware-signing.key")
    http_base_url: str = Field(default="", description="how devices reach the API; http://{api.host}:{api.port}")
    coap_base_url: str = Field(default="", description="how devices reach CoAP; coap://{coap.host}:{coap.port}")
    max_image_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    tick_s: float = Field(default=1.0, gt=0, description="orchestrator pass interval (results also wake it)")
    enrol_interval_s: float = Field(default=30.0, ge=0, description="how often dynamic campaigns look for devices")
    announce_batch: int = Field(default=500, ge=1)
    send_concurrency: int = Field(default=64, ge=1)
    relay_batch: int = Field(default=200, ge=1, description="labels per ESL base-station announcement")
    default_timezone: str = Field(default="Asia/Shanghai", description="for devices not placed in a market")
