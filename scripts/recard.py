"""Re-measure the shipped models' cards on FER2013 PublicTest: FER+ majority labels, FER2013 labels and the
subtle expressions (FER2013 label an emotion, FER+ majority neutral), written into each model's metadata and
the *Measured on* section of its Markdown card (the rest of the card is kept).

    python scripts/recard.py [--data ../shared/datasets/fer2013] [fast accurate ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from emolens.cli.export import _card_metrics
from emolens.models.catalog import shipped_models
from emolens.train.card import remeasure_card

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", help="shipped model names (default: all)")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "datasets" / "fer2013")
    args = ap.parse_args()
    for name, path in shipped_models().items():
        if args.models and name not in args.models:
            continue
        metrics = _card_metrics(path, args.data / "val.npz", "FER2013 PublicTest (val.npz)")
        md = remeasure_card(path, metrics)
        f, sub = metrics["ferplus"], metrics["subtle"]
        figures = f"FER+ {f['accuracy']:.4f}, FER2013 {metrics['accuracy']:.4f}, subtle {sub['accuracy']:.4f}"
        print(f"{name}: {figures} → {md}")


if __name__ == "__main__":
    main()
