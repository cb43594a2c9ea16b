"""Plausible, seeded data for every device kind (what a real market's devices would say).

`make_generator(kind, device_id, market, seed)` returns the generator of a kind. A generator is a small model
of the device: `boot(now)` is what it says at power-on, `tick(now)` what it says every interval, `due(now)`
what timed work (ESL `show_image … at`) produces, and `apply_command(command, now)` applies a downlink command
to `state` and returns what the device answers. Every payload is a plain JSON-able dict that validates with
`fleet.kinds.validate_payload(kind, channel, payload)` (the unit tests check every kind, channel and event).

Everything random comes from `self.rng = random.Random(f"{seed}:{device_id}")`: the same seed and device id
give the same stream, whatever other devices run beside it.
"""

from __future__ import annotations

import hashlib
import math
import random
import zlib
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, ClassVar, NamedTuple

from fleet.kinds import DeviceKind, validate_payload
from simulators.wire import CHINA_TZ, local_iso, parse_ts, rfc3339


class Emission(NamedTuple):
    """One message a device wants to send: the channel and the payload (no seq/ts yet)."""

    channel: str
    payload: dict[str, Any]


# ---------------------------------------------------------------- shared vocabulary

#: category → (product code prefix, name, [(product, low yuan/kg, high yuan/kg)], (min kg, max kg) per sale)
PRODUCTS: dict[str, tuple[str, str, list[tuple[str, float, float]], tuple[float, float]]] = {
    "vegetable": ("1", "蔬菜", [
        ("白菜", 1.8, 3.6), ("菠菜", 6.0, 10.0), ("西红柿", 5.0, 9.0), ("黄瓜", 4.0, 7.0), ("土豆", 3.0, 5.0),
        ("胡萝卜", 3.0, 5.0), ("茄子", 5.0, 8.0), ("青椒", 6.0, 10.0), ("芹菜", 4.0, 7.0), ("生菜", 6.0, 10.0),
        ("韭菜", 6.0, 10.0), ("西兰花", 8.0, 12.0), ("洋葱", 3.0, 5.0), ("豆角", 8.0, 12.0), ("冬瓜", 1.6, 3.0),
        ("莲藕", 8.0, 12.0), ("生姜", 12.0, 18.0), ("大蒜", 8.0, 14.0), ("油麦菜", 5.0, 8.0), ("空心菜", 5.0, 9.0),
    ], (0.2, 3.0)),
    "meat": ("2", "肉类", [
        ("五花肉", 26.0, 36.0), ("猪里脊", 30.0, 38.0), ("排骨", 38.0, 48.0), ("猪蹄", 26.0, 34.0),
        ("前腿肉", 24.0, 30.0), ("牛腩", 70.0, 90.0), ("牛腱子", 80.0, 100.0), ("羊肉", 75.0, 95.0),
    ], (0.3, 2.5)),
    "aquatic": ("3", "水产", [
        ("草鱼", 14.0, 20.0), ("鲫鱼", 18.0, 26.0), ("鲈鱼", 36.0, 50.0), ("基围虾", 60.0, 90.0),
        ("带鱼", 30.0, 45.0), ("鱿鱼", 30.0, 40.0), ("花甲", 12.0, 18.0), ("黄鳝", 50.0, 70.0),
    ], (0.4, 2.5)),
    "poultry_egg": ("4", "禽蛋", [
        ("鸡蛋", 9.0, 13.0), ("鸭蛋", 14.0, 18.0), ("鹌鹑蛋", 16.0, 22.0), ("鸡胸肉", 16.0, 22.0),
        ("鸡腿", 18.0, 24.0), ("三黄鸡", 24.0, 32.0), ("豆腐", 5.0, 8.0),
    ], (0.3, 2.5)),
    "fruit": ("5", "水果", [
        ("苹果", 8.0, 14.0), ("香蕉", 5.0, 8.0), ("橙子", 7.0, 12.0), ("葡萄", 12.0, 20.0), ("西瓜", 2.5, 4.5),
        ("梨", 6.0, 10.0), ("芒果", 10.0, 16.0),
    ], (0.5, 5.0)),
}  # fmt: skip
STALL_ROWS = {"vegetable": "A", "meat": "B", "aquatic": "C", "poultry_egg": "D", "fruit": "E"}
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高"
GIVEN = ["敏", "伟", "芳", "娜", "强", "磊", "军", "洋", "勇", "艳", "杰", "涛", "明", "霞", "平", "刚"]
ENTRANCES = ["东门", "南门", "西门", "北门", "东南门", "地下车库入口"]
ZONES = ["蔬菜区", "肉类区", "水产区", "禽蛋区", "水果区", "熟食区", "干货区"]
VISION_CATEGORIES = [
    "crowd_peak", "line_crossing", "goods_beyond_line", "aisle_occupied", "unlicensed_stall", "non_motor_vehicle",
    "littering", "no_white_coat", "no_hat", "no_mask", "escalator_wrong_way", "child_alone_on_escalator",
]  # fmt: skip

#: Food-safety rapid tests: item, unit, limit (a value ≥ limit fails), typical pass range, fail range, samples.
FOOD_TESTS: list[tuple[str, str, float, tuple[float, float], tuple[float, float], list[str]]] = [
    ("有机磷和氨基甲酸酯类农药残留(抑制率)", "%", 50.0, (2.0, 38.0), (50.0, 88.0),
     ["白菜", "菠菜", "韭菜", "芹菜", "生菜", "油麦菜", "豆角", "小白菜"]),
    ("盐酸克伦特罗(瘦肉精)", "μg/kg", 3.0, (0.0, 1.2), (3.0, 12.0), ["五花肉", "猪里脊", "猪肝", "牛肉", "羊肉"]),
    ("孔雀石绿", "μg/kg", 2.0, (0.0, 0.8), (2.0, 9.0), ["草鱼", "鲫鱼", "鲈鱼", "黄鳝"]),
    ("甲醛", "mg/kg", 10.0, (0.0, 4.0), (10.0, 60.0), ["鱿鱼", "虾仁", "牛百叶", "海带"]),
    ("二氧化硫", "g/kg", 0.1, (0.0, 0.05), (0.1, 0.6), ["银耳", "黄花菜", "粉丝", "生姜"]),
    ("亚硝酸盐", "mg/kg", 30.0, (1.0, 15.0), (30.0, 120.0), ["腊肉", "咸菜", "酸菜", "熟食卤肉"]),
]  # fmt: skip


def busy(moment: datetime) -> float:
    """How busy a market is at `moment` (0…1): open 05:30–20:30 Beijing time, peaks near 08:00 and 18:00."""
    local = moment.astimezone(CHINA_TZ)
    hour = local.hour + local.minute / 60
    if hour < 5.5 or hour > 20.5:
        return 0.02
    level = 0.3 + 0.7 * math.exp(-(((hour - 8) / 1.3) ** 2)) + 0.6 * math.exp(-(((hour - 18) / 1.3) ** 2))
    return min(1.0, level)


def price_drift(product: str, day: int) -> float:
    """The wholesale price factor of `product` on day `day` (a date ordinal), the same in every stall: a weekly
    swing of ±6 % with a phase of its own, a slow seasonal ±10 %, and a day-to-day wobble of about 2 %."""
    seed = zlib.crc32(product.encode())
    phase = (seed % 1000) / 1000 * 2 * math.pi
    weekly = 0.06 * math.sin(2 * math.pi * day / 7 + phase)
    seasonal = 0.10 * math.sin(2 * math.pi * day / 365 + phase / 2)
    wobble = random.Random(f"{seed}:{day}").gauss(0, 0.02)
    return max(0.5, 1 + weekly + seasonal + wobble)


