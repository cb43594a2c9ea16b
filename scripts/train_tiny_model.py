#!/usr/bin/env python3
"""Train the tiny seeded YOLO that tests and `marketfleet bench vision` use (no weights can be downloaded).

    .venv/bin/python scripts/train_tiny_model.py [--out var/vision-models]

Prints the path of the weights. A second run with the same recipe reuses the cached file.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vision.training import TinyRecipe, train_tiny_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("var/vision-models"))
    parser.add_argument("--epochs", type=int, default=TinyRecipe.epochs)
    parser.add_argument("--images", type=int, default=TinyRecipe.images_train)
    args = parser.parse_args()
    began = time.perf_counter()
    path = train_tiny_model(args.out, TinyRecipe(epochs=args.epochs, images_train=args.images), log=print)
    print(f"{path} ({time.perf_counter() - began:.0f} s)")


if __name__ == "__main__":
    main()
