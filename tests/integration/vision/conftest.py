"""Vision fixtures: the tiny seeded detector (trained once, cached under var/vision-models) and a platform."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """Weights of the tiny YOLO trained by scripts/train_tiny_model.py's recipe; the first run trains (~1 min
    on two cores), later runs reuse the cached file."""
    from vision.training import train_tiny_model

    return train_tiny_model(ROOT / "var" / "vision-models")


@pytest.fixture(scope="session")
def detector(tiny_model: Path):
    from vision.detector import YoloDetector

    detector = YoloDetector(tiny_model, image_size=160, threads=2)
    detector.detect(np.zeros((240, 320, 3), dtype=np.uint8))  # warm up: the first inference is slow
    return detector
