"""Recognition: who an embedding belongs to, or "unknown"; and how sure the threshold can be.

Pure numpy/scikit-learn on unit vectors, no database. Three classifiers share one interface
(``fit(X, y)``, ``scores(X) -> (predicted class index, confidence)``):

- ``centroid``: cosine similarity to each person's mean vector; confidence = that similarity
  calibrated into a probability of being the right person (raw similarities crowd into a narrow
  band, 0.84-0.97 for dlib's, and the right cut depends on how many people are enrolled): a
  logistic fit on the training's held-out probes, or the embedder's fit on LFW pairs when the
  training set is too small for one;
- ``knn``: cosine k-nearest neighbours, votes weighted by similarity; confidence = the mean
  similarity of the winner's neighbours, calibrated likewise;
- ``svm``: standardised embeddings, one-vs-rest linear SVMs with balanced class weights and
  Platt probabilities (the seed's recipe); confidence = the winner's probability.

A face is accepted as the predicted person only when the confidence reaches the threshold AND
its cosine similarity to the nearest enrolled face of that person reaches ``min_similarity``:
SVM probabilities are relative to the enrolled people and can be high for a stranger who
merely looks more like one of them than like the others; the similarity check is absolute.

``analyze`` chooses the classifier by cross-validation and measures the threshold: out-of-fold
predictions of enrolled people (accuracy, coverage, false rejects) and, with people held out
of training entirely, of people never enrolled (false accepts).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from emolens.core.errors import EmoLensError, RefusedError, require

KINDS = ("centroid", "knn", "svm")  # ties in cross-validation go to the earlier, cheaper one
SIMILARITY_KINDS = ("centroid", "knn")  # their confidence is a calibrated cosine similarity
THRESHOLDS = tuple(round(0.50 + 0.01 * i, 2) for i in range(49))  # 0.50 ... 0.98
TARGET_FAR = 0.01  # recommended threshold: at most 1% of never-enrolled people accepted...
TARGET_ACCURACY = 0.99  # ...and at least 99% of the accepted enrolled faces named correctly


def _normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def calibrate(sim: np.ndarray, calibration: Sequence[float] | None) -> np.ndarray:
    """P(same person) from a cosine similarity: sigmoid(scale * (sim - offset)); raw if None."""
    if calibration is None:
        return sim
    scale, offset = calibration
    return 1.0 / (1.0 + np.exp(-scale * (np.asarray(sim, np.float64) - offset)))


class CentroidClassifier:
    kind = "centroid"

    def __init__(self, calibration: Sequence[float] | None = None):
        self.calibration = calibration
        self.centroids: np.ndarray | None = None

    def fit(self, X: np.ndarray, y: np.ndarray) -> CentroidClassifier:
        n = int(y.max()) + 1
        self.centroids = _normalize(np.stack([X[y == c].mean(0) for c in range(n)]))
        return self

    def scores(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sims = X @ self.centroids.T
        pred = sims.argmax(1)
        return pred, calibrate(sims[np.arange(len(X)), pred], self.calibration)


class KnnClassifier:
    kind = "knn"

    def __init__(self, k: int = 3, calibration: Sequence[float] | None = None):
        self.k, self.calibration = int(k), calibration
        self.X: np.ndarray | None = None
        self.y: np.ndarray | None = None
        self.n = 0

    def fit(self, X: np.ndarray, y: np.ndarray) -> KnnClassifier:
        self.X, self.y, self.n = X, y, int(y.max()) + 1
        return self

    def scores(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sims = X @ self.X.T
        k = min(self.k, sims.shape[1])
        idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        top = np.take_along_axis(sims, idx, 1)
        labels = self.y[idx]
        votes = np.zeros((len(X), self.n), dtype=np.float64)
        np.add.at(votes, (np.repeat(np.arange(len(X)), k), labels.ravel()), np.clip(top, 0, None).ravel())
        # A tie of votes (k=3, three people) goes to the single nearest neighbour.
        votes[np.arange(len(X)), labels[np.arange(len(X)), top.argmax(1)]] += 1e-9
        pred = votes.argmax(1)
        mask = labels == pred[:, None]
        conf = (top * mask).sum(1) / np.maximum(mask.sum(1), 1)
        return pred, calibrate(conf, self.calibration)


class SvmClassifier:
    kind = "svm"

    def __init__(self, C: float = 0.1):
        self.C = float(C)
        self.model = None

    def fit(self, X: np.ndarray, y: np.ndarray) -> SvmClassifier:
        require("sklearn", "identity", "scikit-learn")
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import LinearSVC

        # One-vs-rest linear SVMs with balanced class weights, Platt (sigmoid) probabilities fitted
        # on cross-validated decision values, then refitted on all faces. Measured on LFW (423
        # people): SVC(probability=True), the seed's choice, is deprecated in scikit-learn 1.9 and
        # its replacement, calibrating SVC's one-vs-one votes, ranks the right person first only
        # 31% of the time; this ranks 96% right, and C=0.1 beat C=1 by a point. Folds never ask
        # for more faces than the smallest person has; unshuffled, they make a refit identical.
        folds = int(min(5, np.bincount(y).min()))
        svm = LinearSVC(C=self.C, class_weight="balanced", dual="auto", max_iter=5000)
        calibrated = CalibratedClassifierCV(svm, method="sigmoid", cv=folds, ensemble=False)
        with warnings.catch_warnings():  # many people, few faces each: by design, not a regression problem
            warnings.filterwarnings("ignore", message="The number of unique classes is greater than 50%")
            self.model = make_pipeline(StandardScaler(), calibrated).fit(X, y)
        return self

    def scores(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        proba = self.model.predict_proba(X)
        best = proba.argmax(1)
        return self.model.classes_[best], proba[np.arange(len(X)), best]


def make_classifier(kind: str, params: dict | None = None):
    classes = {"centroid": CentroidClassifier, "knn": KnnClassifier, "svm": SvmClassifier}
    if kind not in classes:
        raise EmoLensError(f"unknown classifier {kind!r}; choose one of: auto, {', '.join(KINDS)}")
    return classes[kind](**(params or {}))


def default_params(kind: str, calibration: Sequence[float] | None = None) -> dict:
    cal = {} if calibration is None else {"calibration": [float(v) for v in calibration]}
    return {"centroid": cal, "knn": {"k": 3} | cal, "svm": {"C": 0.1}}[kind]


def usable_kinds(y: np.ndarray) -> list[str]:
    """Classifiers that can be fitted on labels ``y``: the SVM needs two people with at least two
    faces each (its Platt scaling cross-validates); the others work with any gallery."""
    counts = np.bincount(np.unique(y, return_inverse=True)[1])
    return ["centroid", "knn"] + (["svm"] if len(counts) >= 2 and counts.min() >= 2 else [])


def candidate_kinds(y: np.ndarray) -> list[str]:
    """Classifiers worth cross-validating on ``y``: every fold must be able to fit the real thing
    (not fall back to centroid), so the SVM needs 3 people with 3 faces each; k-NN with one face
    per person is only a noisier nearest-centroid."""
    counts = np.bincount(np.unique(y, return_inverse=True)[1])
    kinds = ["centroid"]
    if counts.min() >= 2:
        kinds.append("knn")
    if counts.min() >= 3 and len(counts) >= 3:
        kinds.append("svm")
    return kinds


@dataclass
class Prediction:
    label: np.ndarray  # the predicted class label (as given to fit), whether accepted or not
    confidence: np.ndarray
    similarity: np.ndarray  # cosine similarity to the nearest enrolled face of that label
    accepted: np.ndarray  # bool: confidence >= threshold and similarity >= min_similarity


class Recognizer:
    """A fitted classifier plus the gallery of enrolled vectors and the two acceptance limits."""

    def __init__(self, kind: str, params: dict | None = None, threshold: float = 0.5, min_similarity: float = 0.0):
        self.kind, self.params = kind, dict(params or {})
        self.threshold, self.min_similarity = float(threshold), float(min_similarity)
        self.classes_: np.ndarray | None = None
        self.fit_seconds = 0.0

    def fit(self, X: np.ndarray, y: np.ndarray) -> Recognizer:
        X = _normalize(X)
        if len(X) == 0:
            raise EmoLensError("no enrolled faces to train on; enroll people first")
        self.classes_, yi = np.unique(np.asarray(y), return_inverse=True)
        order = np.argsort(yi, kind="stable")
        self.gallery, gallery_y = X[order], yi[order]
        self._starts = np.flatnonzero(np.r_[True, gallery_y[1:] != gallery_y[:-1]])
        t0 = time.perf_counter()
        # Too few people or faces for the chosen kind (one person enrolled, or an SVM version restored
        # after people were removed): nearest-centroid works with any gallery.
        kind = self.kind if self.kind in usable_kinds(yi) else "centroid"
        self.effective_kind = kind
        self.classifier = make_classifier(kind, self.params if kind == self.kind else None).fit(X, yi)
        self.fit_seconds = time.perf_counter() - t0
        return self

    def class_similarity(self, X: np.ndarray) -> np.ndarray:
        """(n, n_classes): cosine similarity of each vector to each class's nearest enrolled vector."""
        return np.maximum.reduceat(_normalize(X) @ self.gallery.T, self._starts, axis=1)

    def predict(self, X: np.ndarray, threshold: float | None = None, min_similarity: float | None = None):
        X = _normalize(np.atleast_2d(X))
        if len(X) == 0:
            empty = np.zeros(0)
            return Prediction(self.classes_[:0], empty, empty, empty.astype(bool))
        idx, conf = self.classifier.scores(X)
        sim = self.class_similarity(X)[np.arange(len(X)), idx]
        t = self.threshold if threshold is None else threshold
        m = self.min_similarity if min_similarity is None else min_similarity
        return Prediction(self.classes_[idx], conf.astype(np.float64), sim.astype(np.float64), (conf >= t) & (sim >= m))


