"""The catalog of device kinds and the payload schemas each kind sends and accepts.

Every uplink payload is validated against its kind's schema for the envelope's channel before anything
stores it; every downlink command is validated before it is sent. Field names follow the clauses in
`docs/requirements.md` (the seed standards) so that a manager reading a record sees the standard's terms.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


class DeviceKind(StrEnum):
    SCALE = "scale"
    ESL = "esl"
    ESL_BASE_STATION = "esl_base_station"
    CAMERA = "camera"
    FLOW_COUNTER = "flow_counter"
    FOOD_DETECTOR = "food_detector"
    ENV_SENSOR = "env_sensor"
    FIRE_PANEL = "fire_panel"
    COLD_LOCKER = "cold_locker"
    THERMOMETER = "thermometer"
    DISPLAY = "display"
    INSPECTION_TABLET = "inspection_tablet"
    BROADCAST = "broadcast"


class Channel(StrEnum):
    TELEMETRY = "telemetry"
    EVENT = "event"
    STATE = "state"
    ACK = "ack"


class Payload(BaseModel):
    # Unknown fields are refused so a vendor learns of a typo at once instead of losing the value.
    model_config = ConfigDict(extra="forbid")


Money = Annotated[Decimal, Field(ge=0, max_digits=12, decimal_places=2)]


# ---------------------------------------------------------------- shared pieces


class Health(Payload):
    """What every kind may report as state: firmware, link quality, power."""

    firmware_version: str | None = None
    rssi_dbm: int | None = Field(default=None, ge=-150, le=0)
    battery_pct: float | None = Field(default=None, ge=0, le=100)
    uptime_s: int | None = Field(default=None, ge=0)
    ip: str | None = None


class Reboot(Payload):
    command: Literal["reboot"] = "reboot"
    delay_s: int = Field(default=0, ge=0, le=3600)


class Ping(Payload):
    command: Literal["ping"] = "ping"


class FaultEvent(Payload):
    type: Literal["fault"] = "fault"
    code: str = Field(min_length=1, max_length=64)
    message: str = Field(default="", max_length=500)


class OtaStatus(Payload):
    """Progress of a firmware job on the device (docs/ota.md); an ESL base station reports for its labels.

    `job_id` is the id from the job announcement on `down/ota`; `state` follows the job's state machine.
    """

    type: Literal["ota_status"] = "ota_status"
    job_id: str = Field(min_length=1, max_length=64)
    state: Literal["downloading", "verifying", "installing", "rebooting", "succeeded", "failed"]
    progress: int = Field(default=0, ge=0, le=100)  # percent of the job done, as the device sees it
    reason: str | None = Field(default=None, max_length=200)  # why it failed: hash_mismatch, bad_signature …
    # with `succeeded`: the version the device booted into; one other than the announced fails the job
    version: str | None = Field(default=None, max_length=64)


# ---------------------------------------------------------------- scale (BJ 4.2.4, 5.3.5 a; SZ 6.2; HZ 7.2.1.2)


class ScaleTelemetry(Payload):
    """Live operating state of a scale (BJ 6.1.1.9 d)."""

    load_kg: float = Field(ge=-1, le=1000)
    stable: bool = True
    zero_ok: bool = True


class ScaleTransaction(Payload):
    """One sale as the scale reports it in real time (BJ 5.3.5 a: the traceable transaction record)."""

    type: Literal["transaction"] = "transaction"
    order_no: str = Field(min_length=1, max_length=64)
    time: datetime
    market_code: str = Field(min_length=1, max_length=32)
    stall_no: str = Field(min_length=1, max_length=32)
    vendor_name: str | None = Field(default=None, max_length=100)
    scale_id: str = Field(min_length=1, max_length=64)
    product_code: str | None = Field(default=None, max_length=32)
    product_name: str = Field(min_length=1, max_length=100)
    weight_kg: Decimal = Field(gt=0, le=1000, max_digits=10, decimal_places=3)
    unit_price: Money  # yuan per kg
    total: Money
    trace_code: str | None = Field(default=None, max_length=64)  # traceability code printed on the receipt


class ScaleSelfCheck(Payload):
    """Self-check at power-on and on schedule (BJ 4.2.4)."""

    type: Literal["self_check"] = "self_check"
    passed: bool
    details: str = Field(default="", max_length=500)


class ScaleTamper(Payload):
    """Anti-cheat: the scale saw its metrology parameters or seal touched (BJ 4.2.4)."""

    type: Literal["tamper"] = "tamper"
    reason: Literal["seal_opened", "parameter_changed", "unauthorised_calibration", "zero_drift", "other"]
    details: str = Field(default="", max_length=500)


class ScaleCalibrated(Payload):
    """A calibration was performed; `grant_id` names the server authorisation it used (SZ 6.2.7)."""

    type: Literal["calibrated"] = "calibrated"
    grant_id: str | None = None
    reference_kg: float = Field(gt=0)
    measured_kg: float


class ScalePriceSet(Payload):
    """A price typed on the scale; the platform updates the product and its bound label."""

    type: Literal["price_set"] = "price_set"
    product_code: str = Field(min_length=1, max_length=32)
    unit_price: Money


ScaleEvent = Annotated[
    ScaleTransaction | ScaleSelfCheck | ScaleTamper | ScaleCalibrated | ScalePriceSet | FaultEvent | OtaStatus,
    Field(discriminator="type"),
]


class ScaleState(Health):
    anti_cheat_ok: bool = True
    paper_ok: bool = True
    plu_version: int | None = Field(default=None, ge=0)


class PluEntry(Payload):
    product_code: str = Field(min_length=1, max_length=32)
    product_name: str = Field(min_length=1, max_length=100)
    unit_price: Money


class SetPluTable(Payload):
    command: Literal["set_plu"] = "set_plu"
    version: int = Field(ge=0)
    entries: list[PluEntry] = Field(max_length=2000)


class AuthoriseCalibration(Payload):
    """SZ 6.2.7: a scale may be calibrated only inside a window the server grants."""

    command: Literal["authorise_calibration"] = "authorise_calibration"
    grant_id: str = Field(min_length=1, max_length=64)
    valid_until: datetime


ScaleCommand = Annotated[SetPluTable | AuthoriseCalibration | Reboot | Ping, Field(discriminator="command")]


# ---------------------------------------------------------------- shelf label and base station (BJ 4.2.9, 6.1.2.2)


class EslTelemetry(Payload):
    battery_pct: float = Field(ge=0, le=100)
    rssi_dbm: int = Field(ge=-150, le=0)
    base_station_id: str | None = None


class EslShown(Payload):
    """The label confirms what it now shows (image hash and page)."""

    type: Literal["shown"] = "shown"
    image_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    page: int = Field(default=0, ge=0, le=15)


class EslScanned(Payload):
    """A handheld or base station scanned a label next to a product barcode: bind request."""

    type: Literal["scanned"] = "scanned"
    product_code: str = Field(min_length=1, max_length=32)


EslEvent = Annotated[EslShown | EslScanned | FaultEvent | OtaStatus, Field(discriminator="type")]


class EslState(Health):
    page: int = Field(default=0, ge=0, le=15)
    image_sha256: str | None = None
    resolution: tuple[int, int] | None = None
    colours: Literal["bw", "bwr", "bwry"] | None = None


class ShowImage(Payload):
    command: Literal["show_image"] = "show_image"
    image_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    url: str | None = None  # where the base station fetches the rendered image (CoAP Block2 or HTTP) …
    frame: str | None = Field(default=None, max_length=65_536)  # … or the image inline: retail/esl_codec.py
    page: int = Field(default=0, ge=0, le=15)
    at: datetime | None = None  # timed change: switch at this moment even when offline then


class FlashLed(Payload):
    command: Literal["flash_led"] = "flash_led"
    colour: Literal["red", "green", "blue", "white"] = "green"
    seconds: int = Field(default=10, ge=1, le=600)


class ShowPage(Payload):
    command: Literal["show_page"] = "show_page"
    page: int = Field(ge=0, le=15)


EslCommand = Annotated[ShowImage | FlashLed | ShowPage | Ping, Field(discriminator="command")]


class BaseStationTelemetry(Payload):
    labels_connected: int = Field(ge=0)
    queue_depth: int = Field(default=0, ge=0)
    channel: int | None = Field(default=None, ge=0, le=255)


class LabelJoined(Payload):
    """A label roamed to (or first joined) this base station."""

    type: Literal["label_joined"] = "label_joined"
    label_id: str = Field(min_length=1, max_length=64)
    rssi_dbm: int = Field(ge=-150, le=0)


class LabelLeft(Payload):
    type: Literal["label_left"] = "label_left"
    label_id: str = Field(min_length=1, max_length=64)


class LabelScanned(Payload):
    """A handheld paired with this base station scanned a label and then a product's barcode: bind request."""

    type: Literal["label_scanned"] = "label_scanned"
    label_id: str = Field(min_length=1, max_length=64)
    product_code: str = Field(min_length=1, max_length=32)


