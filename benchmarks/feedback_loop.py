"""The learning-from-corrections loop, simulated honestly on real faces.

Method
- Data: FER2013 PublicTest (``../shared/datasets/fer2013/val.npz``), which the shipped ``fast``
  model was selected on but never trained on, split in two halves by a seeded permutation:
  - half A is the fixed **base validation set** of the promotion gate;
  - half B becomes a **new domain** the model does poorly on: the same real faces as a dim,
    noisy, low-resolution webcam sees them (brightness x0.45 with gamma 1.4, downsampled to
    20 px and back, Gaussian sensor noise sigma 6, JPEG quality 35).
- Half B is split again: ``--feedback`` faces are given to the store as user feedback (each with
  its true label and the model's prediction, so wrong ones are corrections and right ones
  confirmations); the rest of the domain is never seen by the loop and is the honest measure.
- ``emolens.learn.finetune_from_feedback`` fine-tunes the active model on the feedback mixed with
  a replay sample of FER2013 Training, gates it on base-val and the feedback's held-out part, and
  promotes it when the gates pass.
- Printed: accuracy on the unseen rest of the domain and on base-val, before and after.

Run: ``python benchmarks/feedback_loop.py`` (options: --parent, --feedback, --epochs, --lr, --share, --replay;
needs the ``train`` extra and ../shared/datasets). Everything is written to a temporary EMOLENS_HOME.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "fer2013"


def webcam_domain(faces: np.ndarray, seed: int = 0) -> np.ndarray:
    """Real faces as a dim, noisy, low-resolution camera sees them."""
    rng = np.random.default_rng(seed)
    out = []
    for f in faces:
        x = ((f.astype(np.float32) / 255) ** 1.4) * 0.45 * 255
        x = cv2.resize(cv2.resize(x, (20, 20), interpolation=cv2.INTER_AREA), (48, 48), interpolation=cv2.INTER_LINEAR)
        x = np.clip(x + rng.normal(0, 6, x.shape), 0, 255).astype(np.uint8)
        ok, buf = cv2.imencode(".jpg", x, [cv2.IMWRITE_JPEG_QUALITY, 35])
        out.append(cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE))
    return np.stack(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--feedback", type=int, default=600, help="domain faces given as feedback")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--replay", type=int, default=6000)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--share", type=float, default=0.2, help="feedback share of each epoch")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--parent", default="fast", help="shipped model the loop starts from (promoted first)")
    args = ap.parse_args()
    if not DATA.is_dir():
        sys.exit(f"needs {DATA}")
    home = Path(tempfile.mkdtemp(prefix="emolens-bench-"))
    os.environ["EMOLENS_HOME"] = str(home)

    from emolens.evaluate import evaluate_arrays
    from emolens.learn import FinetuneOptions, finetune_from_feedback
    from emolens.models import load_emotion_model
    from emolens.registry import Registry
    from emolens.store.feedback import FeedbackStore

    val = np.load(DATA / "val.npz")
    images, labels, classes = val["images"], val["labels"], [str(c) for c in val["classes"]]
    order = np.random.default_rng(0).permutation(len(labels))
    a, b = order[: len(order) // 2], order[len(order) // 2 :]
    np.savez(home / "base_val.npz", images=images[a], labels=labels[a], classes=np.array(classes))
    domain_x, domain_y = webcam_domain(images[b]), labels[b]
    fb, rest = np.arange(args.feedback), np.arange(args.feedback, len(b))

    def measure(model: str) -> tuple[float, float]:
        dom = evaluate_arrays(model, domain_x[rest], domain_y[rest], classes)["accuracy"]
        base = evaluate_arrays(model, images[a], labels[a], classes)["accuracy"]
        return dom, base

    if args.parent != "fast":  # the loop fine-tunes the registry's active model
        Registry().promote(args.parent)
    before = measure(args.parent)
    model = load_emotion_model(args.parent)
    probs = model.predict(domain_x[fb])
    store = FeedbackStore()
    for i, p in zip(fb, probs, strict=True):
        store.add(
            domain_x[i],
            classes[domain_y[i]],
            predicted=model.labels[int(p.argmax())],
            confidence=float(p.max()),
            source="benchmark",
        )
    st = store.stats()
    t0 = time.time()
    outcome = finetune_from_feedback(
        replay=DATA / "train.npz",
        base_val=home / "base_val.npz",
        options=FinetuneOptions(
            epochs=args.epochs, lr=args.lr, replay_size=args.replay, feedback_share=args.share, threads=args.threads
        ),
        promote=True,
        progress=False,
    )
    seconds = time.time() - t0
    after = measure(str(Registry().get(outcome.candidate).path))

    print(f"# Learning from corrections: simulated loop ({platform.machine()}, {args.threads} threads)\n")
    print(
        f"Feedback: {st['total']} domain faces ({st['corrections']} corrections, {st['confirmations']} "
        f"confirmations; {st['holdout']} held out for the gate). Unseen rest of the domain: {len(rest)} faces. "
        f"Base validation: {len(a)} faces.\n"
    )
    print(f"| set | before ({args.parent}) | after ({outcome.candidate}) | change |")
    print("|---|---|---|---|")
    print(f"| unseen rest of the webcam domain | {before[0]:.2%} | {after[0]:.2%} | {after[0] - before[0]:+.2%} |")
    print(f"| base validation (PublicTest half A) | {before[1]:.2%} | {after[1]:.2%} | {after[1] - before[1]:+.2%} |")
    print()
    for name, g in outcome.gates.items():
        print(f"- gate {name}: {'passed' if g['passed'] else 'failed'} ({g['change']:+.2%})")
    print(
        f"- promoted: {outcome.promoted}; fine-tuning took {seconds:.0f} s ({args.epochs} epochs, lr {args.lr}, "
        f"feedback share {args.share}, "
        f"{outcome.counts['replay']} replayed faces, feedback x{outcome.counts['feedback_repeats']})"
    )


if __name__ == "__main__":
    main()
