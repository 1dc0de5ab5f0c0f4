"""A model (or an ensemble) measured on a labelled dataset, as one typed report.

``evaluate_dataset`` loads the data (crops, photos, FER2013 or a labels CSV), detects and aligns
photos, measures the model with ``evaluate_arrays`` and, where asked, on the FER+ majority labels
and under camera degradations. The ``EvaluationReport`` it returns carries every figure;
``to_dict()`` is the JSON that ``emolens evaluate --json`` writes and ``write_report`` reads.
``check_evaluation`` says, before anything is loaded, whether a set of options can work at all.

Importing this module is cheap (no NumPy, no model runtime): the command line reads its defaults
from ``evaluate_dataset``'s signature when it starts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import NamedTuple

from emolens.core.errors import EmoLensError


class ClassScores(NamedTuple):
    """One class's figures, on the faces whose true class it is (``support`` of them)."""

    precision: float
    recall: float
    f1: float
    support: int


# Figures that only some evaluations have: left out of ``to_dict()`` when absent, as they always were.
_OPTIONAL = frozenset({"weights", "dropped_labels", "variants", "rules", "thresholds", "ferplus", "robustness"})


@dataclass
class EvaluationReport:
    """Everything one evaluation measured. The field order is the order of the JSON keys.

    The headline (``accuracy``, ``macro_f1``, ``ece``, ``accuracy_at_coverage``) is the argmax of
    the (ensemble's, augmented) probabilities, in the first model's label order. ``per_class``
    gives each class's ``ClassScores``. Optional parts are None when not measured: ``variants``
    (each member with and without TTA), ``rules`` (the guard's report of post-processing rules),
    ``thresholds`` (per-class thresholds chosen for a target), ``ferplus`` (the same model on the
    FER+ majority labels) and ``robustness`` (accuracy and macro-F1 under each camera degradation,
    and the robustness score). ``not_counted`` lists the images without a usable face.
    """

    model: str
    models: list[str]
    n: int
    accuracy: float
    macro_f1: float
    balanced_accuracy: float
    per_class_precision: dict[str, float]
    per_class_recall: dict[str, float]
    per_class_f1: dict[str, float]
    support: dict[str, int]
    labels: list[str]
    confusion: list[list[int]]
    ece: float
    calibration: dict
    selective: dict
    accuracy_at_coverage: dict[str, float]
    weights: list[float] | None = None
    dropped_labels: list[str] | None = None
    tta: dict | None = None
    variants: list[dict] | None = None
    rules: dict | None = None
    thresholds: dict | None = None
    ferplus: dict | None = None
    robustness: dict | None = None
    not_counted: list[str] = field(default_factory=list)
    dataset: str = ""
    tried_rules: list[str] | None = field(default=None, repr=False, metadata={"json": False})

    @property
    def per_class(self) -> dict[str, ClassScores]:
        """Precision, recall, F1 and support of each class the data hold, in label order."""
        return {
            c: ClassScores(self.per_class_precision[c], r, self.per_class_f1[c], self.support[c])
            for c, r in self.per_class_recall.items()
        }

    def to_dict(self) -> dict:
        """The report as JSON-ready data: ``emolens evaluate --json``, and what ``write_report`` reads."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("json", True) and not (value is None and f.name in _OPTIONAL):
                out[f.name] = value
        return out

    def save_thresholds(self, out: str | Path | None = None) -> Path:
        """Write the chosen thresholds into the model file (in place, atomically, or a copy at
        ``out``), with a note of how they were chosen; below them the analyzer answers "uncertain".
        Returns the file written, also recorded as ``thresholds["saved_to"]``."""
        from emolens.classify.amend import save_thresholds
        from emolens.evaluate.core import default_resolver

        th = self.thresholds
        if th is None:
            raise EmoLensError("no thresholds were chosen: evaluate with a target precision or coverage")
        if out is None:
            _check_in_place(self.models[0], "thresholds")
        note = {k: th[k] for k in ("rule", "target", "coverage", "accuracy", "n")}
        note.update(dataset=self.dataset, cross_fit=th.get("cross_fit"))
        target = save_thresholds(default_resolver().path(self.models[0]), th["thresholds"], out, card_note=note)
        th["saved_to"] = str(target)
        return target

    def save_rules(self, out: str | Path | None = None) -> Path:
        """Write the rules tried into the model file (or a copy at ``out``), the guard's report as
        evidence; refused (``RefusedError``) when a rule lowers macro-F1. Returns the file written,
        also recorded as ``rules["saved_to"]``."""
        from emolens.classify.amend import save_rules
        from emolens.evaluate.core import default_resolver

        if not self.tried_rules or self.rules is None:
            raise EmoLensError("no rules were tried: evaluate with rules to save them")
        if out is None:
            _check_in_place(self.models[0], "rules")
        guard = {**self.rules, "dataset": self.dataset}
        target = save_rules(default_resolver().path(self.models[0]), self.tried_rules, out, evidence=guard)
        self.rules["saved_to"] = str(target)
        return target


def check_evaluation(
    model,
    *,
    tta: bool = False,
    tta_shift: int = 0,
    target_precision: float | None = None,
    target_coverage: float | None = None,
    rules: list[str] | None = None,
    save_thresholds: bool = False,
    thresholds_out: str | Path | None = None,
    save_rules: bool = False,
    rules_out: str | Path | None = None,
) -> list[str]:
    """The model names, once the options agree; otherwise an EmoLensError that says what to change
    (in the command line's words). Thresholds and rules are saved into one model that the analyzer
    runs without test-time augmentation, in place only into a model given by its path (else into a
    copy, ``thresholds_out`` / ``rules_out``)."""
    from emolens.core.fileio import refuse_package
    from emolens.evaluate.core import model_names

    tta = tta or tta_shift > 0
    names = model_names(model)
    if save_rules and not rules:
        raise EmoLensError("--save-rules needs the rules to try: --rule 'if A and B >= P then B'")
    if save_rules and (len(names) > 1 or tta):
        raise EmoLensError("rules are saved into one model, judged without --tta: give a single model")
    if save_rules and rules_out is None:
        _check_in_place(names[0], "rules")
    if target_precision is not None and target_coverage is not None:
        raise EmoLensError("give --target-precision or --target-coverage, not both")
    if save_thresholds and target_precision is None and target_coverage is None:
        raise EmoLensError("--save-thresholds needs --target-precision or --target-coverage")
    if save_thresholds and (len(names) > 1 or tta):
        raise EmoLensError(
            "thresholds are saved for the analyzer, which runs one model without test-time augmentation: "
            "choose them with a single model and no --tta"
        )
    if save_thresholds and thresholds_out is None:
        _check_in_place(names[0], "thresholds")
    for out in (thresholds_out if save_thresholds else None, rules_out if save_rules else None):
        if out is not None:
            refuse_package(out)
    return names


def _check_in_place(name: str, what: str) -> None:
    """Thresholds and rules are written in place only into a model given by its path: a shipped or
    registered model is never changed under its name."""
    from emolens.core.fileio import refuse_package

    if not Path(name).is_file():
        raise EmoLensError(
            f"{name!r} is a model name, not a file: write a copy with --{what}-out NEW.onnx "
            f"({what} are written in place only into a model given by its path)"
        )
    refuse_package(name)  # a shipped model's file given by its path is not edited either


def evaluate_dataset(
    model,
    data: str | Path,
    *,
    tta: bool = False,
    tta_shift: int = 0,
    target_precision: float | None = None,
    target_coverage: float | None = None,
    rules: list[str] | None = None,
    votes: str | Path | None = None,
    degrade: bool = False,
    progress: bool = True,
    note: Callable[[str], None] | None = None,
) -> EvaluationReport:
    """Measure a model or an ensemble on labelled faces: ``data`` is an .npz of crops, class
    folders of photos, a FER2013 or a labels CSV. Photos are detected and aligned at the largest
    input of the members; images without a face are listed in ``not_counted``, not counted.

    ``model``: a name or path, several comma-separated or ``+``-joined, or a list (an ensemble).
    ``tta`` averages each crop with its mirror (``tta_shift`` > 0 adds four shifted views and
    implies ``tta``). ``target_precision`` or ``target_coverage`` chooses per-class thresholds;
    ``rules`` are post-processing rules to judge. The FER+ majority labels are scored too when
    ``votes`` is given, or ``<stem>_ferplus.npz`` lies beside an .npz ``data``. ``degrade`` also
    measures under the seeded camera degradations. ``progress`` shows a bar while photos are
    aligned; ``note`` (optional) is told what is being measured while the degradations run.
    """
    from emolens.data import load_dataset
    from emolens.data.datasets import to_crops
    from emolens.evaluate.core import evaluate_arrays, load_members
    from emolens.evaluate.ferplus import evaluate_ferplus, ferplus_votes_for
    from emolens.evaluate.robustness import robustness

    tta = tta or tta_shift > 0
    names = check_evaluation(model, tta=tta, target_precision=target_precision, target_coverage=target_coverage)
    specs = [m.meta.input for m in load_members(names)]
    size, channels = max(s.size for s in specs), max(s.channels for s in specs)
    dataset = load_dataset(data)
    crops, labels, skipped = to_crops(dataset, size, channels, progress=progress)
    metrics = evaluate_arrays(
        names,
        crops,
        labels,
        dataset.classes,
        tta=tta,
        tta_shift=tta_shift,
        target_precision=target_precision,
        target_coverage=target_coverage,
        compare=True,
        rules=rules or None,
    )
    report = EvaluationReport(**metrics, not_counted=skipped, dataset=str(data), tried_rules=rules or None)
    votes_file = ferplus_votes_for(data, votes)
    if votes_file is not None:
        report.ferplus = evaluate_ferplus(names, data, votes_file, tta=tta)
    if degrade:
        if note is not None:
            note("degradations")
        report.robustness = robustness(
            names,
            crops,
            labels,
            dataset.classes,
            tta=tta,
            progress=None if note is None else lambda name: note(f"degradation {name}"),
        )
    return report