BaseStationEvent = Annotated[LabelJoined | LabelLeft | LabelScanned | FaultEvent | OtaStatus,
                             Field(discriminator="type")]


class RelayToLabel(Payload):
    command: Literal["relay"] = "relay"
    label_id: str = Field(min_length=1, max_length=64)
    payload: dict[str, Any]


BaseStationCommand = Annotated[RelayToLabel | Reboot | Ping, Field(discriminator="command")]


# ---------------------------------------------------------------- camera and passenger flow (SZ 6.8, 6.9)


class CameraTelemetry(Payload):
    fps: float = Field(ge=0, le=240)
    people_in_view: int | None = Field(default=None, ge=0)
    # the vision worker's own health per camera, so an operator sees when it falls behind (docs/vision.md)
    inference_ms: float | None = Field(default=None, ge=0)
    skipped_fps: float | None = Field(default=None, ge=0)
    bad_frames: int | None = Field(default=None, ge=0)


class VisionDetection(Payload):
    """A violation or crowd event from the vision worker, with its evidence image (HZ 7.3.2.1)."""

    type: Literal["detection"] = "detection"
    category: Literal[
        "crowd_peak",
        "line_crossing",
        "goods_beyond_line",
        "aisle_occupied",
        "unlicensed_stall",
        "non_motor_vehicle",
        "littering",
        "no_white_coat",
        "no_hat",
        "no_mask",
        "escalator_wrong_way",
        "child_alone_on_escalator",
    ]
    zone: str | None = None
    count: int | None = Field(default=None, ge=0)
    confidence: float = Field(ge=0, le=1)
    evidence_url: str | None = None
    event_id: int | None = Field(default=None, ge=0)  # the vision event row (handling state, evidence)
    track_id: int | None = None


