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
  confirmations); the rest of the domain is never seen by the loop, in any form, and is the
  honest measure.
- With ``--burst K`` (default 4) each feedback face arrives as K near-identical frames, as a video
  or a photo series gives them: the same degraded face moved by up to 1 px, turned by up to 2
  degrees, scaled by up to 2%, brightness within 5%, fresh sensor noise (sigma 3), JPEG 35.
  The frames of a burst carry its source (``origin``), as a caller that knows it passes it: the
  perceptual hash ties only copies of one photo, not frames.
- ``emolens.feedback.learn.finetune_from_feedback`` fine-tunes the active model on the feedback mixed with
  a replay sample of FER2013 Training, gates it on base-val and the feedback's held-out part, and
  fits one temperature on both. It runs twice from the same parent and feedback:
  once with the store's grouped hold-out, once with the earlier hold-out by crop hash (a
  subclass of the store that splits each record by its own crop), so the gate's estimate can be
  set beside the gain on never-seen faces for each.
- Printed: accuracy and ECE (15 bins) on the unseen rest of the domain and on base-val, before and
  after, and the gate's estimate with its 95% interval.

Run: ``python benchmarks/feedback_loop.py`` (options: --parent, --feedback, --burst, --epochs, --lr, --share,
--replay; needs the ``train`` extra and ../shared/datasets). Everything is written to temporary EMOLENS_HOMEs.
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