# ---------------------------------------------------------------- threshold analysis


@dataclass
class Probes:
    """Held-out predictions: genuine ones (enrolled people, ``true`` known) or impostors (true=None)."""

    pred: np.ndarray
    conf: np.ndarray
    sim: np.ndarray
    true: np.ndarray | None = None

    def calibrated(self, calibration: Sequence[float] | None) -> Probes:
        return Probes(self.pred, calibrate(self.conf, calibration), self.sim, self.true)

    @staticmethod
    def concat(parts: Sequence[Probes]) -> Probes | None:
        parts = [p for p in parts if p is not None and len(p.pred)]
        if not parts:
            return None
        true = None if parts[0].true is None else np.concatenate([p.true for p in parts])
        return Probes(*(np.concatenate([getattr(p, k) for p in parts]) for k in ("pred", "conf", "sim")), true=true)


def _probe(rec: Recognizer, X: np.ndarray, true: np.ndarray | None = None) -> Probes:
    p = rec.predict(X)
    return Probes(p.label, p.confidence, p.similarity, true)


def closed_set_probes(X, y, kind, params, folds, seed) -> Probes | None:
    """Out-of-fold predictions of every enrolled face (stratified folds), or None if a person has
    a single face (nothing of theirs could be held out)."""
    from sklearn.model_selection import StratifiedKFold

    counts = np.bincount(np.unique(y, return_inverse=True)[1])
    n_splits = min(folds, int(counts.min()))
    if n_splits < 2:
        return None
    parts = []
    split = StratifiedKFold(n_splits, shuffle=True, random_state=seed)
    for tr, te in split.split(X, y):
        rec = Recognizer(kind, params).fit(X[tr], y[tr])
        parts.append(_probe(rec, X[te], y[te]))
    return Probes.concat(parts)