CameraEvent = Annotated[VisionDetection | FaultEvent | OtaStatus, Field(discriminator="type")]


class CameraState(Health):
    resolution: tuple[int, int] | None = None
    stream_url: str | None = None
    snapshot_url: str | None = None


class FlowTelemetry(Payload):
    """Counts since the previous report, per entrance, both directions (SZ 6.9.2 a)."""

    entrance: str = Field(min_length=1, max_length=64)
    count_in: int = Field(ge=0)
    count_out: int = Field(ge=0)
    period_s: int = Field(default=60, gt=0, le=3600)


# ---------------------------------------------------------------- food-safety detector (SZ 6.3; BJ 4.2.5, 5.3.6)


class FoodTestResult(Payload):
    """One sample's result; `result_id` makes uploads idempotent."""

    type: Literal["test_result"] = "test_result"
    result_id: str = Field(min_length=1, max_length=64)
    tested_at: datetime
    channel: int = Field(ge=1, le=64)
    sample_name: str = Field(min_length=1, max_length=100)
    stall_no: str | None = Field(default=None, max_length=32)
    item: str = Field(min_length=1, max_length=100)  # e.g. organophosphate pesticide residue
    value: float
    unit: str = Field(default="%", max_length=16)
    limit: float | None = None
    passed: bool
    inspector: str | None = Field(default=None, max_length=64)