def burst(face: np.ndarray, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``k`` near-identical frames of one (already degraded) face."""
    frames = []
    for _ in range(k):
        m = cv2.getRotationMatrix2D((24, 24), rng.uniform(-2, 2), rng.uniform(0.98, 1.02))
        m[:, 2] += rng.uniform(-1, 1, 2)
        x = cv2.warpAffine(face.astype(np.float32), m, (48, 48), borderMode=cv2.BORDER_REFLECT)
        x = np.clip(x * rng.uniform(0.95, 1.05) + rng.normal(0, 3, x.shape), 0, 255).astype(np.uint8)
        ok, buf = cv2.imencode(".jpg", x, [cv2.IMWRITE_JPEG_QUALITY, 35])
        frames.append(cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE))
    return frames


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--feedback", type=int, default=150, help="domain faces given as feedback")
    ap.add_argument("--burst", type=int, default=4, help="near-identical frames of each feedback face")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--replay", type=int, default=6000)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--share", type=float, default=0.2, help="feedback share of each epoch")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--parent", default="fast", help="shipped model the loop starts from (promoted first)")
    ap.add_argument("--holdout", default="grouped,crop", help="hold-out rules to run: grouped, crop or both")
    args = ap.parse_args()
    if not DATA.is_dir():
        sys.exit(f"needs {DATA}")
    root = Path(tempfile.mkdtemp(prefix="emolens-bench-"))

    from emolens.classify.emotion import EmotionModel, scale_probabilities
    from emolens.evaluate.calibrate import expected_calibration_error as ece
    from emolens.feedback import FeedbackService, FeedbackSplit
    from emolens.feedback.learn import FinetuneOptions, finetune_from_feedback
    from emolens.feedback.split import is_holdout
    from emolens.models import clear_model_cache
    from emolens.workspace import Workspace, get_settings

    class CropHashStore(FeedbackService):
        """The earlier rule: each record held out by the hash of its own crop."""

        def split(self, labels=None) -> FeedbackSplit:
            records = self.list(limit=None)[::-1]
            held = [is_holdout(r.crop_key) for r in records]
            split = FeedbackSplit(
                train=[r for r, h in zip(records, held, strict=True) if not h],
                holdout=[r for r, h in zip(records, held, strict=True) if h],
                group={r.uid: i for i, r in enumerate(records)},
                moved=0,
            )
            return split if labels is None else split.only(labels)

    val = np.load(DATA / "val.npz")
    images, labels, classes = val["images"], val["labels"], [str(c) for c in val["classes"]]
    order = np.random.default_rng(0).permutation(len(labels))
    a, b = order[: len(order) // 2], order[len(order) // 2 :]
    np.savez(root / "base_val.npz", images=images[a], labels=labels[a], classes=np.array(classes))
    domain_x, domain_y = webcam_domain(images[b]), labels[b]
    fb, rest = np.arange(args.feedback), np.arange(args.feedback, len(b))
    rng = np.random.default_rng(1)
    frames = [(f, burst(domain_x[i], args.burst, rng)) for f, i in enumerate(fb)]

    def measure(path: str, temperature: float | None = None) -> dict[str, float]:
        m = EmotionModel(path)
        out = {}
        for name, (x, y) in {"domain": (domain_x[rest], domain_y[rest]), "base": (images[a], labels[a])}.items():
            p = m.predict(x)
            out[name] = float((p.argmax(1) == y).mean())
            out[f"{name}_ece"] = ece(p, y)
            if temperature:  # the same model without its stored temperature: softmax(log p * T)
                out[f"{name}_ece_raw"] = ece(scale_probabilities(p, "probabilities", 1 / temperature), y)
        return out

    rows = []
    for rule in args.holdout.split(","):
        home = root / rule
        os.environ["EMOLENS_HOME"] = str(home)
        get_settings.cache_clear()
        clear_model_cache()
        if args.parent != "fast":  # the loop fine-tunes the registry's active model
            Workspace.default().registry.promote(args.parent)
        parent_path = str(Workspace.default().registry.ensure_base().path)
        before = measure(parent_path)
        model = Workspace.default().models.load(parent_path)
        store = (CropHashStore if rule == "crop" else FeedbackService)()
        face_of = {}  # record uid -> the domain face it is a frame of
        for f, crops in frames:
            probs = model.predict(np.stack(crops))
            for crop, p in zip(crops, probs, strict=True):
                rec = store.add(
                    crop,
                    classes[domain_y[f]],
                    predicted=model.labels[int(p.argmax())],
                    confidence=float(p.max()),
                    source="benchmark",
                    origin=f"burst-{f}",  # the frames' source: the grouped split keeps a burst together
                )
                face_of[rec.uid] = f
        split = store.split()
        side: dict[int, set[str]] = {}
        for part in ("train", "holdout"):
            for r in getattr(split, part):
                side.setdefault(face_of[r.uid], set()).add(part)
        straddle = sum(len(v) == 2 for v in side.values())
        held = split.holdout
        twins = sum(1 for r in held if "train" in side[face_of[r.uid]])
        st = store.stats()
        t0 = time.time()
        outcome = finetune_from_feedback(
            store,
            Workspace.default().registry,
            min_feedback=get_settings().min_feedback,
            replay=DATA / "train.npz",
            base_val=root / "base_val.npz",
            options=FinetuneOptions(
                epochs=args.epochs, lr=args.lr, replay_size=args.replay, feedback_share=args.share, threads=args.threads
            ),
            promote=False,
            progress=False,
        )
        seconds = time.time() - t0
        after = measure(
            str(Workspace.default().registry.get(outcome.candidate).path), outcome.calibration["temperature"]
        )
        rows.append((rule, st, split.to_dict(), straddle, twins, len(held), before, after, outcome, seconds))

    print(f"# Learning from corrections: simulated loop with bursts ({platform.machine()}, {args.threads} threads)\n")
    st = rows[0][1]
    print(
        f"Feedback: {args.feedback} domain faces x {args.burst} frames = {st['total']} records "
        f"({st['corrections']} corrections, {st['confirmations']} confirmations). Unseen rest of the domain: "
        f"{len(rest)} faces. Base validation: {len(a)} faces. Parent: {args.parent}. Recipe: {args.epochs} epochs, "
        f"lr {args.lr}, replay {args.replay}, feedback share {args.share}.\n"
    )
    print(
        "| hold-out | held-out records (groups) | held-out faces with a twin in training | bursts split across parts "
        "| gate's estimate (95% CI) | gain on never-seen faces | base change | gates | time |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for rule, _, sp, straddle, twins, n_held, before, after, o, sec in rows:
        g = o.gates["feedback_improves"]
        verdict = ", ".join(f"{k} {'passed' if v['passed'] else 'failed'}" for k, v in o.gates.items())
        print(
            f"| {'grouped' if rule == 'grouped' else 'by crop hash'} | {n_held} ({sp['holdout_groups']}) | {twins} "
            f"| {straddle} of {args.feedback} | {g['change']:+.2%} ({g['low']:+.2%} to {g['high']:+.2%}) "
            f"| {after['domain'] - before['domain']:+.2%} ({before['domain']:.2%} → {after['domain']:.2%}) "
            f"| {after['base'] - before['base']:+.2%} | {verdict} | {sec:.0f} s |"
        )
    print()
    print(
        "| hold-out | temperature | ECE never-seen faces: parent → candidate → calibrated | ECE base: parent → "
        "candidate → calibrated | gate's ECE on held-out feedback: candidate → calibrated (cross-fitted) |"
    )
    print("|---|---|---|---|---|")
    for rule, *_, before, after, o, _sec in rows:
        c = o.calibration
        print(
            f"| {rule} | {c['temperature']:.2f} | {before['domain_ece']:.3f} → {after['domain_ece_raw']:.3f} → "
            f"{after['domain_ece']:.3f} | {before['base_ece']:.3f} → {after['base_ece_raw']:.3f} → "
            f"{after['base_ece']:.3f} | {c['ece_before']:.3f} → {c['ece_after']:.3f} |"
        )


if __name__ == "__main__":
    main()