def open_set_probes(X, y, kind, params, folds, seed) -> Probes | None:
    """Predictions for people held out of training entirely: how often is a never-enrolled person
    taken for someone? People are split into groups; each group is probed against a recognizer
    trained on everyone else. None with fewer than two people."""
    people = np.unique(y)
    if len(people) < 2:
        return None
    rng = np.random.default_rng(seed)
    groups = np.array_split(rng.permutation(people), min(folds, len(people)))
    parts = []
    for g in groups:
        held = np.isin(y, g)
        rec = Recognizer(kind, params).fit(X[~held], y[~held])
        parts.append(_probe(rec, X[held]))
    return Probes.concat(parts)


def fit_calibration(
    genuine: Probes | None,
    impostor: Probes | None,
    prior: Sequence[float] | None = None,
    target_far: float = TARGET_FAR,
) -> Sequence[float] | None:
    """(scale, offset) turning a similarity into P(this is the right person), fitted by logistic
    regression on held-out probes: enrolled faces named right are positives; people never
    enrolled, and enrolled faces named wrong, negatives (classes weighted equally). It adapts the
    confidence to the gallery: the more people enrolled, the closer a stranger's best match, the
    higher the similarity needed.

    With one face per person nothing enrolled can be held out: the slope stays the embedder's
    (``prior``, fitted on LFW pairs) and the midpoint moves up to the similarity that only
    ``target_far`` of the held-out people reach, if that is higher than the prior's. Without
    any probes, ``prior``."""
    if genuine is None and impostor is not None and prior is not None and len(impostor.conf) >= 2:
        cut = float(np.quantile(impostor.conf, 1 - target_far))
        return prior[0], max(float(prior[1]), cut)
    if genuine is None or impostor is None:
        return prior
    right = genuine.pred == genuine.true
    pos, neg = genuine.conf[right], np.r_[impostor.conf, genuine.conf[~right]]
    if len(pos) < 2 or len(neg) < 2:
        return prior
    from sklearn.linear_model import LogisticRegression

    x = np.r_[pos, neg].astype(np.float64)
    mu, sd = x.mean(), max(x.std(), 1e-6)
    target = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    # Standardised input, default L2 penalty: a tiny gallery gets a gentle slope, not a step.
    lr = LogisticRegression(class_weight="balanced").fit(((x - mu) / sd)[:, None], target)
    coef, icpt = float(lr.coef_[0, 0]), float(lr.intercept_[0])
    if coef <= 0:  # strangers look closer than the enrolled: no usable fit
        return prior
    return coef / sd, mu - icpt * sd / coef


