"""The feedback gate's honesty: hold-out by group, intervals that refuse unsupported gains, and the
temperature that keeps a fine-tuned model's confidence calibrated."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from emolens.core.errors import ModelError
from emolens.workspace import Workspace

FAST = Path(__file__).resolve().parents[1] / "src" / "emolens" / "assets" / "fast.onnx"


@pytest.fixture
def faces(shared_datasets):
    """60 different real faces (FER2013 PublicTest) with their labels and class names."""
    val = np.load(shared_datasets / "fer2013" / "val.npz")
    pick = np.random.default_rng(3).choice(len(val["labels"]), 60, replace=False)
    return val["images"][pick], val["labels"][pick], [str(c) for c in val["classes"]]


def frames(face: np.ndarray, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``k`` near-identical frames of one face: moved by up to a pixel, brightness and noise changed."""
    out = []
    for _ in range(k):
        m = np.float32([[1, 0, rng.uniform(-1, 1)], [0, 1, rng.uniform(-1, 1)]])
        x = cv2.warpAffine(face.astype(np.float32), m, (48, 48), borderMode=cv2.BORDER_REFLECT)
        out.append(np.clip(x * rng.uniform(0.95, 1.05) + rng.normal(0, 2, x.shape), 0, 255).astype(np.uint8))
    return out


def jpeg(crop: np.ndarray, quality: int = 60) -> np.ndarray:
    """The same photo stored again: re-encoded as JPEG."""
    return cv2.imdecode(cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, quality])[1], cv2.IMREAD_UNCHANGED)


def test_sources_never_straddle_the_split_and_copies_of_a_photo_join_their_group(emolens_home, faces):
    from emolens.feedback import FeedbackService

    images, labels, classes = faces
    store = FeedbackService()
    rng = np.random.default_rng(0)
    face_of = {}
    for f, img in enumerate(images[:20]):  # frames of a clip each: its source ties them
        for crop in frames(img, 4, rng):
            face_of[store.add(crop, classes[labels[f]], predicted="happy", origin=f"clip-{f}.mp4").uid] = f
    for f, img in enumerate(images[20:40], start=20):  # a photo, then copies of it with no tie at all
        face_of[store.add(img, "sad").uid] = f
        big = cv2.resize(img, (96, 96), interpolation=cv2.INTER_CUBIC)
        for n, copy in enumerate((jpeg(img), big, np.clip(img * 1.1 + 4, 0, 255).astype(np.uint8))):
            face_of[store.add(copy, "sad", upload_session=f"s{f}-{n}").uid] = f
    for img in images[40:50]:  # different faces of one person belong together
        face_of[store.add(img, "sad", person="ana").uid] = 100

    split = store.split()
    members: dict[int, set[int]] = {}
    for r in split.train + split.holdout:
        members.setdefault(split.group[r.uid], set()).add(face_of[r.uid])
    # Every clip, every photo with its copies and the person are one group each, and no two of
    # these 41 different faces share one: the hash catches copies, never different faces.
    assert sorted(len(m) for m in members.values()) == [1] * 41
    assert split.groups("train") + split.groups("holdout") == 41 and split.moved == 0
    assert split.groups("holdout") > 0 and split.groups("train") > 0
    ds = store.dataset("holdout", classes)
    assert len(ds) == len(split.holdout)


def test_a_hash_tie_never_puts_two_people_in_one_group(emolens_home):
    """Two people whose crops hash alike (one is the other brightened) stay apart, and a copy of
    one photo stored without a tie joins the nearest, never both: on the earlier rule, hash ties
    joined all three and chained people together."""
    from emolens import Analyzer
    from emolens.feedback import FeedbackService
    from emolens.feedback.crops import analysis_crop, crop_phash
    from emolens.feedback.split import SAME_PHOTO_BITS

    results = Analyzer(model="fast")(FAST.parent / "examples" / "astronaut.jpg")
    a = cv2.cvtColor(analysis_crop(results.image, results[0]), cv2.COLOR_RGB2GRAY)
    b = np.clip(a * 1.12 + 3, 0, 255).astype(np.uint8)
    c = np.ascontiguousarray(a[:, ::-1])
    dist = (int(crop_phash(a), 16) ^ int(crop_phash(b), 16)).bit_count()
    assert 0 < dist <= SAME_PHOTO_BITS  # a hash alone would tie the two people
    store = FeedbackService()
    ra, rb = store.add(a, "sad", person="ann"), store.add(b, "happy", person="bob")
    rc = store.add(c, "sad", person="cy")
    copy_a, copy_c = store.add(jpeg(a, 90), "sad"), store.add(cv2.resize(c, (48, 48)), "sad", upload_session="x")
    split = store.split()
    g = split.group
    assert g[ra.uid] != g[rb.uid] and len({g[ra.uid], g[rb.uid], g[rc.uid]}) == 3
    assert g[copy_a.uid] == g[ra.uid] and g[copy_c.uid] == g[rc.uid]
    assert copy_a.holdout == ra.holdout and copy_c.holdout == rc.holdout  # stored on their group's side


