"""Does a short hyper-parameter search beat the default recipe on the same budget?

Method: three disjoint stratified subsets of FER2013 Training (../shared/datasets/fer2013/train.npz):
--train images to train on, --val to select epochs and trials on, --test to score the two final
models on (seen by neither the search nor the epoch selection); PublicTest is not used. The
default recipe (`vgg-tiny`, the TrainConfig defaults) trains for --epochs epochs. Then
`emolens.train.tune` runs an Optuna study (TPE, median pruning) over lr, weight decay, label
smoothing, dropout and batch size, every trial with the same --epochs. The study is interrupted
inside trial --interrupt-after + 1 (a KeyboardInterrupt, as Ctrl-C would) and resumed by a second
call up to --trials. The best configuration is retrained once, exactly like the default, and both
are scored on the test subset (accuracy, macro-F1). Reported: both rows, the search's trials
(complete/pruned/failed) and its wall time.

    python benchmarks/tune.py [--train 6000] [--val 2000] [--test 3000] [--epochs 4] [--trials 10]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FER = ROOT.parent / "shared" / "datasets" / "fer2013" / "train.npz"
SPACE = {
    "lr": {"low": 5e-4, "high": 1e-2, "log": True},
    "weight_decay": {"low": 1e-4, "high": 5e-2, "log": True},
    "label_smoothing": {"low": 0.0, "high": 0.2},
    "dropout": {"low": 0.0, "high": 0.5},
    "batch_size": {"choices": [64, 128, 256]},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=int, default=6000)
    ap.add_argument("--val", type=int, default=2000)
    ap.add_argument("--test", type=int, default=3000)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--interrupt-after", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import optuna
    from sklearn.model_selection import train_test_split

    from emolens.train.config import load_config
    from emolens.train.export import load_checkpoint
    from emolens.train.loop import fit, predict_proba, score, to_tensor
    from emolens.train.prepare import Crops
    from emolens.train.tune import tune

    fer = np.load(FER)
    classes = [str(c) for c in fer["classes"]]
    idx = np.arange(len(fer["labels"]))
    rest, tr = train_test_split(idx, test_size=args.train, stratify=fer["labels"], random_state=0)
    rest, va = train_test_split(rest, test_size=args.val, stratify=fer["labels"][rest], random_state=0)
    _, te = train_test_split(rest, test_size=args.test, stratify=fer["labels"][rest], random_state=0)
    train = Crops(fer["images"][tr], fer["labels"][tr], classes)
    val = Crops(fer["images"][va], fer["labels"][va], classes)
    # A short budget: the EMA must follow the weights within a few hundred updates (decay 0.999, the
    # default for long runs, would still hold mostly the random start), for every model alike.
    fixed = [f"epochs={args.epochs}", f"threads={args.threads}", "ema_decay=0.95"]

    def final(overrides: list[str], out: Path) -> dict:
        """Train like `emolens train` would (best epoch on val), score the best checkpoint on test."""
        cfg = load_config(overrides=fixed + overrides, base={"labels": classes})
        t0 = time.time()
        result = fit((train.x, train.y), (val.x, val.y), cfg, out, progress=False)
        model, _ = load_checkpoint(result["checkpoint"])
        return {**score(predict_proba(model, to_tensor(fer["images"][te])), fer["labels"][te]), "s": time.time() - t0}

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        default = final([], tmp / "default")
        t0 = time.time()
        stop = {"n": 0}
        import emolens.train.tune as tuning

        original = tuning.fit

        def interrupting_fit(*a, **kw):
            stop["n"] += 1
            if stop["n"] == args.interrupt_after + 1:
                raise KeyboardInterrupt  # as Ctrl-C in the middle of a trial
            return original(*a, **kw)

        tuning.fit = interrupting_fit
        with contextlib.suppress(KeyboardInterrupt):
            tune(train, val, SPACE, args.trials, tmp / "study", "bench", overrides=fixed, progress=False)
        tuning.fit = original
        report = tune(train, val, SPACE, args.trials, tmp / "study", "bench", overrides=fixed, progress=False)
        search_s = time.time() - t0
        best = final([f"{k}={json.dumps(v)}" for k, v in report.best_params.items()], tmp / "best")
        study = optuna.load_study(study_name="bench", storage=report.storage)
        states = [t.state.name for t in study.trials]

    load = os.getloadavg()
    print(f"## Tuning: default recipe against a {args.trials}-trial search, same budget per model\n")
    print("| configuration | test accuracy | test macro-F1 | training time |")
    print("|---|---|---|---|")
    print(
        f"| default (vgg-tiny, TrainConfig defaults) | {default['accuracy']:.4f} | {default['macro_f1']:.4f} | "
        f"{default['s']:.0f} s |"
    )
    print(
        f"| best of the search: {json.dumps(report.best_params)} | {best['accuracy']:.4f} | "
        f"{best['macro_f1']:.4f} | {best['s']:.0f} s |"
    )
    print(
        f"\nSearch: {len(states)} trials ({states.count('COMPLETE')} complete, {states.count('PRUNED')} pruned, "
        f"{states.count('FAIL')} failed: the interrupted one), interrupted after {args.interrupt_after} trials and "
        f"resumed, {search_s / 60:.1f} min in all. Data: {args.train} FER2013 Training images for training, "
        f"{args.val} others for selection, {args.test} others for the scores above; {args.epochs} epochs per "
        f"model (EMA decay 0.95 for all: a short budget); {args.threads} torch threads; "
        f"load average at the end {load[0]:.1f} (2 cores; other work shared the machine)."
    )


if __name__ == "__main__":
    main()
