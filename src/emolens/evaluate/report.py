"""The evaluation report: report.md and a self-contained report.html, metrics.json, confusion.json, plots."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

from emolens.evaluate import plots


def _f(v, digits: int = 4) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def render_markdown(r: dict, command: str = "") -> str:
    labels = [c for c in r["labels"] if c in r["support"]]
    members = r.get("models", [r.get("model", "?")])
    what = " + ".join(f"`{m}`" for m in members) + (" (ensemble: mean of probabilities)" if len(members) > 1 else "")
    tta = r.get("tta")
    acc_cov = r["accuracy_at_coverage"]
    cal = r["calibration"]
    md = [
        f"# Evaluation: {what}",
        "",
        f"- **Data**: {r.get('dataset') or 'labelled faces'}, n = {r['n']}",
        "- **Test-time augmentation**: "
        + (
            f"mean over {tta['views']} views (the crop, its mirror"
            + (f", and shifts of {tta['shift']} px left/right/up/down)" if tta["shift"] else ")")
            if tta
            else "none"
        ),
    ]
    if r.get("not_counted"):
        md.append(f"- **Not counted**: {len(r['not_counted'])} images without a usable face (listed at the end)")
    if command:
        md += ["", "Produced by:", "", "```", command, "```"]
    md += [
        "",
        "| accuracy | macro-F1 | balanced accuracy | ECE (15 bins) | NLL | Brier | acc. at 90% coverage | "
        "acc. at 80% coverage | AURC |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {_f(r['accuracy'])} | {_f(r['macro_f1'])} | {_f(r['balanced_accuracy'])} | {_f(r['ece'])} | "
        f"{_f(cal['nll'])} | {_f(cal['brier'])} | {_f(acc_cov.get('0.9'))} | {_f(acc_cov.get('0.8'))} | "
        f"{_f(r['selective']['aurc'])} |",
    ]
    if r.get("variants"):
        md += [
            "",
            "## Variants",
            "",
            "Each model alone and combined, with and without test-time augmentation, on the same faces.",
            "",
            "| model | TTA | accuracy | macro-F1 | ECE | NLL | acc. at 90% coverage | acc. at 80% coverage |",
            "|---|---|---|---|---|---|---|---|",
            *[
                f"| {v['name']} | {'yes' if v['tta'] else 'no'} | {_f(v['accuracy'])} | {_f(v['macro_f1'])} | "
                f"{_f(v['ece'])} | {_f(v['nll'])} | {_f(v.get('accuracy_at_0.9'))} | {_f(v.get('accuracy_at_0.8'))} |"
                for v in r["variants"]
            ],
        ]
    md += [
        "",
        "## Per class",
        "",
        "| class | precision | recall | F1 | support |",
        "|---|---|---|---|---|",
        *[
            f"| {c} | {r['per_class_precision'][c]:.3f} | {r['per_class_recall'][c]:.3f} | "
            f"{r['per_class_f1'][c]:.3f} | {r['support'][c]} |"
            for c in labels
        ],
        "",
        "## Confusion matrix",
        "",
        "Rows: true class; columns: prediction; cells: share of the row and count "
        "([confusion.json](confusion.json) has the counts).",
        "",
        "![confusion matrix](confusion.png)",
        "",
        "## Calibration",
        "",
        f"Expected calibration error **{r['ece']:.4f}** over {cal['n_bins']} equal-width confidence bins "
        f"(maximum gap {cal['mce']:.4f}); mean confidence {_f(cal['mean_confidence'])} against accuracy "
        f"{_f(r['accuracy'])}.",
        "",
        "![reliability diagram](reliability.png)",
        "",
        "| confidence bin | faces | accuracy | mean confidence |",
        "|---|---|---|---|",
        *[
            f"| ({b['lo']:.3f}, {b['hi']:.3f}] | {b['count']} | {_f(b['accuracy'], 3)} | {_f(b['confidence'], 3)} |"
            for b in cal["bins"]
            if b["count"]
        ],
        "",
        "## Accuracy against coverage",
        "",
        "The model may abstain on the faces it is least sure of: answering only the most confident share "
        "(coverage) raises the accuracy on the faces it answers.",
        "",
        "![accuracy against coverage](coverage.png)",
        "",
        "| coverage | accuracy | confidence threshold | faces answered |",
        "|---|---|---|---|",
        *[
            f"| {row['coverage']:.0%} | {row['accuracy']:.4f} | {row['threshold']:.3f} | {row['answered']} |"
            for row in r["selective"]["by_coverage"]
        ],
        "",
        "| abstain below confidence | coverage | accuracy |",
        "|---|---|---|",
        *[
            f"| {row['threshold']:.1f} | {row['coverage']:.1%} | {_f(row['accuracy'])} |"
            for row in r["selective"]["by_threshold"]
        ],
    ]
    th = r.get("thresholds")
    if th:
        goal = (
            f"precision {th['target']:g} per predicted class"
            if th["rule"] == "precision"
            else (f"coverage {th['target']:g} of each predicted class")
        )
        cross = th.get("cross_fit")
        md += [
            "",
            "## Per-class thresholds",
            "",
            f"Chosen on these faces for a target {goal}; below its class's threshold a face is answered "
            f'"uncertain". Coverage **{th["coverage"]:.1%}**, accuracy on answered faces **{_f(th["accuracy"])}** '
            f"({th['uncertain']} of {th['n']} uncertain)."
            + (
                f" Chosen on one random half and measured on the other (a fairer estimate): coverage "
                f"{cross['coverage']:.1%}, accuracy {_f(cross['accuracy'])}."
                if cross
                else ""
            ),
            "",
            "| predicted class | threshold | predicted | answered | precision of answers |",
            "|---|---|---|---|---|",
            *[
                f"| {c} | {v['threshold']:.3f} | {v['predicted']} | {v['answered']} | {_f(v['precision'], 3)} |"
                for c, v in th["per_class"].items()
            ],
        ]
        if th["unreachable"]:
            md += ["", f"Target not reached (threshold 1.0: always uncertain): {', '.join(th['unreachable'])}."]
        if th.get("saved_to"):
            md += ["", f"Saved into the model metadata (`emolens.thresholds`) of `{th['saved_to']}`."]
    if r.get("not_counted"):
        md += ["", "## Not counted", "", *[f"- {line}" for line in r["not_counted"]]]
    return "\n".join(md) + "\n"


def _html(md: str, folder: Path) -> str:
    """The Markdown as one HTML file; the PNGs are embedded, so the page travels alone."""
    from emolens.core.errors import require

    markdown = require("markdown", "train")
    body = markdown.markdown(md, extensions=["tables", "fenced_code"])

    def embed(match: re.Match) -> str:
        png = folder / match.group(1)
        if not png.is_file():
            return match.group(0)
        return f'src="data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()}"'

    body = re.sub(r'src="([\w.-]+\.png)"', embed, body)
    style = (
        "body{font-family:sans-serif;max-width:64em;margin:2em auto;padding:0 1em}"
        "td,th{padding:2px 8px;border:1px solid #ccc}table{border-collapse:collapse}img{max-width:100%}"
    )
    return f"<!doctype html><html><head><meta charset='utf-8'><style>{style}</style></head><body>{body}</body></html>"


def write_report(report: dict, out_dir: str | Path, command: str = "") -> dict[str, Path]:
    """report.md, report.html (plots embedded), metrics.json, confusion.json, confusion.png,
    reliability.png and coverage.png in ``out_dir`` (needs matplotlib). ``report`` is
    ``EvaluationReport.to_dict()`` or ``evaluate_arrays``' result."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "confusion_png": plots.plot_confusion(report["confusion"], report["labels"], out / "confusion.png"),
        "reliability_png": plots.plot_reliability(report["calibration"], out / "reliability.png"),
        "coverage_png": plots.plot_coverage(report["selective"], out / "coverage.png", report.get("thresholds")),
    }
    (out / "confusion.json").write_text(
        json.dumps({"labels": report["labels"], "rows": "true", "columns": "predicted", "counts": report["confusion"]})
    )
    (out / "metrics.json").write_text(json.dumps(report, indent=1))
    md = render_markdown(report, command)
    (out / "report.md").write_text(md)
    (out / "report.html").write_text(_html(md, out))
    return {
        **paths,
        "markdown": out / "report.md",
        "html": out / "report.html",
        "json": out / "metrics.json",
        "confusion_json": out / "confusion.json",
    }
