"""`marketfleet vision …` as an operator runs it: real processes, one-line errors, exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vision.scenes import entrance_scene
from vision.simulator import CameraSimulator

pytestmark = pytest.mark.timeout(120)


def cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "MF_DATA_DIR": str(tmp_path / "var"), "COLUMNS": "200", **env}
    return subprocess.run([sys.executable, "-m", "marketfleet", "vision", *args], cwd=tmp_path, env=environment,
                          capture_output=True, text=True, timeout=100)


def test_run_without_detector_weights_says_which_setting_to_set(tmp_path: Path) -> None:
    result = cli(tmp_path, "run", MF_VISION__MODEL_PATH=str(tmp_path / "missing.pt"))
    assert result.returncode == 2
    assert "missing.pt not found" in result.stderr and "MF_VISION__MODEL_PATH" in result.stderr
    assert "Traceback" not in result.stderr


def test_train_with_a_dataset_missing_its_data_yaml_is_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "ds" / "images").mkdir(parents=True)
    result = cli(tmp_path, "train", str(tmp_path / "ds"))
    assert result.returncode == 2
    assert "data.yaml not found" in result.stderr and "Traceback" not in result.stderr


async def test_discover_prints_the_camera_that_answers_the_probe(tmp_path: Path) -> None:
    import asyncio

    async with CameraSimulator(entrance_scene(), serial="CLI01") as camera:
        result = await asyncio.to_thread(cli, tmp_path, "discover", "--timeout", "1",
                                         "--target", f"127.0.0.1:{camera.discovery_port}")
    assert result.returncode == 0, result.stderr
    assert camera.device_url in result.stdout and "sim-CLI01" in result.stdout
