"""Per-track timelines: one row per face per frame (CSV), tracks with their frames (JSON), a plot.

>>> timeline = Timeline(labels, source="clip", fps=25)
>>> for res in analyze_video("clip.mp4"):
...     timeline.add(res)
>>> timeline.to_csv("timeline.csv"); timeline.to_json("timeline.json"); timeline.plot("timeline.png")
"""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import numpy as np

from emolens.pipeline.results import COLORS, Results

MAX_PLOTTED_TRACKS = 8  # the longest ones; a crowd would make the figure unreadable


class Timeline:
    """Collects the tracked faces of a video frame by frame: numbers only, one small array per face
    and frame (about 250 bytes), so an hour of a five-person meeting stays near 150 MB."""

    def __init__(self, labels: list[str], source: str = "", fps: float | None = None):
        self.labels = list(labels)
        self.source = source
        self.fps = fps
        self.frames = 0  # frames added, with or without faces
        self._data: list[np.ndarray] = []  # frame, time, track, x1, y1, x2, y2, score, p..., raw...
        self._errors: dict[tuple[int, int], str] = {}

    def add(self, results: Results) -> None:
        self.frames += 1
        n = len(self.labels)
        frame = -1 if results.frame_index is None else results.frame_index
        t = np.nan if results.timestamp is None else results.timestamp
        for f in results.faces:
            if f.track_id is None:
                continue
            p = [f.probs.get(k, np.nan) for k in self.labels] if f.probs else [np.nan] * n
            raw = [f.raw_probs.get(k, np.nan) for k in self.labels] if f.raw_probs else [np.nan] * n
            self._data.append(np.array([frame, t, f.track_id, *f.box, f.score, *p, *raw], np.float64))
            if f.error:
                self._errors[(frame, f.track_id)] = f.error

    @property
    def rows(self) -> list[dict]:
        """One dict per face per frame, as in the CSV."""
        n = len(self.labels)
        out = []
        for v in self._data:
            p, raw = v[8 : 8 + n], v[8 + n :]
            known = bool(np.isfinite(p).all())
            row = {
                "frame": int(v[0]),
                "time_s": None if np.isnan(v[1]) else round(float(v[1]), 4),
                "track_id": int(v[2]),
                **{k: round(float(x), 1) for k, x in zip(("x1", "y1", "x2", "y2"), v[3:7], strict=True)},
                "score": round(float(v[7]), 4),
                "label": self.labels[int(np.argmax(p))] if known else None,
                "confidence": round(float(p.max()), 4) if known else None,
                **{f"p_{k}": round(float(x), 4) if known else None for k, x in zip(self.labels, p, strict=True)},
                **{
                    f"raw_{k}": None if np.isnan(x) else round(float(x), 4)
                    for k, x in zip(self.labels, raw, strict=True)
                },
            }
            err = self._errors.get((row["frame"], row["track_id"]))
            if err:
                row["error"] = err
            out.append(row)
        return out

    # -- per track ---------------------------------------------------------------------------
    def track_ids(self) -> list[int]:
        return sorted({int(v[2]) for v in self._data})

    def _by_track(self) -> dict[int, list[dict]]:
        groups: dict[int, list[dict]] = {}
        for r in self.rows:
            groups.setdefault(r["track_id"], []).append(r)
        return dict(sorted(groups.items()))

    def _probs(self, rows: list[dict], prefix: str = "p_") -> np.ndarray:
        return np.array(
            [[r[f"{prefix}{k}"] for k in self.labels] for r in rows if r[f"{prefix}{self.labels[0]}"] is not None],
            dtype=np.float64,
        ).reshape(-1, len(self.labels))

    def summary(self) -> list[dict]:
        """One entry per track: when it was seen, for how long, its dominant and mean emotions."""
        out = []
        for tid, rows in self._by_track().items():
            probs = self._probs(rows)
            mean = probs.mean(axis=0) if len(probs) else None
            counts: dict[str, int] = {}
            for r in rows:
                if r["label"]:
                    counts[r["label"]] = counts.get(r["label"], 0) + 1
            out.append(
                {
                    "track_id": tid,
                    "first_frame": rows[0]["frame"],
                    "last_frame": rows[-1]["frame"],
                    "start_s": rows[0]["time_s"],
                    "end_s": rows[-1]["time_s"],
                    "frames": len(rows),
                    "dominant": max(counts, key=counts.get) if counts else None,  # the most frequent label
                    "label_frames": counts,
                    "mean_probs": None
                    if mean is None
                    else {k: round(float(v), 4) for k, v in zip(self.labels, mean, strict=True)},
                }
            )
        return out

    # -- outputs -----------------------------------------------------------------------------
    def to_dict(self, stats: dict | None = None) -> dict:
        tracks = []
        groups = self._by_track()
        for info in self.summary():
            rows = groups[info["track_id"]]
            info["timeline"] = [
                {
                    "frame": r["frame"],
                    "time_s": r["time_s"],
                    "box": [r["x1"], r["y1"], r["x2"], r["y2"]],
                    "label": r["label"],
                    "confidence": r["confidence"],
                    "probs": {k: r[f"p_{k}"] for k in self.labels},
                    "raw_probs": {k: r[f"raw_{k}"] for k in self.labels},
                }
                for r in rows
            ]
            tracks.append(info)
        return {
            "source": self.source,
            "fps": self.fps,
            "labels": self.labels,
            "frames_analyzed": self.frames,
            **({"stats": stats} if stats else {}),
            "tracks": tracks,
        }

    def to_json(self, path: str | Path, stats: dict | None = None) -> Path:
        return _write_text(Path(path), json.dumps(self.to_dict(stats), indent=1))

    def to_csv(self, path: str | Path) -> Path:
        import io

        fields = ["frame", "time_s", "track_id", "x1", "y1", "x2", "y2", "score", "label", "confidence"]
        fields += [f"p_{k}" for k in self.labels] + [f"raw_{k}" for k in self.labels]
        if self._errors:
            fields.append("error")
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=fields)
        writer.writeheader()
        writer.writerows(self.rows)
        return _write_text(Path(path), buffer.getvalue())

    def plotted_tracks(self) -> tuple[list[dict], str]:
        """The tracks the plot shows (the ``MAX_PLOTTED_TRACKS`` longest, the earlier track first
        among equals; in track order) and its title, which says truly what was left out."""
        ranked = sorted(self.summary(), key=lambda s: (-s["frames"], s["track_id"]))
        info, rest = ranked[:MAX_PLOTTED_TRACKS], ranked[MAX_PLOTTED_TRACKS:]
        info.sort(key=lambda s: s["track_id"])
        title = f"{self.source or 'video'}: emotions per tracked face (smoothed)"
        if rest:
            longest_left = max(s["frames"] for s in rest)
            if longest_left < min(s["frames"] for s in info):
                title += f"; {len(rest)} shorter tracks not shown (at most {longest_left} frames each)"
            else:  # ties with the shortest shown: "shorter" would be untrue
                title += (
                    f"; {len(rest)} more tracks not shown (at most {longest_left} frames each, as long as some shown)"
                )
        return info, title

    def plot(self, path: str | Path) -> Path | None:
        """A PNG: per track, its smoothed emotion probabilities stacked over time. Needs matplotlib
        (the ``train`` extra): without it a warning says so and None is returned."""
        try:
            import matplotlib
        except ImportError:
            warnings.warn(
                "the timeline plot needs matplotlib (pip install -e '.[train]'); skipped",
                stacklevel=2,
            )
            return None
        matplotlib.use("Agg", force=False)  # files only; never a window
        import matplotlib.pyplot as plt

        groups = self._by_track()
        info, title = self.plotted_tracks()
        n = max(len(info), 1)
        height = 1.8 * n + 1.0
        fig, axes = plt.subplots(n, 1, figsize=(10, height), sharex=True, squeeze=False)
        colors = [np.array(COLORS.get(k, (120, 120, 120))) / 255 for k in self.labels]
        use_time = all(not np.isnan(v[1]) for v in self._data)
        for ax, s in zip(axes[:, 0], info, strict=False):
            rows = [r for r in groups[s["track_id"]] if r[f"p_{self.labels[0]}"] is not None]
            x = [r["time_s"] if use_time else r["frame"] for r in rows]
            ax.stackplot(x, self._probs(rows).T, colors=colors, labels=self.labels, linewidth=0)
            ax.set_ylim(0, 1)
            ax.set_ylabel(f"#{s['track_id']}", rotation=0, labelpad=16, va="center")
            ax.set_yticks([0, 0.5, 1])
        if not info:
            axes[0, 0].text(0.5, 0.5, "no face tracked", ha="center", va="center", transform=axes[0, 0].transAxes)
        axes[-1, 0].set_xlabel("time (s)" if use_time else "frame")
        handles, names = axes[0, 0].get_legend_handles_labels()
        if handles:
            fig.legend(handles, names, loc="lower center", ncol=len(names), frameon=False, fontsize=8)
        fig.suptitle(title, fontsize=10)
        fig.tight_layout(rect=(0, 0.3 / height, 1, 1 - 0.1 / height))  # room for the legend below
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.stem}.part{target.suffix}")
        try:
            fig.savefig(tmp, dpi=100)
            tmp.replace(target)
        finally:
            plt.close(fig)
            tmp.unlink(missing_ok=True)
        return target


def _write_text(target: Path, text: str) -> Path:
    """Whole or not at all: a temporary file renamed into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.part")
    try:
        tmp.write_text(text)
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return target