FoodDetectorEvent = Annotated[FoodTestResult | FaultEvent | OtaStatus, Field(discriminator="type")]


class FoodDetectorState(Health):
    channels: int = Field(default=5, ge=1, le=64)  # SZ A: ≥ 5 channels scores


# ---------------------------------------------------------------- environment sensor (SZ 6.12, 7.1.17; BJ 4.2.7)


class EnvTelemetry(Payload):
    temperature_c: float = Field(ge=-50, le=80)
    humidity_pct: float = Field(ge=0, le=100)
    co2_ppm: float | None = Field(default=None, ge=0, le=20000)
    pm25_ugm3: float | None = Field(default=None, ge=0, le=2000)
    nh3_ppm: float | None = Field(default=None, ge=0, le=1000)  # odour in aquatic/meat zones


# ---------------------------------------------------------------- fire and emergency (SZ 6.13; ZZ)


class FireTelemetry(Payload):
    loops_ok: int = Field(ge=0)
    loops_total: int = Field(ge=0)
    mains_power: bool = True
    backup_battery_pct: float = Field(ge=0, le=100)


class FireAlarm(Payload):
    type: Literal["fire_alarm"] = "fire_alarm"
    zone: str = Field(min_length=1, max_length=64)
    detector: str | None = None
    cleared: bool = False


class FireEquipmentFault(Payload):
    type: Literal["equipment_fault"] = "equipment_fault"
    equipment: Literal["smoke_detector", "sprinkler", "hydrant", "extinguisher", "exit_light", "panel"]
    zone: str | None = None
    cleared: bool = False


FireEvent = Annotated[FireAlarm | FireEquipmentFault | FaultEvent | OtaStatus, Field(discriminator="type")]


# ---------------------------------------------------------------- cold-chain locker (SZ 6.14.4)

DoorState = Literal["unlocked", "closed_locked", "closed_unlocked", "open"]


class CompartmentReading(Payload):
    compartment: int = Field(ge=1, le=256)
    temperature_c: float = Field(ge=-40, le=60)  # SZ 6.14.4 asks 1–10 °C; rules alert outside it
    door: DoorState


class LockerTelemetry(Payload):
    compartments: list[CompartmentReading] = Field(min_length=1, max_length=256)


class DoorChanged(Payload):
    type: Literal["door"] = "door"
    compartment: int = Field(ge=1, le=256)
    door: DoorState


LockerEvent = Annotated[DoorChanged | FaultEvent | OtaStatus, Field(discriminator="type")]


class DisableCompartment(Payload):
    command: Literal["disable_compartment"] = "disable_compartment"
    compartment: int = Field(ge=1, le=256)
    disabled: bool = True


class UnlockCompartment(Payload):
    command: Literal["unlock_compartment"] = "unlock_compartment"
    compartment: int = Field(ge=1, le=256)


LockerCommand = Annotated[DisableCompartment | UnlockCompartment | Reboot | Ping, Field(discriminator="command")]


# ---------------------------------------------------------------- infrared thermometer (SZ 6.8.2 c; HZ 5.8; ZZ)


class ThermometerTelemetry(Payload):
    entrance: str = Field(min_length=1, max_length=64)
    people_measured: int = Field(ge=0)
    max_body_temp_c: float | None = Field(default=None, ge=30, le=45)


class FeverDetected(Payload):
    type: Literal["fever"] = "fever"
    entrance: str = Field(min_length=1, max_length=64)
    body_temp_c: float = Field(ge=30, le=45)
    snapshot_url: str | None = None


ThermometerEvent = Annotated[FeverDetected | FaultEvent | OtaStatus, Field(discriminator="type")]


