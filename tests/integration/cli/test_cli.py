"""The `marketfleet` command line as a user runs it: real processes, real files, one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.services import find_free_port

MARKETFLEET = [sys.executable, "-m", "marketfleet"]


def cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "MF_DATA_DIR": str(tmp_path / "var"), "COLUMNS": "200", **env}
    return subprocess.run([*MARKETFLEET, *args], cwd=tmp_path, env=environment, capture_output=True,
                          text=True, timeout=120)


def create_vendor(tmp_path: Path, code: str = "acme") -> str:
    result = cli(tmp_path, "vendor", "create", code, "--name", "Acme Scales")
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_config_show_masks_secrets_and_reads_toml_and_env(tmp_path: Path) -> None:
    config = tmp_path / "mf.toml"
    config.write_text('secret_key = "do-not-print-me"\n[broker]\nport = 2883\n[api]\nport = 9001\n')
    result = cli(tmp_path, "--config", str(config), "config", "show", MF_API__PORT="9002",
                 MF_REGISTRY__URL="postgres://mf:hunter2@db:5432/mf")
    assert result.returncode == 0, result.stderr
    assert '"port": 2883' in result.stdout and '"port": 9002' in result.stdout
    assert "do-not-print-me" not in result.stdout and "hunter2" not in result.stdout
    assert "**********" in result.stdout


def test_bad_config_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text("[broker\nport=1")
    result = cli(tmp_path, "--config", str(tmp_path / "bad.toml"), "config", "show")
    assert result.returncode == 2
    assert "not valid TOML" in result.stderr and "Traceback" not in result.stderr
    result = cli(tmp_path, "config", "show", MF_BROKER__MODE="sideways")
    assert result.returncode == 2 and "broker.mode" in result.stderr and "Traceback" not in result.stderr


def test_vendor_create_prints_key_once_and_refuses_duplicates(tmp_path: Path) -> None:
    assert "mfk_" in create_vendor(tmp_path)
    again = cli(tmp_path, "vendor", "create", "acme", "--name", "Acme again")
    assert again.returncode == 2 and "already exists" in again.stderr and "Traceback" not in again.stderr


def test_device_import_registers_and_writes_credentials(tmp_path: Path) -> None:
    create_vendor(tmp_path)
    rows = "\n".join(f"SC{n:05d},scale,,,,Scale {n},1.0.0,30,zone=aquatic" for n in range(1500))
    csv_file = tmp_path / "devices.csv"
    csv_file.write_text("serial,kind,model,market,stall,name,firmware_version,keepalive_s,labels\n" + rows + "\n")
    result = cli(tmp_path, "device", "import", str(csv_file), "--vendor", "acme", "--out", "creds.csv")
    assert result.returncode == 0, result.stderr
    assert "1500 created" in result.stdout
    credentials = (tmp_path / "creds.csv").read_text().splitlines()
    assert credentials[0] == "serial,device_id,secret" and len(credentials) == 1501
    assert oct((tmp_path / "creds.csv").stat().st_mode & 0o777) == "0o600"
    again = cli(tmp_path, "device", "import", str(csv_file), "--vendor", "acme", "--out", "creds2.csv")
    assert "0 created, 1500 already registered" in again.stdout
    assert not (tmp_path / "creds2.csv").exists()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"serial,kind\nA1,scale\nA2,toaster\n", "line 3, field kind"),
        (b"serial,kind\nA1,scale\nA1,scale\n", "line 3, field serial"),
        (b"serial,kind\nA1,scale,extra\n", "line 2: more fields than the header"),
        (b"serial,colour\nA1,red\n", "header lacks column(s) kind"),
        (b"serial,kind\nA\xff1,scale\n", "line 2: not UTF-8"),
        (b'serial,kind\n"A1,scale\n', "malformed CSV"),
        (b"serial,kind,keepalive_s\nA1,scale,often\n", "line 2, field keepalive_s"),
    ],
)
def test_device_import_refuses_bad_files_naming_line_and_writes_nothing(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    create_vendor(tmp_path)
    (tmp_path / "in.csv").write_bytes(content)
    result = cli(tmp_path, "device", "import", "in.csv", "--vendor", "acme")
    assert result.returncode == 2, result.stdout
    assert expected in result.stderr and "Traceback" not in result.stderr
    listing = cli(tmp_path, "device", "import", "in.csv", "--vendor", "nobody")
    assert listing.returncode == 2


def test_device_import_for_unknown_vendor_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text("serial,kind\nA1,scale\n")
    result = cli(tmp_path, "device", "import", "in.csv", "--vendor", "ghost")
    assert result.returncode == 2 and "no vendor with code 'ghost'" in result.stderr


def test_db_upgrade_keeps_data(tmp_path: Path) -> None:
    create_vendor(tmp_path)
    result = cli(tmp_path, "db", "upgrade")
    assert result.returncode == 0 and "up to date" in result.stdout
    assert cli(tmp_path, "vendor", "create", "acme", "--name", "x").returncode == 2  # the vendor is still there


def test_db_reindex_rebuilds_the_search_index_of_a_sqlite_registry(tmp_path: Path) -> None:
    create_vendor(tmp_path)
    result = cli(tmp_path, "db", "reindex")
    assert result.returncode == 0 and "search index rebuilt" in result.stdout, result.stderr


def test_unreachable_registry_is_one_line(tmp_path: Path) -> None:
    port = find_free_port()
    result = cli(tmp_path, "db", "upgrade", MF_REGISTRY__URL=f"postgres://mf@127.0.0.1:{port}/mf")
    assert result.returncode == 2
    assert "registry database" in result.stderr and "Traceback" not in result.stderr


def test_serve_demo_answers_on_dashboard_docs_and_health(tmp_path: Path) -> None:
    port = find_free_port()
    env = {**os.environ, "MF_DATA_DIR": str(tmp_path / "var"), "MF_API__PORT": str(port)}
    for name in ("BROKER", "COAP"):
        env[f"MF_{name}__PORT"] = str(find_free_port())
    proc = subprocess.Popen([*MARKETFLEET, "serve", "--demo"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "serve did not answer within 60 s"
            time.sleep(0.3)
        assert httpx.get(f"{base}/docs").status_code == 200
        assert httpx.get(f"{base}/", follow_redirects=True).status_code == 200
        token = (tmp_path / "var" / "admin.token").read_text().strip()
        with httpx.Client(base_url=base) as client:
            client.post("/login", data={"username": "admin", "password": token})
            page = client.get("/", params={"kind": "cold_locker"})
        assert page.status_code == 200 and page.text.count("data-device=") == 2
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_user_create_then_refuses_weak_password_and_unknown_market(tmp_path: Path) -> None:
    ok = cli(tmp_path, "user", "create", "li.na", "--role", "manager", "--password", "a long enough one")
    assert ok.returncode == 0 and "li.na" in ok.stdout
    weak = cli(tmp_path, "user", "create", "wang", "--role", "manager", "--password", "short")
    assert weak.returncode == 2 and "password" in weak.stderr
    nowhere = cli(tmp_path, "user", "create", "zhao", "--role", "manager", "--market", "NOWHERE",
                  "--password", "a long enough one")
    assert nowhere.returncode == 2 and "unknown market" in nowhere.stderr


def test_compliance_report_as_printable_html_and_csv(tmp_path: Path) -> None:
    import asyncio

    from fleet.registry import Registry
    from fleet.schemas import MarketCreate
    from marketfleet import db

    async def seed() -> None:
        (tmp_path / "var").mkdir()
        await db.connect(f"sqlite://{tmp_path / 'var' / 'registry.sqlite3'}")
        try:
            await Registry(master_key=b"k" * 32).create_market(MarketCreate(code="SZ-FT-009", name="Test"))
        finally:
            await db.close()

    asyncio.run(seed())
    html = cli(tmp_path, "compliance", "report", "--market", "SZ-FT-009", "--lang", "en", "--standard", "sz")
    assert html.returncode == 0, html.stderr
    page = (tmp_path / "scorecard-SZ-FT-009.html").read_text()
    assert "What would raise the score most" in page and "Traceable scales" in page and "ZZ" not in page.split(
        "<h2>")[-1]
    csv_run = cli(tmp_path, "compliance", "report", "--market", "SZ-FT-009", "--format", "csv", "--out", "s.csv")
    assert csv_run.returncode == 0 and (tmp_path / "s.csv").read_text(encoding="utf-8-sig").startswith("section,")
    unknown = cli(tmp_path, "compliance", "report", "--market", "NOPE")
    assert unknown.returncode == 2 and "NOPE" in unknown.stderr and "Traceback" not in unknown.stderr
