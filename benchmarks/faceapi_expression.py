"""face-api's expression network (npm `@vladmandic/face-api` 1.7.15), ported to PyTorch and measured.

The package carries `model/face_expression_model-weights_manifest.json` + `.bin`: TF.js weights,
uint8-quantised (value = q * scale + min), of `FaceExpressionNet` = `FaceFeatureExtractor` (four
dense blocks of depthwise-separable convolutions, 112x112 RGB in, 256 features) + one fully
connected layer, softmax over neutral, happy, sad, angry, fearful, disgusted, surprised (the
package's `FACE_EXPRESSION_LABELS`). The port follows the package's TypeScript source:
- input: RGB 0-255 minus mean (122.782, 117.001, 104.298), divided by 255 (`normalize`, `/255`);
- dense block: out1 = relu(conv0 stride 2), out_k = sepconv(relu(out1 + ... + out_{k-1})), k = 2..4,
  result relu(out1 + out2 + out3 + out4); block 0's conv0 is a plain 3x3 conv, the others separable;
  TF's 'same' padding, which for a stride-2 3x3 on an even size pads 0 before and 1 after (PyTorch's
  symmetric padding=1 would shift every feature map by a pixel);
- 7x7 average pool of the 7x7x256 map (valid, so a global mean), then fc and softmax.

Evaluation (one pass each, no TTA): FER2013 PublicTest (`val.npz`) with its 7 labels and with FER+
majority labels (`emolens.data.ferplus.load_ferplus`; the 13 contempt faces are not scored, as for
every 7-class model). 48x48 grey crops go through `emolens.data.datasets.fit_crops(…, 112, 3)`, the
resize (OpenCV INTER_AREA) and grey→RGB every EmoLens model's evaluation uses. Ensembles average the
probabilities with the shipped `accurate` and `robust` models (`emolens.evaluate.core.member_probs`,
equal weights; no weight is tuned on PublicTest). A 2,000-face sample of Training (seed 0) checks
whether face-api saw FER2013 Training: accuracy far above PublicTest's would say it did.

The weights are read from an unpacked npm tarball outside the repository; nothing is copied in:

    mkdir -p /tmp/faceapi && cd /tmp/faceapi && npm pack @vladmandic/face-api@1.7.15 && tar xzf *.tgz
    python benchmarks/faceapi_expression.py [--package /tmp/faceapi/package] [--dump-check PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FER = ROOT.parent / "shared" / "datasets" / "fer2013"
FACEAPI_LABELS = ("neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised")
TO_EMOLENS = {
    "neutral": "neutral",
    "happy": "happy",
    "sad": "sad",
    "angry": "angry",
    "fearful": "fear",
    "disgusted": "disgust",
    "surprised": "surprise",
}
FER7 = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
MEAN_RGB = (122.782, 117.001, 104.298)


def load_weights(package: Path, model: str = "face_expression_model") -> dict[str, np.ndarray]:
    """A TF.js weights manifest and its shards → {name: float32 array in TF layout}, de-quantised."""
    manifest = json.loads((package / "model" / f"{model}-weights_manifest.json").read_text())
    out: dict[str, np.ndarray] = {}
    for group in manifest:
        buf = b"".join((package / "model" / p).read_bytes() for p in group["paths"])
        pos = 0
        for w in group["weights"]:
            n = int(np.prod(w["shape"]))
            q = w.get("quantization")
            if q:
                dt = np.dtype(q["dtype"])
                raw = np.frombuffer(buf, dt, n, pos).astype(np.float32)
                # TF.js: min/scale for uint8 affine quantisation (float16 would carry neither)
                arr = raw * np.float32(q["scale"]) + np.float32(q["min"]) if "scale" in q else raw
            else:
                dt = np.dtype(w["dtype"])
                arr = np.frombuffer(buf, dt, n, pos).astype(np.float32)
            pos += n * dt.itemsize
            out[w["name"]] = arr.reshape(w["shape"])
        if pos != len(buf):
            raise ValueError(f"manifest of {model} reads {pos} bytes, the shards hold {len(buf)}")
    return out


def build(weights: dict[str, np.ndarray]):
    """The PyTorch module: NHWC float RGB 0-255 (N, 112, 112, 3) in, 7 probabilities out (face-api order)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    def t(a: np.ndarray, *perm: int) -> nn.Parameter:
        return nn.Parameter(torch.from_numpy(np.ascontiguousarray(a.transpose(perm))), requires_grad=False)

    def same_pad(x, stride: int):
        # TF 'same' for a 3x3: total padding 2 at stride 1, 1 at stride 2 on an even size, the odd pixel after
        return F.pad(x, (1, 1, 1, 1) if stride == 1 else (0, 1, 0, 1))

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.p = nn.ParameterDict()
            for name, a in weights.items():
                key = name.replace("/", "_")
                if name.endswith("/filters"):  # [kh, kw, in, out] → [out, in, kh, kw]
                    self.p[key] = t(a, 3, 2, 0, 1)
                elif name.endswith("depthwise_filter"):  # [kh, kw, in, 1] → [in, 1, kh, kw]
                    self.p[key] = t(a, 2, 3, 0, 1)
                elif name.endswith("pointwise_filter"):  # [1, 1, in, out] → [out, in, 1, 1]
                    self.p[key] = t(a, 3, 2, 0, 1)
                elif name == "fc/weights":  # [256, 7] → Linear's [7, 256]
                    self.p[key] = t(a, 1, 0)
                else:
                    self.p[key] = t(a, 0)
            self.register_buffer("mean", torch.tensor(MEAN_RGB).view(1, 3, 1, 1))

        def sep(self, x, prefix: str, stride: int):
            dw = self.p[f"{prefix}_depthwise_filter"]
            x = F.conv2d(same_pad(x, stride), dw, stride=stride, groups=dw.shape[0])
            return F.conv2d(x, self.p[f"{prefix}_pointwise_filter"], self.p[f"{prefix}_bias"])

        def block(self, x, i: int):
            if i == 0:
                c0 = F.conv2d(same_pad(x, 2), self.p["dense0_conv0_filters"], self.p["dense0_conv0_bias"], stride=2)
            else:
                c0 = self.sep(x, f"dense{i}_conv0", 2)
            outs = [F.relu(c0)]
            for k in (1, 2, 3):
                inp = outs[0] if k == 1 else F.relu(sum(outs))
                outs.append(self.sep(inp, f"dense{i}_conv{k}", 1))
            return F.relu(sum(outs))

        def forward(self, x):
            x = (x.permute(0, 3, 1, 2) - self.mean) / 255
            for i in range(4):
                x = self.block(x, i)
            x = F.avg_pool2d(x, 7, 2).flatten(1)
            return F.softmax(F.linear(x, self.p["fc_weights"], self.p["fc_bias"]), dim=1)

    return Net().eval()


