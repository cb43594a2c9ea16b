"""A real platform (SQLite registry, embedded MQTT broker, rules engine) served over uvicorn, seeded with two
markets, two vendors and a person of every role, and a headless Chromium (Debian's, /usr/bin/chromium) driven by
Playwright. Screenshots go to docs/screenshots/ (linked from the README and docs/dashboard.md).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from accounts.models import Role
from accounts.service import UserCreate
from fleet.models import Vendor
from fleet.schemas import DeviceCreate, MarketCreate, VendorCreate
from marketfleet.platform import Platform
from tests.factories import serve_api, start_test_platform

CHROMIUM = os.environ.get("MF_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
PASSWORD = "dashboard-pass-123"
T = TypeVar("T")


def require_chromium() -> None:
    if shutil.which(CHROMIUM) or Path(CHROMIUM).exists():
        return
    message = f"Chromium not found at {CHROMIUM}; run scripts/install-services.sh (apt-get install chromium)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)  # only outside CI



@dataclass
class Site:
    """The running dashboard: its URL, the platform behind it, and what was seeded."""

    url: str
    platform: Platform
    secrets: dict[str, str] = field(default_factory=dict)  # device id → secret
    devices: dict[str, list[str]] = field(default_factory=dict)  # vendor code → device ids

    @property
    def rules(self) -> Any:
        return self.platform.services["rules"]

    @property
    def mqtt_port(self) -> int:
        return int(self.platform.settings.broker.port)


async def seed(platform: Platform, site: Site) -> None:
    registry = platform.registry
    await registry.create_market(MarketCreate(code="FT01", name="福田智慧农贸市场", timezone="Asia/Shanghai"))
    await registry.create_market(MarketCreate(code="NS02", name="南山农贸市场", timezone="Asia/Shanghai"))
    await registry.create_vendor(VendorCreate(code="acme", name="Acme Scales"))
    await registry.create_vendor(VendorCreate(code="coldco", name="ColdCo Lockers"))
    plan = {
        "acme": [("scale", "FT01", 6), ("env_sensor", "FT01", 3), ("scale", "NS02", 4)],
        "coldco": [("cold_locker", "FT01", 2), ("flow_counter", "FT01", 1)],
    }
    for code, groups in plan.items():
        vendor = await Vendor.get(code=code)
        rows = [
            DeviceCreate(serial=f"{kind[:3].upper()}{market}{n:03d}", kind=kind, market=market)  # type: ignore[arg-type]
            for kind, market, count in groups for n in range(count)
        ]
        result = await registry.register_devices(vendor, rows)
        site.devices[code] = [r.device_id for r in result.rows if r.device_id]
        site.secrets.update({r.device_id: r.secret for r in result.rows if r.device_id and r.secret})
    accounts = platform.app.state.ctx.accounts
    people = [
        UserCreate(username="mia", password=PASSWORD, role=Role.MAINTAINER, language="zh"),
        UserCreate(username="manny", password=PASSWORD, role=Role.MANAGER, markets=["FT01"], language="zh"),
        UserCreate(username="vera", password=PASSWORD, role=Role.VENDOR, vendor="coldco", language="en"),
        UserCreate(username="ada", password=PASSWORD, role=Role.ADMIN, language="en"),
    ]
    for person in people:
        await accounts.create_user(person)


@pytest.fixture(scope="module")
async def site(registry_url_factory, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Site]:
    data_dir = tmp_path_factory.mktemp("dashboard")
    # The platform runs the rules engine on its bus; short intervals so alerts show within a moment.
    fast_rules = {"scheduler": False, "alert_flush_s": 0.05, "state_flush_s": 0.2, "device_refresh_s": 1.0}
    async with start_test_platform(data_dir, registry_url_factory("sqlite"), rules=fast_rules) as platform:
        async with serve_api(platform.app) as client:
            built = Site(url=str(client.base_url).rstrip("/"), platform=platform)
            await seed(platform, built)
            await platform.services["rules"].refresh_devices()
            yield built


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    require_chromium()
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def new_page(browser: Any) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """`await new_page()` → a page in a fresh browser context (own cookies); all closed after the test."""
    contexts: list[Any] = []

    async def make(**options: Any) -> Any:
        context = await browser.new_context(viewport={"width": 1280, "height": 860}, locale="zh-CN", **options)
        context.set_default_timeout(15_000)
        contexts.append(context)
        return await context.new_page()

    try:
        yield make
    finally:
        for context in contexts:
            await context.close()


async def sign_in(page: Any, site: Site, username: str, password: str = PASSWORD, next_path: str = "") -> None:
    target = f"{site.url}/login" + (f"?next={next_path}" if next_path else "")
    await page.goto(target)
    await page.fill("input[name=username]", username)
    await page.fill("input[name=password]", password)
    await page.click("button[type=submit]")
    await page.wait_for_load_state("domcontentloaded")


async def screenshot(page: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path
