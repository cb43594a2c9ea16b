"""Training: a market's own model (`marketfleet vision train`) and the tiny seeded test model.

Both wrap ultralytics' trainer on a dataset in the YOLO layout (docs/vision.md):

    dataset/
      data.yaml              # path: ., train: images/train, val: images/val, names: {0: white_coat, …}
      images/train/*.jpg     labels/train/*.txt    # one line per object: class cx cy w h (0..1)
      images/val/*.jpg       labels/val/*.txt

The tiny test model is trained from synthetic scenes (vision/scenes.py) on a very narrow YOLOv8 (a custom
width multiplier, 160 px input): it exists so that tests and benchmarks run the real loading, inference and
tracking code where no pretrained weights can be downloaded. It detects our drawn figures, nothing else.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vision.scenes import CLASS_NAMES, random_still

# A YOLOv8 with an eighth of the nano's width: ~40 k parameters, trains on two CPU cores in about a minute.
TINY_MODEL_YAML = """\
nc: 2
scales:
  t: [0.33, 0.125, 256]
backbone:
  - [-1, 1, Conv, [64, 3, 2]]
  - [-1, 1, Conv, [128, 3, 2]]
  - [-1, 1, C2f, [128, True]]
  - [-1, 1, Conv, [256, 3, 2]]
  - [-1, 1, C2f, [256, True]]
  - [-1, 1, Conv, [512, 3, 2]]
  - [-1, 1, C2f, [512, True]]
  - [-1, 1, Conv, [1024, 3, 2]]
  - [-1, 1, C2f, [1024, True]]
  - [-1, 1, SPPF, [1024, 5]]
head:
  - [-1, 1, nn.Upsample, [None, 2, "nearest"]]
  - [[-1, 6], 1, Concat, [1]]
  - [-1, 1, C2f, [512]]
  - [-1, 1, nn.Upsample, [None, 2, "nearest"]]
  - [[-1, 4], 1, Concat, [1]]
  - [-1, 1, C2f, [256]]
  - [-1, 1, Conv, [256, 3, 2]]
  - [[-1, 12], 1, Concat, [1]]
  - [-1, 1, C2f, [512]]
  - [-1, 1, Conv, [512, 3, 2]]
  - [[-1, 9], 1, Concat, [1]]
  - [-1, 1, C2f, [1024]]
  - [[15, 18, 21], 1, Detect, [nc]]
"""


class TrainingError(RuntimeError):
    """Training could not start or finish (bad dataset layout, ultralytics missing); the message says why."""


@dataclass(frozen=True)
class TinyRecipe:
    """Everything that decides the tiny model's weights; its hash names the cache entry."""

    seed: int = 20261123
    images_train: int = 320
    images_val: int = 32
    image_size: int = 160
    epochs: int = 14
    batch: int = 16
    version: int = 1  # bump when scenes.py drawing changes

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