# ---------------------------------------------------------------- displays (SZ 6.5–6.7; BJ 4.2.3)


class DisplayTelemetry(Payload):
    brightness_pct: float = Field(ge=0, le=100)
    content_id: str | None = None


class PushContent(Payload):
    command: Literal["push_content"] = "push_content"
    content_id: str = Field(min_length=1, max_length=64)
    url: str
    duration_s: int | None = Field(default=None, gt=0)


DisplayCommand = Annotated[PushContent | Reboot | Ping, Field(discriminator="command")]


class DisplayState(Health):
    screen: Literal["stall", "public"] = "stall"
    size_inch: float | None = Field(default=None, gt=0)
    content_id: str | None = None


# ---------------------------------------------------------------- inspection tablet (SZ 6.4.1)


class TabletTelemetry(Payload):
    """One point of the patrol track (巡检轨迹), sent while a patrol is under way, and the battery level."""

    battery_pct: float = Field(ge=0, le=100)
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)
    stall_code: str | None = Field(default=None, max_length=32)  # the stall nearest the tablet, if known
    patrol_id: str | None = Field(default=None, max_length=64)


class PatrolStarted(Payload):
    type: Literal["patrol_started"] = "patrol_started"
    patrol_id: str = Field(min_length=1, max_length=64)
    inspector: str = Field(min_length=1, max_length=64)
    route: list[str] = Field(default_factory=list, max_length=2000)  # stall codes planned for this patrol


class PatrolRecord(Payload):
    """The check of one stall on a patrol (日常巡检, 一户一码): what was checked and what was found."""

    type: Literal["patrol_record"] = "patrol_record"
    patrol_id: str = Field(min_length=1, max_length=64)
    stall_code: str = Field(min_length=1, max_length=32)
    items: dict[str, bool] = Field(default_factory=dict, max_length=50)  # check item -> passed
    result: Literal["ok", "problem"]
    note: str = Field(default="", max_length=500)


class ProblemPhoto(Payload):
    """A problem photographed on patrol (异常情况拍照上传). The event names the photo by its SHA-256 (and where
    the tablet uploaded it), so the event stays small and the evidence cannot be swapped afterwards."""

    type: Literal["problem_photo"] = "problem_photo"
    patrol_id: str | None = Field(default=None, max_length=64)
    stall_code: str | None = Field(default=None, max_length=32)
    category: str = Field(min_length=1, max_length=32)  # hygiene, price_tag, aisle_blocked, fire_exit …
    description: str = Field(default="", max_length=500)
    photo_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    photo_url: str | None = Field(default=None, max_length=500)


class PatrolFinished(Payload):
    type: Literal["patrol_finished"] = "patrol_finished"
    patrol_id: str = Field(min_length=1, max_length=64)
    stalls_checked: int = Field(ge=0)
    problems: int = Field(ge=0)


TabletEvent = Annotated[
    PatrolStarted | PatrolRecord | ProblemPhoto | PatrolFinished | FaultEvent | OtaStatus,
    Field(discriminator="type"),
]


class AssignPatrol(Payload):
    command: Literal["assign_patrol"] = "assign_patrol"
    patrol_id: str = Field(min_length=1, max_length=64)
    route: list[str] = Field(min_length=1, max_length=2000)
    due: datetime | None = None


TabletCommand = Annotated[AssignPatrol | Reboot | Ping, Field(discriminator="command")]


class TabletState(Health):
    os: str | None = Field(default=None, max_length=32)
    storage_free_gb: float | None = Field(default=None, ge=0)


# ---------------------------------------------------------------- broadcast system (SZ 6.7)

AudioSource = Literal["mp3", "radio", "microphone", "line_in", "tts"]


class BroadcastTelemetry(Payload):
    playing: bool
    source: AudioSource | None = None
    volume_pct: float = Field(ge=0, le=100)
    programme: str | None = Field(default=None, max_length=64)  # what is on air: a schedule or announcement id
    zones_active: list[str] = Field(default_factory=list, max_length=64)