def test_groups_follow_people_on_a_set_of_dozens_of_people(emolens_home, shared_datasets):
    """50 people of LFW, 8 frontal grey crops each, each record with its person: 50 groups of one
    person each (the earlier hash chaining merged a set like this into a few groups); copies of
    photos re-uploaded without a person land in their person's group; the held-out groups are
    the people whose key falls there."""
    from emolens.feedback import FeedbackService
    from emolens.feedback.split import is_holdout
    from emolens.store.feedback import group_key

    people_dir = shared_datasets / "identity" / "lfw" / "people"
    if not people_dir.is_dir():
        pytest.skip(f"LFW people not found at {people_dir}")
    people = sorted(p for p in people_dir.iterdir() if len(list(p.glob("*.jpg"))) >= 8)[:50]
    store = FeedbackService()
    person_of, copies = {}, {}
    for k, person in enumerate(people):
        for n, f in enumerate(sorted(person.glob("*.jpg"))[:8]):
            grey = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
            crop = cv2.resize(grey[70:180, 70:180], (96, 96), interpolation=cv2.INTER_AREA)
            rec = store.add(crop, "neutral", predicted="sad", person=person.name, upload_session=f"u{k % 3}")
            person_of[rec.uid] = person.name
            if n == 0 and k % 5 == 0:  # the same photo uploaded again, by someone who did not say who
                copies[store.add(jpeg(crop), "neutral", upload_session=f"later{k}").uid] = person.name
    split = store.split()
    members: dict[int, set[str]] = {}
    for uid, name in person_of.items():
        members.setdefault(split.group[uid], set()).add(name)
    assert len(members) == 50 and all(len(m) == 1 for m in members.values())
    for uid, name in copies.items():
        assert members[split.group[uid]] == {name}
    expected = {p.name for p in people if is_holdout(group_key(p.name, None, None))}
    held = {person_of.get(r.uid) for r in split.holdout} - {None}
    assert held == expected and split.groups("holdout") == len(expected) >= 5
    stats = store.stats()
    assert stats["holdout"] == len(split.holdout) and stats["holdout_groups"] == len(expected)


def test_gate_claims_a_gain_only_when_the_held_out_groups_support_it():
    from emolens.feedback.learn import Gates, paired_change

    gates = Gates()
    base = paired_change(np.ones(500, bool), np.ones(500, bool), np.arange(500), 0.95, 500)

    def judge(parent_ok, cand_ok, groups):
        fb = paired_change(np.asarray(parent_ok, bool), np.asarray(cand_ok, bool), np.asarray(groups), 0.95, 2000)
        return gates.check({"feedback": fb, "base": base})["feedback_improves"]

    # 6 groups of 10 faces, all fixed: a large gain, but too few independent groups to claim it.
    few = judge(np.zeros(60), np.ones(60), np.repeat(np.arange(6), 10))
    assert not few["passed"] and "6 independent group(s)" in few["why"] and few["change"] == 1.0
    # 40 groups of 10: the candidate fixes 3 faces in 20 groups and breaks 3 in 18 others. The
    # point estimate is positive (+1.5 points) but the interval reaches zero: no gain is claimed.
    groups = np.repeat(np.arange(40), 10)
    first3 = np.arange(400) % 10 < 3
    parent = first3 & (groups >= 20) & (groups < 38)
    cand = first3 & (groups < 20)
    mixed = judge(parent, cand, groups)
    assert mixed["change"] > 0 and mixed["low"] <= 0 < mixed["high"] and not mixed["passed"]
    assert "cannot show a gain" in mixed["why"]
    # A consistent gain over many groups passes, with its interval in the reason.
    steady = judge(np.zeros(400), np.arange(400) % 3 != 0, groups)
    assert steady["passed"] and steady["low"] > 0.5 and "95% CI" in steady["why"]