def quiet_ultralytics(config_dir: Path | None = None) -> None:
    """No update checks, no hub, settings kept out of the user's home when a directory is given."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_VERBOSE", "False")
    if config_dir is not None:
        config_dir.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("YOLO_CONFIG_DIR", str(config_dir))


def write_synthetic_dataset(root: Path, recipe: TinyRecipe) -> Path:
    """Write the tiny model's dataset (YOLO layout) under `root`; returns the data.yaml path."""
    rng = np.random.default_rng(recipe.seed)
    import cv2

    size = recipe.image_size
    for split, count in (("train", recipe.images_train), ("val", recipe.images_val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for n in range(count):
            # Frames of 4:3 scenes like the simulator's, drawn at training size.
            frame, boxes = random_still(rng, size, size * 3 // 4)
            cv2.imwrite(str(root / "images" / split / f"{n:05d}.jpg"), frame[..., ::-1])
            lines = []
            h, w = frame.shape[:2]
            for box in boxes:
                cx, cy = (box.x1 + box.x2) / 2 / w, (box.y1 + box.y2) / 2 / h
                lines.append(f"{CLASS_NAMES.index(box.cls)} {cx:.5f} {cy:.5f} {(box.x2 - box.x1) / w:.5f} "
                             f"{(box.y2 - box.y1) / h:.5f}")
            (root / "labels" / split / f"{n:05d}.txt").write_text("\n".join(lines))
    data = root / "data.yaml"
    names = "\n".join(f"  {i}: {name}" for i, name in enumerate(CLASS_NAMES))
    data.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n{names}\n")
    return data


def train_tiny_model(out_dir: Path, recipe: TinyRecipe | None = None,
                     log: Callable[[str], object] = print) -> Path:
    """Train the tiny test model into `out_dir/tiny-<key>.pt` (reused when present); returns its path."""
    recipe = recipe or TinyRecipe()
    target = out_dir / f"tiny-{recipe.key()}.pt"
    if target.exists():
        return target
    out_dir.mkdir(parents=True, exist_ok=True)
    work = out_dir / f"work-{recipe.key()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    quiet_ultralytics(out_dir / "ultralytics-config")
    data = write_synthetic_dataset(work / "dataset", recipe)
    model_yaml = work / "tiny-yolov8t.yaml"
    model_yaml.write_text(TINY_MODEL_YAML)
    log(f"training the tiny model ({recipe.images_train} images, {recipe.epochs} epochs) into {target}")
    best = _train(model_yaml, data, work / "runs", epochs=recipe.epochs, imgsz=recipe.image_size,
                  batch=recipe.batch, seed=recipe.seed, extra={"warmup_epochs": 1, "mosaic": 0.0, "lr0": 0.02,
                                                                "close_mosaic": 0, "translate": 0.0, "scale": 0.3,
                                                                "hsv_h": 0.0, "fliplr": 0.5})
    tmp = target.with_suffix(".tmp")
    shutil.copyfile(best, tmp)
    tmp.replace(target)  # atomic: a concurrent test run sees no half-written file
    shutil.rmtree(work, ignore_errors=True)
    return target


def _train(model: Path | str, data: Path, project: Path, *, epochs: int, imgsz: int, batch: int, seed: int,
           extra: dict[str, Any] | None = None) -> Path:
    try:
        from ultralytics import YOLO
    except ModuleNotFoundError as err:
        raise TrainingError("training needs the vision extra: pip install 'marketfleet[vision]'") from err
    yolo = YOLO(str(model))
    yolo.train(
        data=str(data), epochs=epochs, imgsz=imgsz, batch=batch, seed=seed, deterministic=True, device="cpu",
        workers=0, plots=False, project=str(project), name="train", exist_ok=True, verbose=False, amp=False,
        val=True, **(extra or {}),
    )
    best = project / "train" / "weights" / "best.pt"
    if not best.exists():
        best = project / "train" / "weights" / "last.pt"
    if not best.exists():
        raise TrainingError(f"training finished without weights in {project / 'train' / 'weights'}")
    return best


def train_market_model(dataset: Path, out: Path, *, base: str = "yolov8n.yaml", epochs: int = 50,
                       imgsz: int = 640, batch: int = 16, export: str | None = None) -> Path:
    """`marketfleet vision train`: train on a dataset in the YOLO layout; optionally export (onnx, openvino)."""
    data = dataset / "data.yaml"
    if not data.exists():
        raise TrainingError(f"{data} not found: the dataset needs a data.yaml (docs/vision.md, 'Training')")
    for split in ("train", "val"):
        if not (dataset / "images" / split).is_dir():
            raise TrainingError(f"{dataset / 'images' / split} not found: expected images/train and images/val")
    quiet_ultralytics()
    best = _train(base, data, out / "runs", epochs=epochs, imgsz=imgsz, batch=batch, seed=0)
    final = out / "model.pt"
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(best, final)
    if export:
        return export_model(final, export, imgsz)
    return final


def export_model(weights: Path, fmt: str, imgsz: int) -> Path:
    """Export to ONNX or OpenVINO for faster CPU inference; returns the exported file or folder."""
    if fmt not in ("onnx", "openvino"):
        raise TrainingError(f"export format {fmt!r} not supported; use onnx or openvino")
    quiet_ultralytics()
    from ultralytics import YOLO

    try:
        # dynamic input (ONNX): frames are letterboxed as for PyTorch, not padded to a square (see detector.py)
        return Path(YOLO(str(weights)).export(format=fmt, imgsz=imgsz, dynamic=fmt == "onnx", simplify=False))
    except ModuleNotFoundError as err:
        raise TrainingError(f"export to {fmt} needs the package {err.name!r}: pip install {err.name}") from err