class PlaybackStarted(Payload):
    type: Literal["playback_started"] = "playback_started"
    programme: str = Field(min_length=1, max_length=64)
    source: AudioSource
    zones: list[str] = Field(default_factory=list, max_length=64)
    scheduled: bool = False  # started by the device's own timetable (定时播放) rather than a command


class PlaybackFinished(Payload):
    type: Literal["playback_finished"] = "playback_finished"
    programme: str = Field(min_length=1, max_length=64)
    interrupted: bool = False  # cut short, e.g. by an emergency announcement


BroadcastEvent = Annotated[PlaybackStarted | PlaybackFinished | FaultEvent | OtaStatus, Field(discriminator="type")]


class PlayAnnouncement(Payload):
    """Notices, food-safety and emergency messages (SZ 6.7.1); an emergency pre-empts whatever is playing."""

    command: Literal["play_announcement"] = "play_announcement"
    programme: str = Field(min_length=1, max_length=64)
    text: str | None = Field(default=None, max_length=2000)  # spoken by the device's TTS
    url: str | None = Field(default=None, max_length=500)  # or an MP3 to fetch
    zones: list[str] = Field(default_factory=list, max_length=64)  # empty: every zone
    priority: Literal["normal", "emergency"] = "normal"
    repeat: int = Field(default=1, ge=1, le=20)


class ScheduleEntry(Payload):
    at: str = Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")  # local time of day, HH:MM
    programme: str = Field(min_length=1, max_length=64)
    source: AudioSource = "mp3"
    url: str | None = Field(default=None, max_length=500)
    loop_minutes: int | None = Field(default=None, gt=0, le=1440)  # 循环自动播放 for this long


class SetSchedule(Payload):
    """Replace the device's timetable (定时播放, SZ 6.7.3 d); it keeps playing it while offline."""

    command: Literal["set_schedule"] = "set_schedule"
    entries: list[ScheduleEntry] = Field(max_length=200)


class StopPlayback(Payload):
    command: Literal["stop_playback"] = "stop_playback"


BroadcastCommand = Annotated[
    PlayAnnouncement | SetSchedule | StopPlayback | Reboot | Ping, Field(discriminator="command")
]


class BroadcastState(Health):
    sources: list[AudioSource] = Field(default_factory=list)
    schedule_entries: int = Field(default=0, ge=0)


# ---------------------------------------------------------------- the catalog

GenericCommand = Annotated[Reboot | Ping, Field(discriminator="command")]
GenericEvent = Annotated[FaultEvent | OtaStatus, Field(discriminator="type")]


@dataclass(frozen=True)
class KindSpec:
    """What one kind of device sends on each channel and what it accepts as commands."""

    kind: DeviceKind
    title: str
    title_zh: str
    telemetry: Any
    event: Any
    state: Any
    command: Any
    transports: tuple[str, ...]
    clauses: tuple[str, ...]
    adapters: dict[Channel | str, TypeAdapter[Any]] = field(default_factory=dict, compare=False)

    def adapter(self, channel: Channel | str) -> TypeAdapter[Any]:
        """The validator for a channel ('command' for downlinks); built once, reused per message."""
        key = Channel(channel) if channel in Channel._value2member_map_ else channel
        if key not in self.adapters:
            schema = {
                Channel.TELEMETRY: self.telemetry,
                Channel.EVENT: self.event,
                Channel.STATE: self.state,
                "command": self.command,
            }.get(key)
            if schema is None:
                raise KeyError(f"kind {self.kind} has no {channel} channel")
            self.adapters[key] = TypeAdapter(schema)
        return self.adapters[key]