def test_interval_over_groups_is_wider_than_over_faces_when_faces_are_twins():
    from emolens.feedback.learn import paired_change

    rng = np.random.default_rng(1)
    per_group = rng.random(20) < 0.6  # whether the candidate fixed each group's face
    cand = np.repeat(per_group, 8)  # 8 near-identical frames of each
    parent = np.zeros_like(cand)
    grouped = paired_change(parent, cand, np.repeat(np.arange(20), 8), 0.95, 2000)
    naive = paired_change(parent, cand, np.arange(160), 0.95, 2000)
    assert grouped["change"] == naive["change"]
    assert (grouped["high"] - grouped["low"]) > 2 * (naive["high"] - naive["low"])


def test_temperature_fit_recovers_overconfidence_and_cross_fitted_ece_falls():
    from emolens.classify.emotion import softmax
    from emolens.feedback.learn import calibrate, fit_temperature

    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (3000, 7))
    y = np.array([rng.choice(7, p=p) for p in softmax(logits)])  # labels drawn from the true probabilities
    overconfident = softmax(logits * 2.5)
    assert fit_temperature(overconfident, y) == pytest.approx(2.5, rel=0.1)
    cal = calibrate(overconfident, y, np.arange(3000) // 10)
    assert cal["ece_before"] > 0.1 and cal["ece_after"] < cal["ece_before"] / 3


def test_temperature_is_stored_in_the_model_file_and_applied(tmp_path):
    from emolens.classify.emotion import EmotionModel, scale_probabilities
    from emolens.classify.modelfile import ModelMeta, annotate

    crops = np.random.default_rng(0).integers(0, 256, (5, 48, 48), dtype=np.uint8)
    raw = EmotionModel(FAST).predict(crops)
    meta = EmotionModel(FAST).meta
    meta.temperature = 2.0
    warm = annotate(FAST, meta, tmp_path / "warm.onnx")
    model = EmotionModel(warm)
    assert model.meta.temperature == 2.0
    softened = model.predict(crops)
    np.testing.assert_allclose(softened, scale_probabilities(raw, "probabilities", 2.0), atol=1e-5)
    assert (softened.argmax(1) == raw.argmax(1)).all() and softened.max(1).mean() < raw.max(1).mean()
    meta.temperature = None
    assert EmotionModel(annotate(warm, meta, tmp_path / "plain.onnx")).meta.temperature is None
    with pytest.raises(ModelError, match="temperature"):
        ModelMeta(labels=["a", "b"], input=meta.input, temperature=0.0)


def test_one_temperature_keeps_both_domains_calibrated():
    """The held-out feedback wants a sharper model (T = 0.66) while the base set is calibrated as it
    is: fitted on the feedback alone (the earlier rule) the temperature sharpened every answer and
    the base set's ECE tripled; fitted on both, neither domain's calibration gets worse."""
    from emolens.classify.emotion import scale_probabilities, softmax
    from emolens.evaluate.calibrate import expected_calibration_error as ece
    from emolens.feedback.learn import Gates, calibrate, fit_temperature

    rng = np.random.default_rng(0)

    def domain(n: int, sharpen: float):
        logits = rng.normal(0, 2, (n, 7))
        y = np.array([rng.choice(7, p=p) for p in softmax(logits)])
        return softmax(logits / sharpen), y

    base, feedback = domain(3000, 1.0), domain(400, 1.5)  # feedback: underconfident by 1.5
    alone = fit_temperature(*feedback)
    assert alone == pytest.approx(1 / 1.5, rel=0.15)
    assert ece(scale_probabilities(base[0], "probabilities", alone), base[1]) > 2 * ece(*base)  # the old harm
    both = calibrate(*feedback, np.arange(400) // 4, base=base)
    t = both["temperature"]
    assert ece(scale_probabilities(base[0], "probabilities", t), base[1]) <= ece(*base) + 0.005
    assert both["ece_after"] <= both["ece_before"] + 0.005
    # Both overconfident (base by 1.3, feedback by 2.5): one temperature improves both.
    base, feedback = domain(3000, 1 / 1.3), domain(400, 1 / 2.5)
    t = fit_temperature(*feedback, base)
    assert t == pytest.approx(1.3, rel=0.1)  # as far as the nearer domain's best, no further
    for p, y in (base, feedback):
        assert ece(scale_probabilities(p, "probabilities", t), y) < ece(p, y) * 0.75
    # And the gate on the base set's calibration, as on its accuracy.
    change = {"change": 0.0, "low": -0.01, "high": 0.01, "groups": 20, "n": 100}
    verdict = Gates().check({"feedback": change, "base": change}, {"base_ece_parent": 0.043, "base_ece_after": 0.132})
    gate = verdict["base_calibration_holds"]
    assert not gate["passed"] and "0.043 → 0.132" in gate["why"]


def test_an_uncertain_answer_can_be_corrected(emolens_home, tmp_path):
    """A face the analyzer calls "uncertain" (a blurred photo) is stored with its top class and
    the flag, through the CLI and the service; "uncertain" itself is no correction label."""
    from typer.testing import CliRunner

    from emolens import Analyzer
    from emolens.cli import app
    from emolens.core.errors import BadLabelError
    from emolens.feedback import FeedbackService

    blurred = tmp_path / "blurred.jpg"
    cv2.imwrite(str(blurred), cv2.GaussianBlur(cv2.imread(str(FAST.parent / "examples" / "astronaut.jpg")), (0, 0), 6))
    face = Analyzer(model="fast")(blurred)[0]
    assert face.label == "uncertain"
    r = CliRunner().invoke(app, ["feedback", "add", str(blurred), "--face", "0", "--label", "sad", "--model", "fast"])
    assert r.exit_code == 0, r.output
    assert f"corrected uncertain ({face.top_label}) → sad" in r.output and "held out for judging" in r.output
    store = FeedbackService()
    rec = store.list()[0]
    assert (rec.predicted, rec.uncertain, rec.label, rec.is_correction) == (face.top_label, True, "sad", True)
    assert rec.model_version == "fast"
    crop = store.crop(rec)
    other = store.add(crop, "angry", predicted="uncertain", probs={"happy": 0.4, "sad": 0.35, "angry": 0.25})
    assert (other.predicted, other.uncertain, other.is_correction) == ("happy", True, True)
    confirmed = store.add(crop, correct=True, predicted="uncertain", probs={"happy": 0.4, "sad": 0.6})
    assert (confirmed.label, confirmed.uncertain, confirmed.is_correction) == ("sad", True, False)
    with pytest.raises(BadLabelError, match="unknown emotion 'uncertain'"):
        store.add(crop, "uncertain", predicted="happy")


def test_the_base_model_is_the_one_the_corrections_were_made_against(emolens_home):
    from emolens.core.errors import RefusedError
    from emolens.feedback.learn import choose_base

    reg = Workspace.default().registry
    version, named, why = choose_base({"accurate": 5, "v1": 2, "": 1}, reg)
    assert named == "accurate" and "5 of 8 correction(s)" in why and "(the active one: fast)" in why
    assert version.name == "v2" and version.source == "shipped:accurate" and reg.active_name() == "v1"
    # Corrections made against the active version, or what it came from, count for it.
    version, named, why = choose_base({"fast": 3, "v1": 2, "accurate": 4}, reg)
    assert (version.name, named) == ("v1", "v1") and "the active model: 5 of 9 correction(s)" in why
    assert choose_base({"fast": 3}, reg, base="v2")[0].name == "v2"
    assert choose_base({}, reg, base="accurate")[0].name == "v2"  # registered once, not again
    with pytest.raises(RefusedError, match="one named model"):
        choose_base({"fast+accurate": 9}, reg)


def test_too_few_held_out_groups_are_refused_before_training(emolens_home, faces):
    from emolens.core.errors import RefusedError
    from emolens.feedback import FeedbackService
    from emolens.feedback.learn import finetune_from_feedback

    images, labels, classes = faces
    store = FeedbackService()
    for n, img in enumerate(images[:30]):  # corrections of `accurate`'s answers, on 6 people
        store.add(img, classes[labels[n]], predicted="happy", person=f"p{n % 6}", model_version="accurate")
    stats = store.stats(labels=list(classes))
    assert stats["holdout_groups"] < 10 and stats["by_model"] == {"accurate": stats["corrections"]}
    few = f"from {stats['holdout_groups']} independent group.*before fine-tuning accurate, before training"
    with pytest.raises(RefusedError, match=few):
        finetune_from_feedback(
            store,
            Workspace.default().registry,
            replay="never-read.npz",
            base_val="never-read.npz",
            min_feedback=10,
            progress=False,
        )
    # The model the corrections were made against is the base (registered after the default),
    # not the active one; nothing was trained.
    versions = Workspace.default().registry.versions()
    assert [(v.name, v.source) for v in versions] == [("v1", "shipped:fast"), ("v2", "shipped:accurate")]