def yuan(value: Decimal | float) -> float:
    """Round to fen (0.01 yuan), half up, as a JSON number."""
    return float(Decimal(str(value)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def line_total(weight_kg: float, unit_price: float) -> float:
    """total = weight × price, rounded to 0.01 yuan (half up), computed in decimal."""
    return yuan(Decimal(str(weight_kg)) * Decimal(str(unit_price)))


def _poisson(rng: random.Random, mean: float) -> int:
    if mean <= 0:
        return 0
    if mean > 50:  # normal approximation
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def _short(device_id: str) -> str:
    """8 hex digits naming a device, for ids that must stay short (order and result numbers)."""
    return f"{zlib.crc32(device_id.encode()):08X}"


# ---------------------------------------------------------------- the generator base


class Generator:
    """Base: health state, the boot/tick cycle, generic commands (`reboot`, `ping`)."""

    kind: ClassVar[DeviceKind]
    #: Event types this kind can produce (each has a `_event_<type>` method).
    EVENT_TYPES: ClassVar[tuple[str, ...]] = ("fault",)
    #: Send a `state` message every this many ticks (and at boot).
    STATE_EVERY: ClassVar[int] = 60
    HAS_TELEMETRY: ClassVar[bool] = True
    BATTERY: ClassVar[bool] = False
    FAULT_CODES: ClassVar[tuple[str, ...]] = ("sensor_timeout", "storage_full", "watchdog_reset")
    #: Probability per tick of a spontaneous `fault` event.
    FAULT_RATE: ClassVar[float] = 0.0005

    def __init__(self, device_id: str, market: str | None = None, seed: int | str = 0) -> None:
        self.device_id = device_id
        self.market = market if market and market != "_" else None
        self.rng = random.Random(f"{seed}:{device_id}")
        self.ticks = 0
        #: The OutOfRange fault: while set, the kind's readings go where a rule must catch them.
        self.anomaly = False
        self.booted_at: datetime | None = None
        self.scheduled: list[tuple[datetime, dict[str, Any]]] = []
        self.state: dict[str, Any] = {
            "firmware_version": self.rng.choice(["1.2.0", "1.3.4", "2.0.1", "2.1.0"]),
            "rssi_dbm": self.rng.randint(-85, -45),
            "ip": f"10.{self.rng.randint(16, 31)}.{self.rng.randint(0, 255)}.{self.rng.randint(2, 254)}",
            "reboots": 0,
            "commands": [],  # every command applied, newest last
        }
        if self.BATTERY:
            self.state["battery_pct"] = round(self.rng.uniform(55, 100), 1)

    # -- the cycle -----------------------------------------------------------
    def boot(self, now: datetime) -> list[Emission]:
        """What the device says when it (re)starts: its state."""
        self.booted_at = now
        return [Emission("state", self.state_payload(now))]

    def tick(self, now: datetime) -> list[Emission]:
        """One interval's worth of messages."""
        self.ticks += 1
        out: list[Emission] = []
        if self.HAS_TELEMETRY:
            out.append(Emission("telemetry", self.telemetry(now)))
        out += self.events(now)
        if self.rng.random() < self.FAULT_RATE:
            out.append(Emission("event", self._event_fault(now)))
        if self.ticks % self.STATE_EVERY == 0:
            out.append(Emission("state", self.state_payload(now)))
        return out

    def events(self, now: datetime) -> list[Emission]:
        """Spontaneous events of this tick (kind-specific)."""
        return []

    def next_due(self) -> datetime | None:
        """When the earliest scheduled (timed) work is due, if any."""
        return min((at for at, _ in self.scheduled), default=None)

    def due(self, now: datetime) -> list[Emission]:
        """Run scheduled work whose time has come."""
        ready = [cmd for at, cmd in self.scheduled if at <= now]
        self.scheduled = [(at, cmd) for at, cmd in self.scheduled if at > now]
        out: list[Emission] = []
        for cmd in ready:
            out += self._run_scheduled(cmd, now)
        return out

    def _run_scheduled(self, command: dict[str, Any], now: datetime) -> list[Emission]:
        return []

    def failed_tests(self, now: datetime, count: int = 1) -> list[Emission]:
        """The FailedTest fault: failed food-safety results (only a food detector has any)."""
        return []

    # -- payloads ------------------------------------------------------------
    def telemetry(self, now: datetime) -> dict[str, Any]:
        raise NotImplementedError

    def event(self, now: datetime, type: str | None = None) -> dict[str, Any]:
        """One event payload of `type` (any of EVENT_TYPES; a likely one when None)."""
        chosen = type or self.EVENT_TYPES[0]
        if chosen not in self.EVENT_TYPES:
            raise ValueError(f"{self.kind} has no {chosen!r} event; it has {self.EVENT_TYPES}")
        method: Callable[[datetime], dict[str, Any]] = getattr(self, f"_event_{chosen}")
        return method(now)

    def _event_fault(self, now: datetime) -> dict[str, Any]:
        code = self.rng.choice(self.FAULT_CODES)
        return {"type": "fault", "code": code, "message": f"{code} at {local_iso(now)}"}

    def health(self, now: datetime) -> dict[str, Any]:
        """The `Health` fields every kind may report as state."""
        uptime = 0 if self.booted_at is None else max(0, int((now - self.booted_at).total_seconds()))
        self.state["rssi_dbm"] = max(-120, min(-30, self.state["rssi_dbm"] + self.rng.randint(-2, 2)))
        out: dict[str, Any] = {
            "firmware_version": self.state["firmware_version"],
            "rssi_dbm": self.state["rssi_dbm"],
            "uptime_s": uptime,
            "ip": self.state["ip"],
        }
        if self.BATTERY:
            out["battery_pct"] = self.state["battery_pct"]
        return out

    def state_payload(self, now: datetime) -> dict[str, Any]:
        return self.health(now)

    # -- commands ------------------------------------------------------------
    def apply_command(self, command: dict[str, Any], now: datetime) -> list[Emission]:
        """Apply a validated command (without its `id`) to `state`; returns what the device answers."""
        name = command["command"]
        self.state["commands"] = [*self.state["commands"][-99:], command]  # the last 100
        self.state["last_command"] = name
        handler: Callable[[dict[str, Any], datetime], list[Emission]] | None = getattr(self, f"_cmd_{name}", None)
        return handler(command, now) if handler else []

    def _cmd_reboot(self, command: dict[str, Any], now: datetime) -> list[Emission]:
        self.state["reboots"] += 1
        return self.boot(now + timedelta(seconds=command.get("delay_s", 0)))

    def _cmd_ping(self, command: dict[str, Any], now: datetime) -> list[Emission]:
        self.state["pinged_at"] = rfc3339(now)
        return [Emission("state", self.state_payload(now))]

    def validate(self, emission: Emission) -> Any:
        """Validate a payload against this kind's schema (raises pydantic.ValidationError)."""
        return validate_payload(self.kind, emission.channel, emission.payload)


# ---------------------------------------------------------------- scale


class ScaleGenerator(Generator):
    """A traceable retail scale: sales (transactions), live load, self-check, anti-cheat, PLU table."""

    kind = DeviceKind.SCALE
    EVENT_TYPES = ("transaction", "self_check", "tamper", "calibrated", "price_set", "fault")
    STATE_EVERY = 40
    FAULT_CODES = ("printer_jam", "load_cell_timeout", "network_retry")

    def __init__(self, device_id: str, market: str | None = None, seed: int | str = 0) -> None:
        super().__init__(device_id, market, seed)
        category = self.rng.choice(list(PRODUCTS))
        prefix, label, products, _ = PRODUCTS[category]
        chosen = self.rng.sample(products, k=min(len(products), self.rng.randint(5, 10)))
        surname = self.rng.choice(SURNAMES)
        self.state.update(
            category=category,
            stall_no=f"{STALL_ROWS[category]}{self.rng.randint(1, 40):02d}",
            vendor_name=f"{surname}记{label}",
            plu_version=0,
            plu=[
                {
                    "product_code": f"{prefix}{products.index(item):03d}",
                    "product_name": item[0],
                    "unit_price": round(self.rng.uniform(item[1], item[2]), 1),
                }
                for item in chosen
            ],
            calibration_grant=None,
            anti_cheat_ok=True,
            paper_ok=True,
            orders=0,
            load_kg=0.0,
        )

    @property
    def market_code(self) -> str:
        return self.market or "UNPLACED"

    def events(self, now: datetime) -> list[Emission]:
        out: list[Emission] = self._morning_prices(now)
        level = busy(now)
        if self.rng.random() < 0.25 + 0.6 * level:
            out.append(Emission("event", self._event_transaction(now)))
        else:
            self.state["load_kg"] = 0.0
        roll = self.rng.random()
        if roll < 0.002:
            out.append(Emission("event", self._event_price_set(now)))
        elif roll < 0.0025:
            out.append(Emission("event", self._event_self_check(now)))
        elif roll < 0.0027:
            out.append(Emission("event", self._event_tamper(now)))
        return out

    def boot(self, now: datetime) -> list[Emission]:
        return [*super().boot(now), Emission("event", self._event_self_check(now))]

    def telemetry(self, now: datetime) -> dict[str, Any]:
        load = self.state["load_kg"] or round(self.rng.uniform(-0.004, 0.004), 3)
        return {"load_kg": load, "stable": self.rng.random() > 0.05, "zero_ok": self.rng.random() > 0.002}

    def state_payload(self, now: datetime) -> dict[str, Any]:
        return {
            **self.health(now),
            "anti_cheat_ok": self.state["anti_cheat_ok"],
            "paper_ok": self.state["paper_ok"],
            "plu_version": self.state["plu_version"],
        }

    def _event_transaction(self, now: datetime) -> dict[str, Any]:
        category = self.state["category"]
        low, high = PRODUCTS[category][3]
        item = self.rng.choice(self.state["plu"])
        if item["product_name"] in ("鸡蛋", "鸭蛋", "鹌鹑蛋"):
            low, high = 0.5, 2.5
        weight = round(self.rng.uniform(low, high), 3)
        weight = max(weight, 0.005)
        self.state["load_kg"] = weight
        self.state["orders"] += 1
        price = float(item["unit_price"])
        if self.anomaly:  # a price far from the market's median for the product (BJ 6.3.2)
            price = round(price * 10, 2)
        local = now.astimezone(CHINA_TZ)
        order_no = f"{local:%Y%m%d%H%M%S}{_short(self.device_id)}{self.state['orders'] % 100000:05d}"
        return {
            "type": "transaction",
            "order_no": order_no,
            "time": local_iso(now),
            "market_code": self.market_code,
            "stall_no": self.state["stall_no"],
            "vendor_name": self.state["vendor_name"],
            "scale_id": self.device_id[:64],
            "product_code": item["product_code"],
            "product_name": item["product_name"],
            "weight_kg": weight,
            "unit_price": price,
            "total": line_total(weight, price),
            "trace_code": f"TC{local:%Y%m%d}{self.rng.randrange(10**10):010d}",
        }

    def _event_self_check(self, now: datetime) -> dict[str, Any]:
        passed = self.rng.random() > 0.02
        details = "load cell, display, printer, clock: ok" if passed else "printer: paper low"
        if not passed:
            self.state["paper_ok"] = False
        return {"type": "self_check", "passed": passed, "details": details}

    def _event_tamper(self, now: datetime) -> dict[str, Any]:
        reason = self.rng.choice(["seal_opened", "parameter_changed", "unauthorised_calibration", "zero_drift"])
        self.state["anti_cheat_ok"] = False
        return {"type": "tamper", "reason": reason, "details": f"detected at {local_iso(now)}"}

    def _event_calibrated(self, now: datetime) -> dict[str, Any]:
        grant = self.state.get("calibration_grant") or {}
        reference = 10.0
        return {
            "type": "calibrated",
            "grant_id": grant.get("grant_id"),
            "reference_kg": reference,
            "measured_kg": round(reference + self.rng.uniform(-0.004, 0.004), 3),
        }

    def _morning_prices(self, now: datetime) -> list[Emission]:
        """Once a market day, when the market opens, the vendor re-prices the PLU table with the day's wholesale
        drift (`price_drift`: the same for every stall selling a product, plus the stall's own margin), and the
        scale reports each change as a `price_set` event, so the platform and the labels follow."""
        local = now.astimezone(CHINA_TZ)
        if busy(now) < 0.1 or self.state.get("price_day") == local.date().isoformat():
            return []
        first = "price_day" not in self.state
        self.state["price_day"] = local.date().isoformat()
        if first:  # the table it booted with is today's
            for item in self.state["plu"]:
                item.setdefault("base_price", item["unit_price"])
            return []
        out: list[Emission] = []
        for item in self.state["plu"]:
            base = item.setdefault("base_price", item["unit_price"])
            price = max(0.5, round(base * price_drift(item["product_name"], local.date().toordinal()), 1))
            if price != item["unit_price"]:
                item["unit_price"] = price
                out.append(Emission("event", {"type": "price_set", "product_code": item["product_code"],
                                              "unit_price": price}))  # fmt: skip
        return out

    def _event_price_set(self, now: datetime) -> dict[str, Any]:
        item = self.rng.choice(self.state["plu"])
        item["unit_price"] = round(max(0.5, item["unit_price"] * self.rng.uniform(0.9, 1.1)), 1)
        return {"type": "price_set", "product_code": item["product_code"], "unit_price": item["unit_price"]}

    def _cmd_set_plu(self, command: dict[str, Any], now: datetime) -> list[Emission]:
        self.state["plu_version"] = int(command["version"])
        entries = [
            {"product_code": e["product_code"], "product_name": e["product_name"], "unit_price": yuan(e["unit_price"]),
             "base_price": yuan(e["unit_price"])}
            for e in command.get("entries", [])
        ]
        if entries:
            self.state["plu"] = entries
        return [Emission("state", self.state_payload(now))]

    def _cmd_authorise_calibration(self, command: dict[str, Any], now: datetime) -> list[Emission]:
        valid_until = command["valid_until"]
        until = parse_ts(valid_until) if isinstance(valid_until, str) else valid_until
        self.state["calibration_grant"] = {"grant_id": command["grant_id"], "valid_until": rfc3339(until)}
        return self.calibrate(now)  # the technician is at the scale: it calibrates at once, if it may

    def calibrate(self, now: datetime) -> list[Emission]:
        """The calibrate key (SZ 6.2.7): only with a current grant the server sent, once per grant. Refused
        otherwise (nothing changes, `calibration_refused` says why); the platform judges the event again."""
        grant = self.state.get("calibration_grant")
        used: list[str] = self.state.setdefault("used_grants", [])
        if not grant:
            refusal = "no_grant"
        elif parse_ts(grant["valid_until"]) <= now:  # the window is over: a careful scale does not calibrate
            refusal = "expired"
        elif grant["grant_id"] in used:
            refusal = "reused"
        else:
            used.append(grant["grant_id"])
            self.state["calibrated_with"] = grant["grant_id"]
            self.state["anti_cheat_ok"] = True
            return [Emission("event", self._event_calibrated(now))]
        self.state["calibration_refused"] = {"grant_id": (grant or {}).get("grant_id"), "reason": refusal}
        return []


# ---------------------------------------------------------------- electronic shelf label and base station


class EslGenerator(Generator):
    """An e-paper shelf label: battery, radio, and what it shows. Images arrive as compact frames
    (`retail.esl_codec`, the platform's wire format) and are decoded into a `LabelScreen`, so tests can check the
    pixels; timed changes are held on the label and switch on its own clock. A `show_image` with only a `url`
    (no frame) is recorded by its sha256."""

    kind = DeviceKind.ESL
    EVENT_TYPES = ("shown", "scanned", "fault")
    STATE_EVERY = 24
    BATTERY = True
    FAULT_CODES = ("refresh_failed", "low_battery")
    FAULT_RATE = 0.0002
    #: The panel the platform renders for when the device's model says nothing else (retail/labels.py).
    RESOLUTION = (296, 128)
    COLOURS = "bwr"

    def __init__(self, device_id: str, market: str | None = None, seed: int | str = 0) -> None:
        from retail.esl_codec import LabelScreen

        super().__init__(device_id, market, seed)
        self.screen = LabelScreen(*self.RESOLUTION, self.COLOURS)
        self.state.update(
            base_station_id=f"BS-{self.rng.randint(1, 20):02d}",
            page=0,
            image_sha256=hashlib.sha256(f"boot:{device_id}".encode()).hexdigest(),
            image_url=None,
            resolution=self.RESOLUTION,
            colours=self.COLOURS,
            led=None,
        )

    def telemetry(self, now: datetime) -> dict[str, Any]:
        self.state["battery_pct"] = round(max(0.0, self.state["battery_pct"] - self.rng.uniform(0, 0.02)), 2)
        if self.rng.random() < 0.003:  # roamed to a neighbouring base station
            self.state["base_station_id"] = f"BS-{self.rng.randint(1, 20):02d}"
        return {
            "battery_pct": self.state["battery_pct"],
            "rssi_dbm": max(-110, min(-30, self.state["rssi_dbm"] + self.rng.randint(-4, 4))),
            "base_station_id": self.state["base_station_id"],
        }

    def events(self, now: datetime) -> list[Emission]:
        if self.rng.random() < 0.002:
            return [Emission("event", self._event_scanned(now))]
        return []

    def state_payload(self, now: datetime) -> dict[str, Any]:
        return {
            **self.health(now),
            "page": self.state["page"],
            "image_sha256": self.state["image_sha256"],
            "resolution": list(self.state["resolution"]),
            "colours": self.state["colours"],
        }

    def _event_shown(self, now: datetime) -> dict[str, Any]:
        return {"type": "shown", "image_sha256": self.state["image_sha256"], "page": self.state["page"]}

    def _event_scanned(self, now: datetime) -> dict[str, Any]:
        prefix, _, products, _ = PRODUCTS[self.rng.choice(list(PRODUCTS))]
        return {"type": "scanned", "product_code": f"{prefix}{self.rng.randrange(len(products)):03d}"}

    # -- the screen ------------------------------------------------------------------------------
    def _from_screen(self, events: list[dict[str, Any]], now: datetime) -> list[Emission]:
        """Mirror the screen into `state` and turn its events into emissions."""
        if self.screen.image is not None:
            self.state.update(image_sha256=self.screen.image.sha256, page=self.screen.page, shown_at=rfc3339(now))
            if self.state.get("scheduled_image") == self.screen.image.sha256:
                self.state["scheduled_image"] = None
        return [Emission("event", e) for e in events]

    def next_due(self) -> datetime | None:
        return min((t for t in (super().next_due(), self.screen.next_due()) if t is not None), default=None)

    def due(self, now: datetime) -> list[Emission]:
        return super().due(now) + self._from_screen(self.screen.tick(now), now)

    def _cmd_show_image(self, command: dict[str, Any], now: datetime) -> list[Emission]:
        at = command.get("at")
        when = parse_ts(at) if isinstance(at, str) else at
        if when is not None and when > now:
            self.state["scheduled_image"] = command["image_sha256"]
        if command.get("frame"):
            return self._from_screen(self.screen.apply({**command, "at": when}, now), now)
        if when is not None and when > now:  # a timed change: the label keeps it and switches on time
            self.scheduled.append((when, command))
            return []
        return self._run_scheduled(command, now)

    def _run_scheduled(self, command: dict[str, Any], now: datetime) -> list[Emission]:
        self.state.update(image_sha256=command["image_sha256"], image_url=command.get("url"),
                          page=command.get("page", 0))  # fmt: skip
        self.state["shown_at"] = rfc3339(now)
        if self.state.get("scheduled_image") == command["image_sha256"]:
            self.state["scheduled_image"] = None
        return [Emission("event", self._event_shown(now))]

    def _cmd_flash_led(self, command: dict[str, Any], now: datetime) -> list[Emission]:
        self.screen.apply(command, now)
        until = now + timedelta(seconds=command.get("seconds", 10))
        self.state["led"] = {"colour": command.get("colour", "green"), "until": rfc3339(until)}
        return []

    def _cmd_show_page(self, command: dict[str, Any], now: datetime) -> list[Emission]:
        if self.screen.pages:
            self.screen.apply(command, now)
        self.state["page"] = command["page"]
        return [Emission("event", self._event_shown(now))]


class BaseStationGenerator(Generator):
    """An ESL base station (gateway): how many labels it serves, labels joining and leaving."""

    kind = DeviceKind.ESL_BASE_STATION
    EVENT_TYPES = ("label_joined", "label_left", "fault")
    FAULT_CODES = ("radio_reset", "uplink_retry")

    def __init__(self, device_id: str, market: str | None = None, seed: int | str = 0) -> None:
        super().__init__(device_id, market, seed)
        count = self.rng.randint(40, 400)
        self.state.update(
            channel=self.rng.choice([11, 15, 20, 25, 26]),
            labels=[self._label_id(n) for n in range(count)],
            next_label=count,
            relayed=[],
        )

    def _label_id(self, n: int) -> str:
        return f"ESL-{_short(self.device_id)}-{n:05d}"

    def telemetry(self, now: datetime) -> dict[str, Any]:
        return {
            "labels_connected": len(self.state["labels"]),
            "queue_depth": _poisson(self.rng, 2 + 20 * busy(now)),
            "channel": self.state["channel"],
        }

    def events(self, now: datetime) -> list[Emission]:
        roll = self.rng.random()
        if roll < 0.05:
            return [Emission("event", self._event_label_joined(now))]
        if roll < 0.08 and self.state["labels"]:
            return [Emission("event", self._event_label_left(now))]
        return []

    def _event_label_joined(self, now: datetime) -> dict[str, Any]:
        label = self._label_id(self.state["next_label"])
        self.state["next_label"] += 1
        self.state["labels"].append(label)
        return {"type": "label_joined", "label_id": label, "rssi_dbm": self.rng.randint(-95, -50)}

    def _event_label_left(self, now: datetime) -> dict[str, Any]:
        if not self.state["labels"]:
            self.state["labels"].append(self._label_id(0))
        label = self.state["labels"].pop(self.rng.randrange(len(self.state["labels"])))
        return {"type": "label_left", "label_id": label}

    def _cmd_relay(self, command: dict[str, Any], now: datetime) -> list[Emission]:
        self.state["relayed"].append({"label_id": command["label_id"], "payload": command["payload"]})
        return []


# ---------------------------------------------------------------- camera, flow counter


class CameraGenerator(Generator):
    """An IP camera: frame rate, people in view, and the occasional vision detection."""

    kind = DeviceKind.CAMERA
    EVENT_TYPES = ("detection", "fault")
    FAULT_CODES = ("stream_lost", "storage_full")

    def __init__(self, device_id: str, market: str | None = None, seed: int | str = 0) -> None:
        super().__init__(device_id, market, seed)
        ip = self.state["ip"]
        self.state.update(
            zone=self.rng.choice(ZONES),
            resolution=self.rng.choice([(1920, 1080), (2560, 1440), (3840, 2160)]),
            stream_url=f"rtsp://{ip}:554/Streaming/Channels/101",
            snapshot_url=f"http://{ip}/ISAPI/Streaming/channels/101/picture",
            nominal_fps=self.rng.choice([15.0, 25.0, 30.0]),
        )

    def telemetry(self, now: datetime) -> dict[str, Any]:
        fps = self.state["nominal_fps"]
        fps = round(fps * self.rng.uniform(0.2, 0.6) if self.rng.random() < 0.01 else fps + self.rng.gauss(0, 0.3), 1)
        return {"fps": max(0.0, min(240.0, fps)), "people_in_view": _poisson(self.rng, 1 + 30 * busy(now))}

    def events(self, now: datetime) -> list[Emission]:
        if self.rng.random() < 0.01 + 0.03 * busy(now):
            return [Emission("event", self._event_detection(now))]
        return []

    def state_payload(self, now: datetime) -> dict[str, Any]:
        return {
            **self.health(now),
            "resolution": list(self.state["resolution"]),
            "stream_url": self.state["stream_url"],
            "snapshot_url": self.state["snapshot_url"],
        }

    def _event_detection(self, now: datetime) -> dict[str, Any]:
        category = self.rng.choice(VISION_CATEGORIES)
        count = _poisson(self.rng, 120 * busy(now)) + 60 if category == "crowd_peak" else self.rng.randint(1, 3)
        stamp = now.astimezone(CHINA_TZ)
        return {
            "type": "detection",
            "category": category,
            "zone": self.state["zone"],
            "count": count,
            "confidence": round(self.rng.uniform(0.55, 0.99), 2),
            "evidence_url": f"/evidence/{self.device_id}/{stamp:%Y%m%d%H%M%S}.jpg",
        }


class FlowCounterGenerator(Generator):
    """A passenger-flow counter at one entrance: people in and out since the last report."""

    kind = DeviceKind.FLOW_COUNTER
    FAULT_CODES = ("lens_blocked", "counter_reset")

    def __init__(self, device_id: str, market: str | None = None, seed: int | str = 0) -> None:
        super().__init__(device_id, market, seed)
        self.state.update(entrance=self.rng.choice(ENTRANCES), peak_per_min=self.rng.uniform(20, 60), last=None)

    def telemetry(self, now: datetime) -> dict[str, Any]:
        last: datetime | None = self.state["last"]
        period = 60 if last is None else round((now - last).total_seconds())
        period = max(1, min(3600, period))
        self.state["last"] = now
        per_min = self.state["peak_per_min"] * busy(now)
        # Shoppers arrive before they leave: in leads out by ~40 minutes around the peaks.
        lagged = self.state["peak_per_min"] * busy(now - timedelta(minutes=40))
        return {
            "entrance": self.state["entrance"],
            "count_in": _poisson(self.rng, per_min * period / 60),
            "count_out": _poisson(self.rng, lagged * period / 60),
            "period_s": period,
        }


# ---------------------------------------------------------------- food-safety detector


class FoodDetectorGenerator(Generator):
    """A rapid-test detector with ≥ 5 channels: batches of results, mostly passing (SZ 6.3)."""

    kind = DeviceKind.FOOD_DETECTOR
    EVENT_TYPES = ("test_result", "fault")
    HAS_TELEMETRY = False
    STATE_EVERY = 20
    FAULT_CODES = ("reagent_low", "lamp_failure", "cuvette_missing")
    FAIL_RATE = 0.04

    def __init__(self, device_id: str, market: str | None = None, seed: int | str = 0) -> None:
        super().__init__(device_id, market, seed)
        self.state.update(
            channels=self.rng.choice([5, 8, 12, 16]),
            inspector=self.rng.choice(SURNAMES) + self.rng.choice(GIVEN),
            results=0,
        )

    def state_payload(self, now: datetime) -> dict[str, Any]:
        return {**self.health(now), "channels": self.state["channels"]}

    def events(self, now: datetime) -> list[Emission]:
        if self.rng.random() > 0.2 + 0.5 * busy(now):
            return []
        count = self.rng.randint(1, self.state["channels"])
        return [Emission("event", self._event_test_result(now, channel=c + 1)) for c in range(count)]

    def failed_tests(self, now: datetime, count: int = 1) -> list[Emission]:
        return [Emission("event", self._event_test_result(now, fail=True)) for _ in range(count)]

    def _event_test_result(self, now: datetime, channel: int | None = None, fail: bool = False) -> dict[str, Any]:
        item, unit, limit, ok_range, bad_range, samples = self.rng.choice(FOOD_TESTS)
        passed = not fail and self.rng.random() >= self.FAIL_RATE
        value = round(self.rng.uniform(*(ok_range if passed else bad_range)), 3)
        if passed and value >= limit:
            value = round(limit * 0.5, 3)
        self.state["results"] += 1
        row = self.rng.choice(list(STALL_ROWS.values()))
        return {
            "type": "test_result",
            "result_id": f"FT-{_short(self.device_id)}-{self.state['results']:08d}",
            "tested_at": local_iso(now),
            "channel": channel or self.rng.randint(1, self.state["channels"]),
            "sample_name": self.rng.choice(samples),
            "stall_no": f"{row}{self.rng.randint(1, 40):02d}",
            "item": item,
            "value": value,
            "unit": unit,
            "limit": limit,
            "passed": value < limit,
            "inspector": self.state["inspector"],
        }


# ---------------------------------------------------------------- environment, fire


class EnvSensorGenerator(Generator):
    """Temperature/humidity with a daily cycle (warmest about 14:00), CO₂ with the crowd, NH₃ by zone."""

    kind = DeviceKind.ENV_SENSOR
    FAULT_CODES = ("sensor_drift", "fan_failure")

    def __init__(self, device_id: str, market: str | None = None, seed: int | str = 0) -> None:
        super().__init__(device_id, market, seed)
        zone = self.rng.choice(ZONES)
        self.state.update(
            zone=zone,
            mean_c=self.rng.uniform(18, 26),
            swing_c=self.rng.uniform(3, 7),
            odour=zone in ("水产区", "肉类区", "熟食区"),
        )

    def telemetry(self, now: datetime) -> dict[str, Any]:
        local = now.astimezone(CHINA_TZ)
        hour = local.hour + local.minute / 60
        phase = math.cos(2 * math.pi * (hour - 14) / 24)  # 1 at 14:00, -1 at 02:00
        temperature = self.state["mean_c"] + self.state["swing_c"] * phase + self.rng.gauss(0, 0.2)
        humidity = 68 - 14 * phase + (8 if self.state["zone"] == "水产区" else 0) + self.rng.gauss(0, 1.0)
        level = busy(now)
        out: dict[str, Any] = {
            "temperature_c": round(max(-50, min(80, temperature)), 1),
            "humidity_pct": round(max(0, min(100, humidity)), 1),
            "co2_ppm": round(max(350.0, 420 + 900 * level + self.rng.gauss(0, 25))),
            "pm25_ugm3": round(max(1.0, 18 + 25 * level + self.rng.gauss(0, 4)), 1),
        }
        if self.state["odour"]:
            out["nh3_ppm"] = round(max(0.0, 0.8 + 3 * level + self.rng.gauss(0, 0.3)), 2)
        if self.anomaly:  # ventilation failed on a summer afternoon
            out.update(temperature_c=round(45 + self.rng.gauss(0, 0.3), 1), humidity_pct=95.0,
                       co2_ppm=round(2500 + self.rng.gauss(0, 30)))  # fmt: skip
        return out


class FirePanelGenerator(Generator):
    """A fire alarm panel: loops, mains, backup battery; alarms and equipment faults are rare and clear later."""

    kind = DeviceKind.FIRE_PANEL
    EVENT_TYPES = ("fire_alarm", "equipment_fault", "fault")
    ALARM_RATE = 0.0005
    EQUIPMENT_FAULT_RATE = 0.002

    def __init__(self, device_id: str, market: str | None = None, seed: int | str = 0) -> None:
        super().__init__(device_id, market, seed)
        self.state.update(
            loops_total=self.rng.choice([4, 8, 16]),
            loops_down=0,
            mains_power=True,
            backup_battery_pct=round(self.rng.uniform(92, 100), 1),
            open_alarm=None,
            open_fault=None,
        )

    def telemetry(self, now: datetime) -> dict[str, Any]:
        if self.state["mains_power"]:
            self.state["backup_battery_pct"] = min(100.0, round(self.state["backup_battery_pct"] + 0.1, 1))
            if self.rng.random() < 0.0005:
                self.state["mains_power"] = False
        else:
            self.state["backup_battery_pct"] = max(0.0, round(self.state["backup_battery_pct"] - 0.5, 1))
            if self.rng.random() < 0.1:
                self.state["mains_power"] = True
        total = self.state["loops_total"]
        return {
            "loops_ok": total - min(total, self.state["loops_down"]),
            "loops_total": total,
            "mains_power": self.state["mains_power"],
            "backup_battery_pct": self.state["backup_battery_pct"],
        }

    def events(self, now: datetime) -> list[Emission]:
        out: list[Emission] = []
        if self.state["open_alarm"] is not None:
            if not self.anomaly and self.rng.random() < 0.3:  # investigated and reset at the panel
                out.append(Emission("event", {**self.state["open_alarm"], "cleared": True}))
                self.state["open_alarm"] = None
        elif self.anomaly or self.rng.random() < self.ALARM_RATE:
            out.append(Emission("event", self._event_fire_alarm(now)))
        if self.state["open_fault"] is not None:
            if self.rng.random() < 0.1:
                out.append(Emission("event", {**self.state["open_fault"], "cleared": True}))
                self.state["open_fault"] = None
                self.state["loops_down"] = 0
        elif self.rng.random() < self.EQUIPMENT_FAULT_RATE:
            out.append(Emission("event", self._event_equipment_fault(now)))
        return out

    def _event_fire_alarm(self, now: datetime) -> dict[str, Any]:
        zone = self.rng.choice(ZONES)
        alarm = {
            "type": "fire_alarm",
            "zone": zone,
            "detector": f"SD-{self.rng.randint(1, self.state['loops_total'])}-{self.rng.randint(1, 64):03d}",
            "cleared": False,
        }
        self.state["open_alarm"] = alarm
        return alarm

    def _event_equipment_fault(self, now: datetime) -> dict[str, Any]:
        equipment = self.rng.choice(["smoke_detector", "sprinkler", "hydrant", "extinguisher", "exit_light", "panel"])
        fault = {"type": "equipment_fault", "equipment": equipment, "zone": self.rng.choice(ZONES), "cleared": False}
        self.state["open_fault"] = fault
        if equipment == "smoke_detector":
            self.state["loops_down"] = 1
        return fault


# ---------------------------------------------------------------- cold-chain locker


class ColdLockerGenerator(Generator):
    """A cold-chain locker: compartments kept at 1–10 °C, doors opening and closing; sometimes a door is left
    open too long and that compartment warms past 10 °C, sometimes a compartment's cooling fails."""

    kind = DeviceKind.COLD_LOCKER
    EVENT_TYPES = ("door", "fault")
    FAULT_CODES = ("compressor_fault", "lock_jammed")
    DOOR_RATE = 0.04
    LEFT_OPEN_RATE = 0.1  # of openings, the share left open for many ticks
    COOLING_FAULT_RATE = 0.0008

    def __init__(self, device_id: str, market: str | None = None, seed: int | str = 0) -> None:
        super().__init__(device_id, market, seed)
        count = self.rng.choice([8, 12, 16, 24])
        self.state.update(
            setpoint_c=round(self.rng.uniform(3, 5), 1),
            compartments={
                n: {"temperature_c": round(self.rng.uniform(3, 5), 1), "door": "closed_locked", "open_for": 0,
                    "hold_open": 0, "cooling_fault": 0}
                for n in range(1, count + 1)
            },
            disabled=[],
        )  # fmt: skip

    def telemetry(self, now: datetime) -> dict[str, Any]:
        readings = []
        for n, c in self.state["compartments"].items():
            target = self.state["setpoint_c"]
            if c["door"] == "open":
                target += 2.0 + 0.8 * c["open_for"]  # warms while the door stays open
            if c["cooling_fault"] > 0:
                target = self.rng.choice([0.2, 11.5, 13.0]) if c["cooling_fault"] == 1 else c["temperature_c"]
                c["cooling_fault"] += 1
                if c["cooling_fault"] > 10:
                    c["cooling_fault"] = 0
            elif self.rng.random() < self.COOLING_FAULT_RATE:
                c["cooling_fault"] = 1
            moved = c["temperature_c"] + 0.5 * (target - c["temperature_c"]) + self.rng.gauss(0, 0.1)
            c["temperature_c"] = max(-40.0, min(60.0, round(moved, 1)))
            if self.anomaly and n == 1:  # compartment 1's cooling has failed (SZ 6.14.4 asks 1–10 °C)
                c["temperature_c"] = round(14.0 + self.rng.gauss(0, 0.2), 1)
            readings.append({"compartment": n, "temperature_c": c["temperature_c"], "door": c["door"]})
        return {"compartments": readings}

    def events(self, now: datetime) -> list[Emission]:
        out: list[Emission] = []
        for n, c in self.state["compartments"].items():
            if n in self.state["disabled"]:
                continue
            if c["door"] == "open":
                c["open_for"] += 1
                if c["hold_open"] > 0:
                    c["hold_open"] -= 1
                elif self.rng.random() < 0.7:
                    out.append(self._door(n, "closed_unlocked"))
            elif c["door"] == "closed_unlocked":
                out.append(self._door(n, "closed_locked"))
            elif c["door"] == "unlocked":
                out.append(self._door(n, "open"))
                if self.rng.random() < self.LEFT_OPEN_RATE:
                    c["hold_open"] = self.rng.randint(5, 15)
            elif self.rng.random() < self.DOOR_RATE * (0.3 + busy(now)):
                out.append(self._door(n, "unlocked"))
        return out

    def _door(self, compartment: int, door: str) -> Emission:
        c = self.state["compartments"][compartment]
        c["door"] = door
        if door != "open":
            c["open_for"] = 0
        return Emission("event", {"type": "door", "compartment": compartment, "door": door})

    def _event_door(self, now: datetime) -> dict[str, Any]:
        n = self.rng.choice(list(self.state["compartments"]))
        return self._door(n, self.rng.choice(["unlocked", "open", "closed_unlocked", "closed_locked"])).payload

    def _cmd_disable_compartment(self, command: dict[str, Any], now: datetime) -> list[Emission]:
        n = int(command["compartment"])
        disabled = set(self.state["disabled"])
        if command.get("disabled", True):
            disabled.add(n)
        else:
            disabled.discard(n)
        self.state["disabled"] = sorted(disabled)
        return []

    def _cmd_unlock_compartment(self, command: dict[str, Any], now: datetime) -> list[Emission]:
        n = int(command["compartment"])
        if n not in self.state["compartments"] or n in self.state["disabled"]:
            return []
        return [self._door(n, "unlocked")]


# ---------------------------------------------------------------- thermometer, display


class ThermometerGenerator(Generator):
    """An infrared thermometer at an entrance: people measured per interval, now and then a fever."""

    kind = DeviceKind.THERMOMETER
    EVENT_TYPES = ("fever", "fault")
    FEVER_PER_PERSON = 0.0005

    def __init__(self, device_id: str, market: str | None = None, seed: int | str = 0) -> None:
        super().__init__(device_id, market, seed)
        self.state.update(entrance=self.rng.choice(ENTRANCES), fevers=[])

    def tick(self, now: datetime) -> list[Emission]:
        self.state["fevers"] = []
        return super().tick(now)

    def events(self, now: datetime) -> list[Emission]:
        # `tick` asks for telemetry first; the fevers found among the people measured are reported here.
        return [Emission("event", fever) for fever in self.state["fevers"]]

    def telemetry(self, now: datetime) -> dict[str, Any]:
        people = _poisson(self.rng, 40 * busy(now))
        fevers = [self._event_fever(now) for _ in range(people) if self.rng.random() < self.FEVER_PER_PERSON]
        if self.anomaly and not fevers:
            people, fevers = max(people, 1), [self._event_fever(now)]
        self.state["fevers"] = fevers
        out: dict[str, Any] = {"entrance": self.state["entrance"], "people_measured": people}
        if people:
            normal = round(self.rng.uniform(36.3, 37.1), 1)
            out["max_body_temp_c"] = max([normal, *(f["body_temp_c"] for f in fevers)])
        return out

    def _event_fever(self, now: datetime) -> dict[str, Any]:
        stamp = now.astimezone(CHINA_TZ)
        return {
            "type": "fever",
            "entrance": self.state["entrance"],
            "body_temp_c": round(self.rng.uniform(37.3, 39.6), 1),
            "snapshot_url": f"/evidence/{self.device_id}/{stamp:%Y%m%d%H%M%S}-{self.rng.randrange(1000):03d}.jpg",
        }


class DisplayGenerator(Generator):
    """A stall screen or public big screen: brightness (brighter by day) and the content it plays."""

    kind = DeviceKind.DISPLAY

    def __init__(self, device_id: str, market: str | None = None, seed: int | str = 0) -> None:
        super().__init__(device_id, market, seed)
        public = self.rng.random() < 0.2
        self.state.update(
            screen="public" if public else "stall",
            size_inch=self.rng.choice([55.0, 75.0, 86.0]) if public else self.rng.choice([10.1, 15.6, 21.5]),
            content_id="default-prices" if not public else "market-dashboard",
            content_url=None,
        )

    def telemetry(self, now: datetime) -> dict[str, Any]:
        brightness = 35 + 55 * min(1.0, busy(now) * 1.5)
        return {"brightness_pct": round(max(0, min(100, brightness + self.rng.gauss(0, 2))), 1),
                "content_id": self.state["content_id"]}  # fmt: skip

    def state_payload(self, now: datetime) -> dict[str, Any]:
        return {
            **self.health(now),
            "screen": self.state["screen"],
            "size_inch": self.state["size_inch"],
            "content_id": self.state["content_id"],
        }

    def _cmd_push_content(self, command: dict[str, Any], now: datetime) -> list[Emission]:
        self.state.update(content_id=command["content_id"], content_url=command["url"])
        return [Emission("state", self.state_payload(now))]


# ---------------------------------------------------------------- inspection tablet, broadcast (SZ 6.4, 6.7)


class InspectionTabletGenerator(Generator):
    """A market inspector's tablet: patrols stall by stall (巡检), a record per stall, photos of problems."""

    kind = DeviceKind("inspection_tablet")
    EVENT_TYPES = ("patrol_started", "patrol_record", "problem_photo", "patrol_finished", "fault")
    BATTERY = True
    FAULT_CODES = ("gps_lost", "camera_error")
    PATROL_RATE = 0.03  # chance per tick, in market hours, that an inspector sets off unasked
    PROBLEM_RATE = 0.08  # share of stalls where something is wrong
    CHECK_ITEMS = ("price_tag", "hygiene", "licence_shown", "scale_seal", "goods_within_line")

    def __init__(self, device_id: str, market: str | None = None, seed: int | str = 0) -> None:
        super().__init__(device_id, market, seed)
        self.state.update(
            inspector=self.rng.choice(SURNAMES) + self.rng.choice(GIVEN),
            lat=22.54 + self.rng.uniform(-0.02, 0.02),
            lon=114.05 + self.rng.uniform(-0.02, 0.02),
            patrol=None,  # {"patrol_id", "route", "next", "problems"}
            patrols=0,
            assigned=[],
        )

    def _stalls(self, count: int) -> list[str]:
        return [f"{self.rng.choice(list(STALL_ROWS.values()))}{self.rng.randint(1, 40):02d}" for _ in range(count)]

    def telemetry(self, now: datetime) -> dict[str, Any]:
        patrol = self.state["patrol"]
        drain = 0.05 if patrol else 0.005
        self.state["battery_pct"] = round(max(5.0, self.state["battery_pct"] - self.rng.uniform(0, drain)), 2)
        out: dict[str, Any] = {"battery_pct": self.state["battery_pct"]}
        if patrol:  # the patrol track (巡检轨迹): a point per interval while walking the route
            self.state["lat"] += self.rng.uniform(-0.00005, 0.00005)
            self.state["lon"] += self.rng.uniform(-0.00005, 0.00005)
            out.update(lat=round(self.state["lat"], 6), lon=round(self.state["lon"], 6),
                       patrol_id=patrol["patrol_id"],
                       stall_code=patrol["route"][min(patrol["next"], len(patrol["route"]) - 1)])  # fmt: skip
        return out

    def events(self, now: datetime) -> list[Emission]:
        patrol = self.state["patrol"]
        if patrol is None:
            if self.state["assigned"]:
                patrol_id, route = self.state["assigned"].pop(0)
                return [Emission("event", self._start(patrol_id, route))]
            if busy(now) > 0.2 and self.rng.random() < self.PATROL_RATE:
                return [Emission("event", self._event_patrol_started(now))]
            return []
        out = [Emission("event", self._event_patrol_record(now))]
        if out[0].payload["result"] == "problem":
            out.append(Emission("event", self._event_problem_photo(now)))
        if patrol["next"] >= len(patrol["route"]):
            out.append(Emission("event", self._event_patrol_finished(now)))
        return out

    def _start(self, patrol_id: str, route: list[str]) -> dict[str, Any]:
        self.state["patrol"] = {"patrol_id": patrol_id, "route": list(route), "next": 0, "problems": 0}
        return {"type": "patrol_started", "patrol_id": patrol_id, "inspector": self.state["inspector"],
                "route": list(route)}  # fmt: skip

    def _event_patrol_started(self, now: datetime) -> dict[str, Any]:
        self.state["patrols"] += 1
        local = now.astimezone(CHINA_TZ)
        patrol_id = f"PT-{_short(self.device_id)}-{local:%Y%m%d}-{self.state['patrols']:03d}"
        return self._start(patrol_id, self._stalls(self.rng.randint(5, 15)))

    def _current(self, now: datetime) -> dict[str, Any]:
        if self.state["patrol"] is None:
            self._event_patrol_started(now)
        return self.state["patrol"]

    def _event_patrol_record(self, now: datetime) -> dict[str, Any]:
        patrol = self._current(now)
        stall = patrol["route"][min(patrol["next"], len(patrol["route"]) - 1)]
        patrol["next"] += 1
        items = {item: self.rng.random() > self.PROBLEM_RATE / 2 for item in self.CHECK_ITEMS}
        result = "ok" if all(items.values()) else "problem"
        patrol["problems"] += result == "problem"
        failed = [k for k, v in items.items() if not v]
        return {"type": "patrol_record", "patrol_id": patrol["patrol_id"], "stall_code": stall, "items": items,
                "result": result, "note": ", ".join(failed)}  # fmt: skip

    def _event_problem_photo(self, now: datetime) -> dict[str, Any]:
        patrol = self.state["patrol"]
        stall = patrol["route"][min(len(patrol["route"]) - 1, max(0, patrol["next"] - 1))] if patrol else "A01"
        category = self.rng.choice(["hygiene", "price_tag", "aisle_blocked", "fire_exit", "goods_beyond_line"])
        photo = hashlib.sha256(f"{self.device_id}:{rfc3339(now)}:{self.rng.random()}".encode()).hexdigest()
        return {"type": "problem_photo", "patrol_id": patrol["patrol_id"] if patrol else None, "stall_code": stall,
                "category": category, "description": f"{stall} {category}", "photo_sha256": photo}  # fmt: skip

    def _event_patrol_finished(self, now: datetime) -> dict[str, Any]:
        patrol = self._current(now)
        self.state["patrol"] = None
        checked = min(patrol["next"], len(patrol["route"]))
        return {"type": "patrol_finished", "patrol_id": patrol["patrol_id"], "stalls_checked": checked,
                "problems": patrol["problems"]}  # fmt: skip

    def state_payload(self, now: datetime) -> dict[str, Any]:
        return {**self.health(now), "os": "Android 12", "storage_free_gb": round(self.rng.uniform(4, 40), 1)}

    def _cmd_assign_patrol(self, command: dict[str, Any], now: datetime) -> list[Emission]:
        self.state["assigned"].append((command["patrol_id"], list(command["route"])))
        if self.state["patrol"] is None:  # idle: set off at once
            patrol_id, route = self.state["assigned"].pop(0)
            return [Emission("event", self._start(patrol_id, route))]
        return []


class BroadcastGenerator(Generator):
    """The market's public-address system: background music and notices on a timetable (定时播放), announcements
    on command; an emergency announcement cuts whatever is playing."""

    kind = DeviceKind("broadcast")
    EVENT_TYPES = ("playback_started", "playback_finished", "fault")
    FAULT_CODES = ("amplifier_fault", "zone_line_open")
    SOURCES = ("mp3", "radio", "microphone", "line_in", "tts")

    def __init__(self, device_id: str, market: str | None = None, seed: int | str = 0) -> None:
        super().__init__(device_id, market, seed)
        self.state.update(
            zones=[f"Z{n}" for n in range(1, self.rng.randint(3, 8) + 1)],
            volume_pct=float(self.rng.choice([40, 50, 60])),
            playing=None,  # {"programme", "source", "zones", "left"} — "left": ticks until it ends
            schedule=[
                {"at": "06:00", "programme": "opening-notice", "source": "tts"},
                {"at": "12:00", "programme": "food-safety-notice", "source": "mp3"},
                {"at": "20:00", "programme": "closing-notice", "source": "tts"},
            ],
            last_slot=None,
            announcements=[],
        )

    def telemetry(self, now: datetime) -> dict[str, Any]:
        playing = self.state["playing"]
        return {"playing": playing is not None, "source": playing["source"] if playing else None,
                "volume_pct": self.state["volume_pct"], "programme": playing["programme"] if playing else None,
                "zones_active": list(playing["zones"]) if playing else []}  # fmt: skip

    def events(self, now: datetime) -> list[Emission]:
        out: list[Emission] = []
        playing = self.state["playing"]
        if playing is not None:
            playing["left"] -= 1
            if playing["left"] <= 0:
                out.append(Emission("event", self._finish(interrupted=False)))
        slot = now.astimezone(CHINA_TZ).strftime("%H:%M")
        if slot != self.state["last_slot"]:
            self.state["last_slot"] = slot
            for entry in self.state["schedule"]:
                if entry["at"] == slot and self.state["playing"] is None:
                    out.append(Emission("event", self._play(entry["programme"], entry.get("source", "mp3"),
                                                            [], scheduled=True)))  # fmt: skip
        return out

    def _play(self, programme: str, source: str, zones: list[str], *, scheduled: bool = False,
              ticks: int = 3) -> dict[str, Any]:  # fmt: skip
        zones = list(zones) or list(self.state["zones"])
        self.state["playing"] = {"programme": programme, "source": source, "zones": zones, "left": ticks}
        return {"type": "playback_started", "programme": programme, "source": source, "zones": zones,
                "scheduled": scheduled}  # fmt: skip

    def _finish(self, interrupted: bool) -> dict[str, Any]:
        playing = self.state["playing"] or {"programme": "idle"}
        self.state["playing"] = None
        return {"type": "playback_finished", "programme": playing["programme"], "interrupted": interrupted}

    def _event_playback_started(self, now: datetime) -> dict[str, Any]:
        return self._play("background-music", "mp3", [])

    def _event_playback_finished(self, now: datetime) -> dict[str, Any]:
        return self._finish(interrupted=False)

    def state_payload(self, now: datetime) -> dict[str, Any]:
        return {**self.health(now), "sources": list(self.SOURCES), "schedule_entries": len(self.state["schedule"])}

    def _cmd_play_announcement(self, command: dict[str, Any], now: datetime) -> list[Emission]:
        out: list[Emission] = []
        if self.state["playing"] is not None:
            if command.get("priority") != "emergency":
                self.state["announcements"].append(command["programme"])  # a normal notice waits its turn
                return []
            out.append(Emission("event", self._finish(interrupted=True)))
        self.state["announcements"].append(command["programme"])
        source = "tts" if command.get("text") else "mp3"
        out.append(Emission("event", self._play(command["programme"], source, command.get("zones") or [],
                                                ticks=int(command.get("repeat", 1)))))  # fmt: skip
        return out

    def _cmd_set_schedule(self, command: dict[str, Any], now: datetime) -> list[Emission]:
        self.state["schedule"] = [dict(e) for e in command["entries"]]
        return [Emission("state", self.state_payload(now))]

    def _cmd_stop_playback(self, command: dict[str, Any], now: datetime) -> list[Emission]:
        return [Emission("event", self._finish(interrupted=True))] if self.state["playing"] else []


# ---------------------------------------------------------------- any other kind: data from its schema


class SchemaGenerator(Generator):
    """For a kind added to `fleet.kinds` before it has a generator of its own: state (health) always, and
    telemetry built from the kind's JSON Schema when the schema is simple enough to fill in (required fields,
    numbers within their bounds, enums, strings of an allowed length). Replace it with a real model of the
    device when the kind gets one."""

    def __init__(self, device_id: str, market: str | None = None, seed: int | str = 0, *, kind: str = "") -> None:
        self.kind = DeviceKind(kind)  # type: ignore[misc]
        super().__init__(device_id, market, seed)
        self._telemetry_ok = self._try_telemetry()

    def _try_telemetry(self) -> bool:
        from datetime import UTC

        try:
            validate_payload(self.kind, "telemetry", self.telemetry(datetime.now(UTC)))
        except Exception:
            return False
        return True

    def tick(self, now: datetime) -> list[Emission]:
        if self._telemetry_ok:
            return super().tick(now)
        self.ticks += 1
        return [Emission("state", self.state_payload(now))] if self.ticks % 10 == 0 else []

    def telemetry(self, now: datetime) -> dict[str, Any]:
        from fleet.kinds import spec_for

        schema = spec_for(self.kind).adapter("telemetry").json_schema()
        value = self._instance(schema, schema.get("$defs", {}))
        return value if isinstance(value, dict) else {}

    def _instance(self, schema: dict[str, Any], defs: dict[str, Any]) -> Any:
        if "$ref" in schema:
            return self._instance(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
        if "const" in schema:
            return schema["const"]
        if "enum" in schema:
            return self.rng.choice(schema["enum"])
        for key in ("anyOf", "oneOf"):
            if key in schema:
                options = [o for o in schema[key] if o.get("type") != "null"] or schema[key]
                return self._instance(options[0], defs)
        kind = schema.get("type")
        if kind == "object":
            props = schema.get("properties", {})
            return {name: self._instance(props[name], defs) for name in schema.get("required", []) if name in props}
        if kind in ("number", "integer"):
            low = schema.get("minimum", schema.get("exclusiveMinimum", 0))
            high = schema.get("maximum", schema.get("exclusiveMaximum", low + 100))
            value = self.rng.uniform(low, high)
            return int(value) if kind == "integer" else round(value, 2)
        if kind == "boolean":
            return self.rng.random() < 0.9
        if kind == "array":
            return [self._instance(schema.get("items", {}), defs) for _ in range(schema.get("minItems", 0))]
        if kind == "string":
            return "x" * max(1, schema.get("minLength", 1))
        return None


# ---------------------------------------------------------------- the catalog

GENERATORS: dict[str, type[Generator]] = {
    g.kind: g
    for g in (
        ScaleGenerator,
        EslGenerator,
        BaseStationGenerator,
        CameraGenerator,
        FlowCounterGenerator,
        FoodDetectorGenerator,
        EnvSensorGenerator,
        FirePanelGenerator,
        ColdLockerGenerator,
        ThermometerGenerator,
        DisplayGenerator,
        InspectionTabletGenerator,
        BroadcastGenerator,
    )
}


def make_generator(kind: str, device_id: str, market: str | None = None, seed: int | str = 0) -> Generator:
    """The data generator for a device of `kind` (KeyError for a kind `fleet.kinds` does not know). A kind
    without a generator of its own gets `SchemaGenerator`, so a newly added kind can be simulated at once."""
    try:
        known = DeviceKind(kind)
    except ValueError as err:
        raise KeyError(f"unknown device kind {kind!r}") from err
    cls = GENERATORS.get(known)
    if cls is None:
        return SchemaGenerator(device_id, market, seed, kind=known)
    return cls(device_id, market, seed)
