"""Hyper-parameter search: ``emolens tune DATA --space space.yaml --trials N``.

Optuna's TPE sampler proposes settings; a median pruner stops a trial whose validation macro-F1
after an epoch is below the median of earlier trials at that epoch. The study lives in a SQLite
file under ``$EMOLENS_HOME/tune/``, so a search stopped at any point (Ctrl-C, a crash) goes on
where it stopped when the same command runs again; the best settings are written as a training
YAML (``emolens train DATA --config best.yaml``), with plots of the search.

A search space is YAML, one entry per setting (dotted names reach nested ones)::

    lr: {low: 1.0e-4, high: 1.0e-2, log: true}
    weight_decay: {low: 1.0e-4, high: 5.0e-2, log: true}
    label_smoothing: {low: 0.0, high: 0.2}
    batch_size: {choices: [64, 128, 256]}
    augment.rotate_deg: {low: 0, high: 20, step: 5}     # ints when low, high and step are ints
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emolens.core.errors import EmoLensError, require
from emolens.train.config import dump_config, load_config
from emolens.train.loop import fit
from emolens.train.prepare import Crops

EXTRA = "tune"


@dataclass
class TuneReport:
    study: str
    storage: str
    trials: int  # finished (complete or pruned) trials in the study
    complete: int
    pruned: int
    best_value: float | None  # best validation macro-F1
    best_params: dict[str, Any]
    best_config: Path | None
    plots: list[Path]

    def to_dict(self) -> dict[str, Any]:
        d = self.__dict__.copy()
        d["best_config"] = str(self.best_config) if self.best_config else None
        d["plots"] = [str(p) for p in self.plots]
        return d


def load_space(path: str | Path) -> dict[str, dict[str, Any]]:
    yaml = require("yaml", "train", package="pyyaml")
    try:
        space = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise EmoLensError(f"cannot read search space {path}: {exc}") from None
    if not isinstance(space, dict) or not space:
        raise EmoLensError(f"{path}: a search space maps setting names to {{low, high[, log, step]}} or {{choices}}")
    for name, spec in space.items():
        if not isinstance(spec, dict) or not ({"low", "high"} <= set(spec) or "choices" in spec):
            raise EmoLensError(f"{path}: {name!r} needs low and high, or choices")
    load_config(overrides=[f"{name}={_example(spec)}" for name, spec in space.items()])  # names exist
    return space


def _example(spec: dict[str, Any]) -> Any:
    return spec["choices"][0] if "choices" in spec else spec["low"]


def suggest(trial, space: dict[str, dict[str, Any]]) -> list[str]:
    """The trial's settings as ``key=value`` overrides."""
    out = []
    for name, spec in space.items():
        if "choices" in spec:
            value = trial.suggest_categorical(name, list(spec["choices"]))
        elif all(isinstance(spec.get(k, 1), int) for k in ("low", "high", "step")):
            value = trial.suggest_int(
                name, spec["low"], spec["high"], step=spec.get("step", 1), log=spec.get("log", False)
            )
        else:
            step = spec.get("step")
            value = trial.suggest_float(
                name, float(spec["low"]), float(spec["high"]), step=step, log=spec.get("log", False)
            )
        out.append(f"{name}={json.dumps(value)}")
    return out


def tune(
    train: Crops,
    val: Crops,
    space: dict[str, dict[str, Any]],
    trials: int,
    folder: str | Path,
    study_name: str = "emolens",
    config: str | Path | None = None,
    overrides: list[str] | None = None,
    seed: int = 0,
    progress: bool = True,
) -> TuneReport:
    """Run trials until the study holds ``trials`` finished ones (so a second call resumes)."""
    optuna = require("optuna", EXTRA)
    from filelock import FileLock, Timeout

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{folder / 'study.db'}"
    lock = FileLock(str(folder / "study.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise EmoLensError(
            f"another `emolens tune` is running on {folder}; wait for it or use another --name"
        ) from None
    try:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(
            study_name=study_name,
            storage=storage,
            direction="maximize",
            load_if_exists=True,
            sampler=optuna.samplers.TPESampler(seed=seed),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
        )
        _fail_interrupted(study, optuna)
        base = {"labels": train.classes}

        def objective(trial) -> float:
            cfg = load_config(config, list(overrides or []) + suggest(trial, space), base=base)
            run = folder / f"trial_{trial.number}"
            best = -math.inf

            def report(row: dict) -> None:
                nonlocal best
                best = max(best, row["val_macro_f1"])
                trial.report(row["val_macro_f1"], row["epoch"])
                if trial.should_prune():
                    raise optuna.TrialPruned()

            fit((train.x, train.y), (val.x, val.y), cfg, run, progress=progress, on_epoch=report)
            (run / "config.yaml").write_text(dump_config(cfg))
            return best

        remaining = trials - len(_finished(study, optuna))
        if remaining > 0:
            study.optimize(objective, n_trials=remaining, catch=())
    finally:
        lock.release()
    return _report(study, optuna, folder, storage, config, overrides, train.classes)


def _finished(study, optuna) -> list:
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return study.get_trials(deepcopy=False, states=states)


def _fail_interrupted(study, optuna) -> None:
    """A trial left RUNNING by a process that was stopped (the lock says none runs now) is over."""
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study._storage.set_trial_state_values(t._trial_id, state=optuna.trial.TrialState.FAIL)


def _report(study, optuna, folder: Path, storage: str, config, overrides, labels) -> TuneReport:
    finished = _finished(study, optuna)
    complete = [t for t in finished if t.state == optuna.trial.TrialState.COMPLETE]
    best_config, plots = None, []
    if complete:
        best = study.best_trial
        cfg = load_config(
            config,
            list(overrides or []) + [f"{k}={json.dumps(v)}" for k, v in best.params.items()],
            base={"labels": labels},
        )
        best_config = folder / "best.yaml"
        best_config.write_text(dump_config(cfg))
        plots = _plots(study, folder)
    return TuneReport(
        study=study.study_name,
        storage=storage,
        trials=len(finished),
        complete=len(complete),
        pruned=len(finished) - len(complete),
        best_value=study.best_value if complete else None,
        best_params=study.best_params if complete else {},
        best_config=best_config,
        plots=plots,
    )


def _plots(study, folder: Path) -> list[Path]:
    require("matplotlib", "train")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as vis

    out = []
    for name, draw in (("history", vis.plot_optimization_history), ("importance", vis.plot_param_importances)):
        try:
            with warnings.catch_warnings():  # optuna marks its matplotlib plots experimental
                warnings.simplefilter("ignore")
                ax = draw(study)
        except (ValueError, RuntimeError):  # importance needs two complete trials with varied settings
            continue
        fig = ax.figure if hasattr(ax, "figure") else plt.gcf()
        fig.tight_layout()
        fig.savefig(folder / f"{name}.png", dpi=100)
        plt.close(fig)
        out.append(folder / f"{name}.png")
    return out