def predict(net, crops: np.ndarray, batch: int = 128) -> np.ndarray:
    """(N, 112, 112, 3) uint8 RGB → (N, 7) probabilities in EmoLens's ``FER7`` order."""
    import torch

    order = [FACEAPI_LABELS.index(next(k for k, v in TO_EMOLENS.items() if v == c)) for c in FER7]
    out = []
    with torch.inference_mode():
        for i in range(0, len(crops), batch):
            out.append(net(torch.from_numpy(crops[i : i + batch]).float()).numpy())
    return np.concatenate(out)[:, order]


def photo_check(net) -> list[str]:
    """face-api's top-3 on each face of the bundled example photos: a port that reads a smile as
    anything but happy is wrong somewhere."""
    import cv2

    from emolens.detect import create_detector
    from emolens.image.align import align_face

    det = create_detector("retinaface")
    out = []
    for path in sorted((ROOT / "src" / "emolens" / "assets" / "examples").glob("*.jpg")):
        rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        for i, f in enumerate(det.detect(rgb)):
            p = predict(net, align_face(rgb, f.box, f.landmarks, 112, 3)[None])[0]
            top = np.argsort(p)[::-1][:3]
            out.append(f"`{path.name}` face {i}: " + ", ".join(f"{FER7[k]} {p[k]:.2f}" for k in top))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--package", type=Path, default=Path("/tmp/faceapi/package"), help="the unpacked npm tarball")
    ap.add_argument("--ensemble", nargs="*", default=["accurate", "robust"], help="shipped models to average with")
    ap.add_argument("--train-sample", type=int, default=2000, help="Training faces for the leakage check (0: skip)")
    ap.add_argument("--out", default="faceapi_expression", help="results file name under benchmarks/results/")
    args = ap.parse_args()

    import torch

    from emolens.data.datasets import fit_crops
    from emolens.data.ferplus import DROPPED_STATUS, load_ferplus, majority
    from emolens.evaluate.core import member_probs, summarize, target_labels
    from emolens.workspace import Workspace
    from speed import median_ms, write_result  # benchmarks/ is on the path when a script here runs

    # one thread: on a shared, loaded machine two threads spin against each other (a first run measured
    # 460 ms/face wall at load 8); CPU time per face is the figure that survives the load
    torch.set_num_threads(1)
    weights = load_weights(args.package)
    net = build(weights)
    n_params = sum(int(np.prod(a.shape)) for a in weights.values())

    with np.load(FER / "val.npz") as z:
        images, labels, classes = z["images"], z["labels"], [str(c) for c in z["classes"]]
    assert classes == FER7, classes
    ferp = load_ferplus(FER / "val.npz", FER / "val_ferplus.npz")
    # the FER+ loader keeps rows in order; find them in val.npz so every model's probabilities are computed once
    with np.load(FER / "val_ferplus.npz") as z:
        _, ok = majority(z["votes"])
        if "status" in z.files:
            ok &= ~np.isin(z["status"], DROPPED_STATUS)
    fp_rows = np.flatnonzero(ok)
    assert len(fp_rows) == len(ferp.labels) and np.array_equal(images[fp_rows], ferp.images)
    ref, fp_true, fp_keep = target_labels(FER7, ferp.labels, ferp.classes, drop_rows=True)
    assert ref == FER7

    crops = fit_crops(images, 112, 3)
    t0, c0 = time.perf_counter(), time.process_time()
    probs = {"face-api": predict(net, crops)}
    batch_ms = (time.perf_counter() - t0) * 1000 / len(crops)
    batch_cpu_ms = (time.process_time() - c0) * 1000 / len(crops)
    one = torch.from_numpy(crops[:1]).float()
    with torch.inference_mode():
        c0 = time.process_time()
        b1 = median_ms(lambda: net(one), 20, warmup=5)
        b1_cpu = (time.process_time() - c0) * 1000 / 25
    for name in args.ensemble:
        print(name, flush=True)
        m = Workspace.default().models.load(name, 2)
        probs[name] = member_probs(m, images, FER7)

    combos = [[k] for k in probs]
    names = list(probs)
    if args.ensemble:
        combos.append(list(args.ensemble))
        combos += [[*args.ensemble[:i], "face-api"] for i in range(1, len(args.ensemble) + 1)]
        combos += [[e, "face-api"] for e in args.ensemble[1:]]
    rows = []
    for combo in combos:
        p = np.mean([probs[k] for k in combo], axis=0)
        f7 = summarize(p, labels, FER7)
        fpm = summarize(p[fp_rows][fp_keep], fp_true, FER7)
        rows.append((" + ".join(f"`{k}`" for k in combo), f7, fpm))

    leak = None
    if args.train_sample:
        with np.load(FER / "train.npz") as z:
            idx = np.sort(np.random.default_rng(0).choice(len(z["labels"]), args.train_sample, replace=False))
            t_img, t_lab = z["images"][idx], z["labels"][idx]
        tp = predict(net, fit_crops(t_img, 112, 3))
        leak = float((tp.argmax(1) == t_lab).mean())

    # agreement between face-api and each shipped model: a teacher's value is where it differs and is right
    agree = {k: float((probs[k].argmax(1) == probs["face-api"].argmax(1)).mean()) for k in names if k != "face-api"}

    lines = [
        f"## face-api expression network (npm `@vladmandic/face-api` 1.7.15), zero-shot on FER2013 PublicTest "
        f"(n = {len(labels)})",
        "",
        "| model / ensemble (equal-weight probability average) | FER2013 7-class acc | macro-F1 | ECE | "
        f"FER+ majority acc (n={int(fp_keep.sum())}) | macro-F1 | ECE |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, f7, fpm in rows:
        lines.append(
            f"| {label} | {f7['accuracy']:.2%} | {f7['macro_f1']:.3f} | {f7['ece']:.3f} | "
            f"{fpm['accuracy']:.2%} | {fpm['macro_f1']:.3f} | {fpm['ece']:.3f} |"
        )
    for idx_key, title in ((1, "FER2013 labels"), (2, "FER+ majority labels")):
        lines += ["", f"Per-class recall, {title}:", "", "| model | " + " | ".join(FER7) + " |"]
        lines.append("|---|" + "---|" * len(FER7))
        for row in rows:
            rec = row[idx_key]["per_class_recall"]
            lines.append(f"| {row[0]} | " + " | ".join(f"{rec[c]:.3f}" for c in FER7) + " |")
    lines += [
        "",
        f"face-api: {n_params:,} parameters (uint8-quantised in the package, de-quantised to float32 here); "
        f"PyTorch on CPU, 1 thread: batch 1 {b1:.2f} ms/face wall (median of 20), {b1_cpu:.2f} ms CPU; "
        f"the whole set in batches of 128 {batch_ms:.2f} ms/face wall, {batch_cpu_ms:.2f} ms CPU "
        f"(on {platform.machine()}, {os.cpu_count()} logical cores shared "
        f"with a training run, load average at end {os.getloadavg()[0]:.1f}).",
        "Top-1 agreement of face-api with " + ", ".join(f"`{k}` {v:.1%}" for k, v in agree.items()) + ".",
    ]
    if leak is not None:
        lines.append(
            f"Leakage check: face-api's accuracy on {args.train_sample:,} Training faces (seed 0) is {leak:.2%} "
            f"against {rows[0][1]['accuracy']:.2%} on PublicTest."
        )
    lines += [
        "",
        "Sanity check on the example photos (face found by `retinaface`, aligned to 112 px RGB the way the "
        "analyzer aligns faces):",
        "",
    ]
    lines += [f"- {line}" for line in photo_check(net)]
    lines += ["", "Method: `benchmarks/faceapi_expression.py` (see its docstring).", ""]
    out = ROOT / "benchmarks" / "results" / f"{args.out}.md"
    print(write_result(out, lines))


if __name__ == "__main__":
    main()
