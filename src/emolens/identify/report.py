"""The training report of a recognizer version: ``report.json`` is the record; ``report.md`` and
``confusion.png`` are rendered from it, so redacting a removed person means editing the JSON and
rendering again.
"""

from __future__ import annotations

import io
import json
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from emolens.core.fileio import atomic_write, private_dir

REMOVED = "[removed]"
MAX_PLOT_PEOPLE = 60  # a confusion matrix of more people is unreadable as a picture; the JSON has it


def build_report(analysis, names: dict[int, tuple[str, str]], embedder: str, version: int, fit_seconds: float) -> dict:
    """Everything a reader needs to trust (or distrust) a version, as plain JSON data."""
    chosen = analysis.chosen
    at = analysis.at_threshold
    summary = {
        "classifier": chosen.kind,
        "params": chosen.params,
        "threshold": chosen.threshold,
        "min_similarity": analysis.min_similarity,
        "reason": chosen.reason,
        "n_people": analysis.n_people,
        "n_faces": analysis.n_faces,
        "folds": analysis.folds,
        "cv_accuracy": chosen.cv_accuracy,
        "accuracy": at.get("accuracy"),
        "coverage": at.get("coverage"),
        "false_reject_rate": at.get("false_reject_rate"),
        "misidentification_rate": at.get("misidentification_rate"),
        "false_accept_rate": at.get("false_accept_rate"),
        "impostor_probes": 0 if chosen.impostor is None else len(chosen.impostor.pred),
        "genuine_probes": 0 if chosen.genuine is None else len(chosen.genuine.pred),
        # How close never-enrolled faces come to an enrolled one: measurable even with one photo
        # per person, when accuracy and false rejects are not.
        "impostor_similarity": _spread(None if chosen.impostor is None else chosen.impostor.sim),
        "fit_seconds": round(fit_seconds, 3),
    }
    return {
        "version": version,
        "created_at": datetime.now(UTC).isoformat(),
        "embedder": embedder,
        "summary": summary,
        "classifiers": [
            {
                "kind": c.kind,
                "params": c.params,
                "cv_accuracy": c.cv_accuracy,
                "open_set_score": round(c.score, 4),
                "threshold": c.threshold,
                "seconds": round(c.seconds, 2),
            }
            for c in analysis.candidates
        ],
        "thresholds": chosen.table,
        **_per_person(chosen.genuine, names),
    }


def _spread(values: np.ndarray | None) -> dict[str, float] | None:
    if values is None or not len(values):
        return None
    q = np.quantile(values, [0.5, 0.95, 1.0])
    return {"median": round(float(q[0]), 4), "p95": round(float(q[1]), 4), "max": round(float(q[2]), 4)}


def _per_person(genuine, names: dict[int, tuple[str, str]]) -> dict[str, Any]:
    """Precision/recall per person and the confusion matrix, from the out-of-fold predictions."""
    if genuine is None:
        return {"per_person": [], "confusion": None}
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    ids = sorted(set(genuine.true.tolist()) | set(genuine.pred.tolist()))
    with warnings.catch_warnings():  # one enrolled person: scikit-learn warns about a single label
        warnings.simplefilter("ignore", UserWarning)
        p, r, f, n = precision_recall_fscore_support(genuine.true, genuine.pred, labels=ids, zero_division=0)
        cm = confusion_matrix(genuine.true, genuine.pred, labels=ids)
    rows = [
        {
            "key": names.get(i, (REMOVED, REMOVED))[0],
            "name": names.get(i, (REMOVED, REMOVED))[1],
            "precision": round(float(p[j]), 4),
            "recall": round(float(r[j]), 4),
            "f1": round(float(f[j]), 4),
            "faces": int(n[j]),
        }
        for j, i in enumerate(ids)
    ]
    return {
        "per_person": rows,
        "confusion": {"labels": [names.get(i, (REMOVED,))[0] for i in ids], "matrix": cm.tolist()},
    }


def write_report(report: dict, folder: str | Path) -> Path:
    """Write report.json, report.md and (with matplotlib, up to 60 people) confusion.png."""
    folder = private_dir(Path(folder))  # person ids and names: the owner's only
    png = folder / "confusion.png"
    has_png = _plot_confusion(report.get("confusion"), png)
    if not has_png:
        png.unlink(missing_ok=True)
    atomic_write(folder / "report.json", json.dumps(report, indent=2).encode())
    atomic_write(folder / "report.md", render_markdown(report, has_png).encode())
    return folder


def redact_reports(versions_root: str | Path, key: str, name: str) -> int:
    """Replace a removed person's id and name in every version's report; returns reports changed."""
    changed = 0
    for path in sorted(Path(versions_root).glob("v*/report.json")):
        report = json.loads(path.read_text())
        hit = False
        for row in report.get("per_person", []):
            if row.get("key") == key:
                row["key"], row["name"], hit = REMOVED, REMOVED, True
        conf = report.get("confusion") or {}
        labels = conf.get("labels") or []
        for i, label in enumerate(labels):
            if label == key:
                labels[i], hit = REMOVED, True
        text = path.read_text()
        if hit or key in text or (name and name in text):
            # Belt and braces: no trace of the key or name in any rendered file of the version.
            write_report(report, path.parent)
            changed += 1
    return changed