CATALOG: dict[DeviceKind, KindSpec] = {
    spec.kind: spec
    for spec in (
        KindSpec(DeviceKind.SCALE, "Traceable retail scale", "智能溯源电子秤", ScaleTelemetry, ScaleEvent,
                 ScaleState, ScaleCommand, ("mqtt", "serial"), ("BJ 4.2.4", "BJ 5.3.5 a", "SZ 6.2", "SZ 6.2.7")),
        KindSpec(DeviceKind.ESL, "Electronic shelf label", "电子价签", EslTelemetry, EslEvent, EslState,
                 EslCommand, ("coap-via-base-station",), ("BJ 4.2.9", "BJ 6.1.2.2")),
        KindSpec(DeviceKind.ESL_BASE_STATION, "ESL base station", "价签基站", BaseStationTelemetry,
                 BaseStationEvent, Health, BaseStationCommand, ("coap",), ("BJ 4.2.9",)),
        KindSpec(DeviceKind.CAMERA, "IP camera (ONVIF)", "网络摄像机", CameraTelemetry, CameraEvent,
                 CameraState, GenericCommand, ("mqtt", "onvif"), ("BJ 4.2.2", "SZ 6.8", "HZ 5.2")),
        KindSpec(DeviceKind.FLOW_COUNTER, "Passenger-flow counter", "客流计数器", FlowTelemetry, GenericEvent,
                 Health, GenericCommand, ("mqtt",), ("SZ 6.9", "BJ 4.2.2.2")),
        KindSpec(DeviceKind.FOOD_DETECTOR, "Food-safety rapid-test detector", "食品安全快检设备", None,
                 FoodDetectorEvent, FoodDetectorState, GenericCommand, ("http",), ("SZ 6.3", "SZ 6.3.5", "BJ 4.2.5")),
        KindSpec(DeviceKind.ENV_SENSOR, "Environment sensor", "环境监测传感器", EnvTelemetry, GenericEvent,
                 Health, GenericCommand, ("mqtt", "coap"), ("SZ 6.12", "SZ 7.1.17", "BJ 4.2.7")),
        KindSpec(DeviceKind.FIRE_PANEL, "Fire alarm panel", "消防报警主机", FireTelemetry, FireEvent, Health,
                 GenericCommand, ("mqtt",), ("SZ 6.13",)),
        KindSpec(DeviceKind.COLD_LOCKER, "Cold-chain smart locker", "冷链智能柜", LockerTelemetry, LockerEvent,
                 Health, LockerCommand, ("mqtt",), ("SZ 6.14.4",)),
        KindSpec(DeviceKind.THERMOMETER, "Infrared thermometer", "红外测温仪", ThermometerTelemetry,
                 ThermometerEvent, Health, GenericCommand, ("mqtt",), ("SZ 6.8.2 c", "HZ 5.8")),
        KindSpec(DeviceKind.DISPLAY, "Display (stall or public screen)", "显示屏", DisplayTelemetry, GenericEvent,
                 DisplayState, DisplayCommand, ("mqtt",), ("SZ 6.5", "SZ 6.6", "BJ 4.2.3")),
        KindSpec(DeviceKind.INSPECTION_TABLET, "Inspection tablet", "巡检仪", TabletTelemetry, TabletEvent,
                 TabletState, TabletCommand, ("mqtt",), ("SZ 6.4",)),
        KindSpec(DeviceKind.BROADCAST, "Broadcast system", "广播设备", BroadcastTelemetry, BroadcastEvent,
                 BroadcastState, BroadcastCommand, ("mqtt",), ("SZ 6.7", "BJ 4.2.6")),
    )
}


def spec_for(kind: str) -> KindSpec:
    """The catalog entry for a kind name; KeyError names the known kinds."""
    try:
        return CATALOG[DeviceKind(kind)]
    except ValueError as err:
        known = ", ".join(k.value for k in DeviceKind)
        raise KeyError(f"unknown device kind {kind!r}; known kinds: {known}") from err


def validate_payload(kind: str, channel: Channel | str, payload: Any) -> Any:
    """Validate an uplink payload (or a command, channel='command'); raises pydantic.ValidationError."""
    return spec_for(kind).adapter(channel).validate_python(payload)