def threshold_table(
    genuine: Probes | None, impostor: Probes | None, min_similarity: float, thresholds: Sequence[float] = THRESHOLDS
) -> list[dict]:
    """Per threshold: coverage (enrolled faces accepted), accuracy among them, identification rate
    (accepted and right), false reject rate, misidentification rate; false accept rate on people
    never enrolled. A figure is None where its probes are missing."""
    rows = []
    for t in thresholds:
        row: dict = {"threshold": round(float(t), 2)}
        if genuine is not None:
            acc = (genuine.conf >= t) & (genuine.sim >= min_similarity)
            right = genuine.pred == genuine.true
            n_acc = int(acc.sum())
            row |= {
                "coverage": n_acc / len(acc),
                "accuracy": float(right[acc].mean()) if n_acc else None,
                "identification_rate": float((acc & right).mean()),
                "false_reject_rate": 1 - n_acc / len(acc),
                "misidentification_rate": float((acc & ~right).mean()),
            }
        if impostor is not None:
            row["false_accept_rate"] = float(((impostor.conf >= t) & (impostor.sim >= min_similarity)).mean())
        rows.append(row)
    return rows


def _balance(row: dict) -> float:
    """Open-set score: the mean of the identification rate (enrolled faces accepted and named
    right) and the true reject rate (never-enrolled faces rejected), whichever are known."""
    parts = []
    if "identification_rate" in row:
        parts.append(row["identification_rate"])
    if "false_accept_rate" in row:
        parts.append(1 - row["false_accept_rate"])
    return float(np.mean(parts)) if parts else 0.0


def recommend(
    table: list[dict], target_far: float = TARGET_FAR, target_accuracy: float = TARGET_ACCURACY
) -> tuple[dict, str]:
    """The lowest threshold with the highest identification rate among those meeting both targets
    (false accept rate, accuracy of accepted faces); if none does, the best open-set balance."""
    if not table or len(table[0]) == 1:
        return table[0], "nothing could be held out (one face per person and a single person): lowest threshold"

    def meets(r: dict) -> bool:
        far_ok = r.get("false_accept_rate") is None or r["false_accept_rate"] <= target_far
        acc_ok = r.get("accuracy") is None or r["accuracy"] >= target_accuracy
        return far_ok and acc_ok

    ok = [r for r in table if meets(r)]
    if ok:
        best = max(ok, key=lambda r: (r.get("identification_rate", 0.0), -r["threshold"]))
        return best, f"highest identification rate with false accept rate <= {target_far:.0%} and accuracy >= " + (
            f"{target_accuracy:.0%}"
        )
    best = max(table, key=lambda r: (_balance(r), -r["threshold"]))
    return best, f"no threshold meets false accept rate <= {target_far:.0%} and accuracy >= " + (
        f"{target_accuracy:.0%}: best balance of identification and rejection instead"
    )