def _fmt(v, pct: bool = True) -> str:
    if v is None:
        return "–"
    return f"{100 * v:.1f}%" if pct else f"{v:.4f}"


def render_markdown(report: dict, has_png: bool = False) -> str:
    s = report["summary"]
    lines = [
        f"# Recognizer version {report['version']}",
        "",
        f"- created {report['created_at']}, embedder `{report['embedder']}`",
        f"- {s['n_people']} people, {s['n_faces']} enrolled faces; classifier **{s['classifier']}** {s['params']}",
        f"- {s['folds']}-fold cross-validation: {s['genuine_probes']} out-of-fold predictions of enrolled faces, "
        f"{s['impostor_probes']} of people held out of training (never-enrolled stand-ins)",
        "",
        "## Recommendation",
        "",
        f"Threshold **{s['threshold']:.2f}** on the classifier's confidence, with a cosine similarity of at least "
        f"{s['min_similarity']:.2f} to the person's nearest enrolled face; below either, the answer is "
        f'"unknown". Chosen as: {s["reason"]}.',
        "",
        "| at the recommended threshold | |",
        "|---|---|",
        f"| closed-set accuracy (before the threshold) | {_fmt(s['cv_accuracy'])} |",
        f"| accuracy of accepted enrolled faces | {_fmt(s['accuracy'])} |",
        f"| coverage (enrolled faces accepted) | {_fmt(s['coverage'])} |",
        f"| false reject rate (enrolled, answered unknown) | {_fmt(s['false_reject_rate'])} |",
        f"| misidentification rate (enrolled, named wrong) | {_fmt(s['misidentification_rate'])} |",
        f"| false accept rate (never enrolled, given a name) | {_fmt(s['false_accept_rate'])} |",
        *_caution(s["impostor_probes"]),
        "",
        "## Classifiers compared",
        "",
        "| classifier | closed-set CV accuracy | open-set score at its threshold | its threshold | time |",
        "|---|---|---|---|---|",
    ]
    for c in report["classifiers"]:
        mark = " (chosen)" if c["kind"] == s["classifier"] else ""
        lines.append(
            f"| {c['kind']}{mark} | {_fmt(c['cv_accuracy'])} | {_fmt(c['open_set_score'])} | "
            f"{c['threshold']:.2f} | {c['seconds']:.1f} s |"
        )
    lines += [
        "",
        "Open-set score: the mean of the identification rate (enrolled faces accepted and named right) and the "
        "true reject rate (held-out people answered unknown).",
        "",
        "## Threshold analysis",
        "",
        "| threshold | coverage | accuracy | identification | false reject | misidentified | false accept |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report["thresholds"]:
        t = r["threshold"]
        if round(t * 100) % 5 and t != s["threshold"]:
            continue  # every 0.05 and the recommended one here; report.json has every 0.01
        mark = " ←" if t == s["threshold"] else ""
        lines.append(
            f"| {t:.2f}{mark} | {_fmt(r.get('coverage'))} | {_fmt(r.get('accuracy'))} | "
            f"{_fmt(r.get('identification_rate'))} | {_fmt(r.get('false_reject_rate'))} | "
            f"{_fmt(r.get('misidentification_rate'))} | {_fmt(r.get('false_accept_rate'))} |"
        )
    if report.get("per_person"):
        lines += [
            "",
            "## Per person (out-of-fold, before the threshold)",
            "",
            "| id | name | precision | recall | F1 | faces |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {p['key']} | {p['name']} | {p['precision']:.3f} | {p['recall']:.3f} | {p['f1']:.3f} | {p['faces']} |"
            for p in report["per_person"]
        ]
    if has_png:
        lines += ["", "## Confusion matrix", "", "![confusion matrix](confusion.png)"]
    elif report.get("confusion"):
        lines += ["", "The confusion matrix is in report.json (`confusion`)."]
    return "\n".join(lines) + "\n"


def _caution(n_impostors: int) -> list[str]:
    if n_impostors >= 300:
        return []
    return [
        "",
        f"Caution: {n_impostors} never-enrolled probes cannot show a false accept rate below about "
        f"{min(1.0, 3 / max(n_impostors, 1)):.0%} (the rule of three); with few people enrolled, the similarity "
        "check is what rejects strangers. Train with `--strangers FOLDER` (photos of people who will never be "
        "enrolled) for firmer figures.",
    ]


def _plot_confusion(conf: dict | None, target: Path) -> bool:
    if not conf or not conf["labels"] or len(conf["labels"]) > MAX_PLOT_PEOPLE:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # matplotlib is optional: the report stays complete without the picture
        return False
    labels, m = conf["labels"], np.array(conf["matrix"])
    side = max(4.0, 0.3 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(side, side))
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(labels) <= 20:
        for (i, j), v in np.ndenumerate(m):
            if v:
                ax.text(j, i, str(v), ha="center", va="center", fontsize=7, color="white" if v > m.max() / 2 else "k")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    atomic_write(target, buf.getvalue())  # 0600, as report.json: it shows the same ids
    plt.close(fig)
    return True