@dataclass
class KindResult:
    kind: str
    params: dict
    cv_accuracy: float | None  # closed-set, before any threshold
    score: float  # open-set balance at its recommended threshold: what the choice is made on
    threshold: float
    reason: str
    table: list[dict]
    genuine: Probes | None = field(repr=False, default=None)
    impostor: Probes | None = field(repr=False, default=None)
    seconds: float = 0.0


@dataclass
class Analysis:
    chosen: KindResult
    candidates: list[KindResult]
    min_similarity: float
    folds: int
    n_faces: int
    n_people: int

    @property
    def at_threshold(self) -> dict:
        return next(r for r in self.chosen.table if r["threshold"] == self.chosen.threshold)


def evaluate_kind(
    X: np.ndarray,
    y: np.ndarray,
    kind: str,
    min_similarity: float,
    folds: int = 5,
    seed: int = 0,
    strangers: np.ndarray | None = None,
    target_far: float = TARGET_FAR,
    target_accuracy: float = TARGET_ACCURACY,
    params: dict | None = None,
) -> KindResult:
    t0 = time.perf_counter()
    params = default_params(kind) if params is None else dict(params)
    prior = params.pop("calibration", None)  # similarity kinds: probed raw, calibrated below
    genuine = closed_set_probes(X, y, kind, params, folds, seed)
    impostor = open_set_probes(X, y, kind, params, folds, seed)
    if strangers is not None and len(strangers):
        impostor = Probes.concat([impostor, _probe(Recognizer(kind, params).fit(X, y), strangers)])
    if kind in SIMILARITY_KINDS:
        cal = fit_calibration(genuine, impostor, prior, target_far)
        genuine, impostor = (None if p is None else p.calibrated(cal) for p in (genuine, impostor))
        if cal is not None:
            params["calibration"] = [round(float(v), 6) for v in cal]
    table = threshold_table(genuine, impostor, min_similarity)
    row, reason = recommend(table, target_far, target_accuracy)
    cv_acc = None if genuine is None else float((genuine.pred == genuine.true).mean())
    return KindResult(
        kind, params, cv_acc, _balance(row), row["threshold"], reason, table, genuine, impostor,
        time.perf_counter() - t0,
    )  # fmt: skip


def analyze(
    X: np.ndarray,
    y: np.ndarray,
    kinds: str | Sequence[str] = "auto",
    min_similarity: float = 0.0,
    folds: int = 5,
    seed: int = 0,
    strangers: np.ndarray | None = None,
    target_far: float = TARGET_FAR,
    target_accuracy: float = TARGET_ACCURACY,
    calibration: Sequence[float] | None = None,
    progress: Callable[[str], None] | None = None,
) -> Analysis:
    """Cross-validate each usable classifier, measure its threshold table, choose the best by the
    open-set balance at its recommended threshold (ties: the cheaper)."""
    require("sklearn", "identity", "scikit-learn")
    X, y = _normalize(X), np.asarray(y)
    if len(X) == 0:
        raise RefusedError("no enrolled faces to train on; enroll people first")
    usable = candidate_kinds(y)
    wanted = list(KINDS) if kinds == "auto" else [kinds] if isinstance(kinds, str) else list(kinds)
    for k in wanted:
        if k not in KINDS:
            raise EmoLensError(f"unknown classifier {k!r}; choose one of: auto, {', '.join(KINDS)}")
    if isinstance(kinds, str) and kinds != "auto" and kinds not in usable:  # asked for by name: say why not
        raise RefusedError(
            f"cannot cross-validate {kinds} on these faces: k-NN needs 2 "
            "faces per person, the SVM 3 people with 3 faces each; enroll more photos or use 'auto'"
        )
    candidates = [k for k in wanted if k in usable] or ["centroid"]
    results = []
    for k in candidates:
        if progress:
            progress(k)
        params = default_params(k, calibration)
        results.append(
            evaluate_kind(X, y, k, min_similarity, folds, seed, strangers, target_far, target_accuracy, params)
        )
    best = max(results, key=lambda r: (round(r.score, 4), -KINDS.index(r.kind)))
    return Analysis(best, results, min_similarity, folds, len(X), len(np.unique(y)))
