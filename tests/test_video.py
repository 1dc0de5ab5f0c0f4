"""Video: tracks and ids on clips made from real face photos, timelines, broken files, dropped streams."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest

from emolens.core.errors import EmoLensError
from emolens.pipeline.results import FaceResult, Results
from emolens.video import LiveSession, Timeline, VideoAnalyzer, VideoSource, VideoSourceError, analyze_video
from emolens.video.smooth import EmaSmoother, WindowSmoother, make_smoother
from emolens.video.synthetic import astronaut_patch, background, compose_clip, face_patch, render
from emolens.video.track import Tracker, assign, hungarian, iou_matrix
from emolens.video.writer import AnnotatedVideoWriter
from emolens.workspace import Workspace

FRAMES, FPS = 60, 25.0


# -- clips -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shared_analyzer():
    """One video-tuned Analyzer for the module: the models load once."""
    return VideoAnalyzer(threads=2).warmup().analyzer


def make(analyzer, **options) -> VideoAnalyzer:
    return VideoAnalyzer(analyzer, **options)


@pytest.fixture(scope="module")
def two_faces(tmp_path_factory):
    """The astronaut twice (one mirrored, smaller), crossing the frame on paths that never meet."""
    path = tmp_path_factory.mktemp("clips") / "two.mp4"
    patches = [astronaut_patch(140), astronaut_patch(110, mirror=True)]
    truth = compose_clip(path, patches, [(10, 20), (500, 330)], [(330, 60), (150, 300)], FRAMES, fps=FPS, wobble=10)
    return path, truth


@pytest.fixture(scope="module")
def two_faces_run(two_faces, shared_analyzer):
    """The two-face clip analysed once with the defaults (detect every 3 frames), for several tests."""
    run = make(shared_analyzer, detect_every=3).run(two_faces[0])
    return run, list(run)


def owner(box: np.ndarray, truth_frame: np.ndarray) -> int:
    """Which pasted photo a detected face lies in (its centre inside exactly one patch)."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    inside = [i for i, (x1, y1, x2, y2) in enumerate(truth_frame) if x1 <= cx <= x2 and y1 <= cy <= y2]
    assert len(inside) == 1, f"face at {box.round()} is not inside exactly one pasted photo"
    return inside[0]


def ids_per_face(results: list[Results], truth: np.ndarray) -> dict[int, set[int]]:
    seen: dict[int, set[int]] = {}
    for res in results:
        for f in res:
            seen.setdefault(owner(f.box, truth[res.frame_index]), set()).add(f.track_id)
    return seen


def assert_one_id_each(results: list[Results], truth: np.ndarray) -> None:
    """Every pasted face got exactly one id for the whole clip, and no two share one."""
    seen = ids_per_face(results, truth)
    n = truth.shape[1]
    assert sorted(seen) == list(range(n)) and all(len(ids) == 1 for ids in seen.values()), seen
    assert sorted(next(iter(ids)) for ids in seen.values()) == list(range(1, n + 1)), seen


# -- tracking on real faces ------------------------------------------------------------------
@pytest.mark.parametrize(("every", "flow"), [(1, True), (3, True), (5, True), (3, False)])
def test_two_faces_keep_two_stable_ids(two_faces, two_faces_run, shared_analyzer, every, flow):
    """Detection every frame, or every N with optical flow (or only constant velocity) between."""
    path, truth = two_faces
    if every == 3 and flow:
        run, results = two_faces_run
    else:  # the one-call API
        run = analyze_video(path, analyzer=shared_analyzer, detect_every=every, flow=flow)
        results = list(run)
    assert [r.frame_index for r in results] == list(range(FRAMES))
    assert results[10].timestamp == pytest.approx(10 / FPS)
    assert all(len(r) == 2 for r in results), [len(r) for r in results]  # both faces, every frame, from frame 0
    assert_one_id_each(results, truth)  # one id per person for the whole clip, no switch
    assert all(f.label and abs(sum(f.probs.values()) - 1) < 1e-4 for r in results for f in r)
    assert all(set(f.raw_probs) == set(f.probs) for r in results for f in r)
    assert run.stats.undecodable == 0 and run.stats.ended_early is None and run.stats.frames_read == FRAMES
    detected = sum("detect" in r.timings_ms for r in results)
    assert detected == -(-FRAMES // every)  # detection ran exactly every N frames: tracking never lost a face


def test_followed_boxes_stay_on_the_faces(two_faces, shared_analyzer):
    """Between detections the boxes are carried by optical flow: they must move with the faces."""
    path, truth = two_faces
    va = make(shared_analyzer, detect_every=5)
    for res in va.run(path):
        for f in res:
            x1, y1, x2, y2 = truth[res.frame_index, owner(f.box, truth[res.frame_index])]
            # the face sits in the upper middle of its photo; the box centre never strays from it
            cx, cy = (f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2
            assert abs(cx - (x1 + x2) / 2) < 0.2 * (x2 - x1)
            assert y1 < cy < y2


def test_timeline_csv_json_and_plot(two_faces_run, tmp_path):
    run, results = two_faces_run
    timeline = Timeline(run.analyzer.labels, run.source.name, run.fps)
    for res in results:
        timeline.add(res)
    timeline.to_csv(tmp_path / "t.csv")
    timeline.to_json(tmp_path / "t.json", stats=run.stats.to_dict())
    with open(tmp_path / "t.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 * FRAMES
    for tid in ("1", "2"):
        frames = [int(r["frame"]) for r in rows if r["track_id"] == tid]
        assert frames == list(range(FRAMES))  # one row per track per frame
    labels = run.analyzer.labels
    assert {f"p_{k}" for k in labels} | {f"raw_{k}" for k in labels} <= set(rows[0])
    doc = json.loads((tmp_path / "t.json").read_text())
    assert doc["frames_analyzed"] == FRAMES and doc["fps"] == FPS and doc["stats"]["undecodable"] == 0
    assert [t["track_id"] for t in doc["tracks"]] == [1, 2]
    for t in doc["tracks"]:
        assert t["frames"] == FRAMES and len(t["timeline"]) == FRAMES
        assert t["first_frame"] == 0 and t["last_frame"] == FRAMES - 1
        assert t["end_s"] == pytest.approx((FRAMES - 1) / FPS)
        assert t["dominant"] in labels and abs(sum(t["mean_probs"].values()) - 1) < 1e-3
    pytest.importorskip("matplotlib")
    png = timeline.plot(tmp_path / "t.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_annotated_video_is_readable_with_every_frame(two_faces_run, tmp_path):
    run, results = two_faces_run
    target = tmp_path / "out" / "annotated.mp4"
    with AnnotatedVideoWriter(target, run.fps) as writer:
        for res in results:
            writer.write(res, overlay="30 FPS")
    assert not list(target.parent.glob(".*part*"))  # the temporary name is gone
    cap = cv2.VideoCapture(str(target))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == FRAMES and cap.get(cv2.CAP_PROP_FRAME_WIDTH) == 640


def test_three_people_from_lfw(shared_datasets, shared_analyzer, tmp_path):
    """Three different real people, three paths, three ids."""
    from emolens.image.io import load_image

    people = shared_datasets / "identity" / "lfw" / "people"
    names = ["Al_Gore", "Adrien_Brody", "Ai_Sugiyama"]
    files = [next(iter(sorted((people / n).glob("*.jpg")))) for n in names if (people / n).is_dir()]
    if len(files) < 3:
        pytest.skip("the three LFW people are not there")
    patches = [face_patch(load_image(f), (50, 40, 200, 190), 130) for f in files]
    truth = compose_clip(
        tmp_path / "three.mp4", patches, [(0, 10), (250, 330), (500, 20)], [(200, 40), (480, 320), (320, 200)], FRAMES
    )
    results = list(make(shared_analyzer, detect_every=3).run(tmp_path / "three.mp4"))
    assert_one_id_each(results, truth)
    assert sum(len(r) for r in results) >= 3 * FRAMES - 3  # a miss or two at most


def test_live_session_takes_encoded_frames(two_faces, shared_analyzer):
    path, truth = two_faces
    session = LiveSession(shared_analyzer, smoothing=0.5)
    cap = cv2.VideoCapture(str(path))
    results = []
    for _ in range(0, FRAMES, 3):  # a page sends a few frames a second: every third frame
        for _ in range(3):
            ok, bgr = cap.read()
        results.append(session.process(cv2.imencode(".jpg", bgr)[1].tobytes()))
    assert [r.frame_index for r in results] == list(range(len(results)))
    assert all(len(r) == 2 for r in results)
    assert {f.track_id for r in results for f in r} == {1, 2}
    doc = results[-1].to_dict()
    assert {f["track_id"] for f in doc["faces"]} == {1, 2} and "raw_probs" in doc["faces"][0]
    with pytest.raises(EmoLensError):
        session.process(b"not a jpeg")
    elsewhere = render(background(640, 480), [astronaut_patch(140)], [(100, 100)])  # an RGB array this time
    assert len(session.process(elsewhere)) == 0  # someone new must be seen twice before being shown
    assert [f.track_id for f in session.process(elsewhere)] == [3]
    session.reset()
    assert session.frames == 0


def test_video_analyzer_runs_the_registrys_active_version(emolens_home, monkeypatch, tmp_path):
    """`active` resolves as in images: the registry's active version, named in the results."""
    from emolens.core.settings import Settings
    from emolens.workspace import get_settings

    version = Workspace.default().registry.promote("fast-int8")  # v1 is the shipped default, v2 this one
    frame = render(background(320, 240), [astronaut_patch(140)], [(80, 40)])
    va = VideoAnalyzer(detect_every=1)
    assert va.process(frame).model == version.name == "v2" and va.model.path == version.path
    # Given the settings of this home, the process's home elsewhere does not matter.
    monkeypatch.setenv("EMOLENS_HOME", str(tmp_path / "elsewhere"))
    get_settings.cache_clear()
    va = VideoAnalyzer(detect_every=1, settings=Settings(home=emolens_home))
    assert va.process(frame).model == "v2" and va.model.path == version.path


def test_smoothing_steadies_a_flickering_face():
    rng = np.random.default_rng(0)
    readings = np.where(rng.random((200, 1)) < 0.5, [0.7, 0.3], [0.3, 0.7])  # two labels, flipping at random
    for smoother in (EmaSmoother(0.2), WindowSmoother(8)):
        out = np.array([smoother.update(1, p) for p in readings])
        assert np.allclose(out.sum(1), 1)
        flips_raw = np.sum(np.diff(readings.argmax(1)) != 0)
        flips = np.sum(np.diff(out.argmax(1)) != 0)
        assert flips < flips_raw / 2 and out[20:].std() < readings.std() / 2
    ema = EmaSmoother(0.25)
    assert ema.update(7, [1.0, 0.0]).tolist() == [1.0, 0.0]  # the first reading is taken as it is
    assert ema.update(7, [0.0, 1.0]).tolist() == [0.75, 0.25]
    ema.forget(7)
    assert ema.update(7, [0.0, 1.0]).tolist() == [0.0, 1.0]
    assert WindowSmoother(2).update(1, [1, 0]).tolist() == [1, 0]
    assert isinstance(make_smoother(window=4), WindowSmoother) and make_smoother(0.5).alpha == 0.5
    with pytest.raises(ValueError):
        make_smoother(0.5, 3)
    with pytest.raises(ValueError):
        EmaSmoother(0.0)


# -- the tracker alone -----------------------------------------------------------------------
class _Face:
    def __init__(self, box, score=0.9):
        self.box, self.score, self.landmarks = np.array(box, np.float32), score, None


def test_tracker_birth_death_and_ids():
    tr = Tracker(min_hits=2, max_misses=1)
    tr.update([_Face([0, 0, 50, 50])], 0)  # present at the start: shown at once
    assert [t.id for t in tr.visible()] == [1]
    tr.update([_Face([2, 0, 52, 50]), _Face([300, 300, 340, 340])], 1)  # a newcomer must prove itself
    assert [t.id for t in tr.visible()] == [1] and len(tr.tracks) == 2
    tr.update([_Face([4, 0, 54, 50]), _Face([302, 300, 342, 340])], 2)
    assert sorted(t.id for t in tr.visible()) == [1, 2]
    tr.update([_Face([303, 300, 343, 340])], 3)  # #1 missed once: kept, not shown
    assert [t.id for t in tr.visible()] == [2] and len(tr.tracks) == 2
    tr.update([_Face([304, 300, 344, 340]), _Face([150, 150, 190, 190])], 4)  # missed twice: ended
    assert [t.id for t in tr.tracks if t.id] == [2]
    tr.update([_Face([305, 300, 345, 340])], 5)  # a one-off detection (a false positive) never gets an id
    assert [t.id for t in tr.tracks] == [2]
    assert tr.tracks[0].velocity[0] == pytest.approx(1.0)  # one pixel a frame to the right


def test_a_face_hidden_for_a_while_gets_its_id_back():
    """Hidden for 6 detection rounds (behind another face, missed): the same id when it reappears,
    though it was moving, because a lost track is kept and stops rushing on at its old speed."""
    tr = Tracker()
    for k in range(4):  # two faces; #2 moves right 3 px a frame
        tr.update([_Face([0, 0, 50, 50]), _Face([200 + 3 * k, 100, 260 + 3 * k, 160])], k)
    assert sorted(t.id for t in tr.visible()) == [1, 2]
    for k in range(4, 10):
        tr.update([_Face([0, 0, 50, 50])], k)  # #2 hidden
        assert [t.id for t in tr.visible()] == [1]
    tr.update([_Face([0, 0, 50, 50]), _Face([214, 100, 274, 160])], 10)
    assert sorted(t.id for t in tr.visible()) == [1, 2]
    for k in range(11, 11 + tr.max_misses + 1):
        tr.update([], k)
    assert tr.tracks == []  # gone for good after max_misses rounds


def test_hungarian_matches_scipy_and_iou():
    rng = np.random.default_rng(1)
    for shape in [(1, 1), (3, 3), (4, 6), (6, 4), (8, 8)]:
        cost = rng.random(shape)
        r, c = hungarian(cost)
        sr, sc = assign(cost)
        assert cost[r, c].sum() == pytest.approx(cost[sr, sc].sum())
        assert len(set(r)) == len(r) == min(shape) and len(set(c)) == len(c)
    assert assign(np.zeros((0, 3)))[0].size == 0
    iou = iou_matrix(np.array([[0, 0, 10, 10]]), np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]]))
    assert iou.round(3).tolist() == [[1.0, 0.333, 0.0]]


# -- broken files and dropped streams --------------------------------------------------------
@pytest.fixture(scope="module")
def mjpeg_avi(tmp_path_factory):
    """An MJPG AVI of the moving astronaut: every frame is a JPEG, so single frames can be broken."""
    path = tmp_path_factory.mktemp("avi") / "clip.avi"
    compose_clip(path, [astronaut_patch(140)], [(20, 40)], [(400, 300)], FRAMES, fps=FPS, fourcc="MJPG")
    return path


def test_not_a_video_missing_empty_and_truncated_mp4_are_clear_errors(two_faces, tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    half = tmp_path / "half.mp4"
    data = two_faces[0].read_bytes()
    half.write_bytes(data[: len(data) // 2])  # mp4v keeps its index at the end: gone
    cases = {text: "not a video", tmp_path / "missing.mp4": "no such file", empty: "empty", tmp_path: "folder"}
    cases[half] = "not a video"
    for path, words in cases.items():
        with pytest.raises(VideoSourceError, match=words):
            VideoSource(path)
    with pytest.raises(VideoSourceError, match="camera 99"):
        VideoSource(99)


def test_undecodable_frames_are_skipped_and_counted(mjpeg_avi, shared_analyzer, tmp_path):
    data = bytearray(mjpeg_avi.read_bytes())
    starts = [i for i in range(len(data) - 10) if data[i : i + 4] == b"00dc" and data[i + 8 : i + 10] == b"\xff\xd8"]
    assert len(starts) == FRAMES
    for k in (10, 11, 30):  # wipe three frames' JPEG headers: those frames cannot decode
        data[starts[k] + 8 : starts[k] + 608] = bytes(600)
    broken = tmp_path / "holes.avi"
    broken.write_bytes(bytes(data))
    run = make(shared_analyzer).run(broken)
    results = list(run)
    assert run.stats.undecodable == 3 and run.stats.frames_read == FRAMES - 3 and run.stats.ended_early is None
    indices = [r.frame_index for r in results]
    assert indices == [i for i in range(FRAMES) if i not in (10, 11, 30)]  # positions stay true to the file
    assert {f.track_id for r in results for f in r} == {1}


def test_truncated_file_gives_a_partial_result(mjpeg_avi, shared_analyzer, tmp_path):
    data = mjpeg_avi.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) * 2 // 5])
    run = make(shared_analyzer).run(cut)
    results = list(run)
    assert 10 < len(results) < FRAMES
    assert run.stats.undecodable == FRAMES - len(results)
    assert "truncated" in run.stats.ended_early
    garbled = bytearray(data)
    rng = np.random.default_rng(0)
    for off in range(len(data) // 4, len(data), 20_000):  # noise over the back three quarters
        garbled[off : off + 300] = rng.integers(0, 256, 300, dtype=np.uint8).tobytes()
    (tmp_path / "garbled.avi").write_bytes(bytes(garbled))
    run = make(shared_analyzer).run(tmp_path / "garbled.avi")
    n = len(list(run))  # whatever FFmpeg can conceal is analysed; the rest is counted, nothing raises
    assert n + run.stats.undecodable >= FRAMES - 1 and n >= FRAMES // 4


class _MjpegStream:
    """A local HTTP MJPEG camera that sends ``frames`` frames, then drops the connection for good."""

    def __init__(self, frames: int):
        bg, patch = background(320, 240), astronaut_patch(90)

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                for i in range(frames):
                    img = cv2.cvtColor(render(bg, [patch], [(20 + 4 * i, 60)]), cv2.COLOR_RGB2BGR)
                    jpg = cv2.imencode(".jpg", img)[1].tobytes()
                    head = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpg)
                    self.wfile.write(head + jpg + b"\r\n")
                    self.wfile.flush()
                    time.sleep(0.02)
                self.close_connection = True
                threading.Thread(target=outer.close, daemon=True).start()  # gone for good: no reconnect

        outer = self
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/live.mjpg"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("latest_only", [False, True])
def test_dropped_stream_is_reported_with_partial_results(shared_analyzer, latest_only):
    stream = _MjpegStream(25)
    try:
        src = VideoSource(stream.url, reconnects=2, retry_delay=0.05, latest_only=latest_only, timeout_s=3)
        run = make(shared_analyzer).run(src)
        results = list(run)
    finally:
        stream.close()
    assert src.kind == "stream" and src.frame_count is None and src.live
    assert len(results) >= 3 and len(results[0]) == 1
    if not latest_only:  # consecutive frames: the face is followed throughout
        assert all(len(r) == 1 for r in results)
    assert "dropped" in run.stats.ended_early and run.stats.reconnects == 0
    # Live sources keep only the newest frame: what was not analysed was skipped for being late.
    assert run.stats.frames_read == len(results) + run.stats.skipped_late
    assert run.stats.frames_read >= 20 and (latest_only or run.stats.skipped_late == 0)


# -- results fields and the command line ------------------------------------------------------
def test_results_carry_track_fields():
    face = FaceResult(np.array([10, 10, 60, 60.0]), 0.9, None, probs={"happy": 0.8, "sad": 0.2}, track_id=4)
    res = Results([face], image=np.zeros((100, 100, 3), np.uint8), frame_index=7, timestamp=0.28)
    d = res.to_dict()
    assert d["frame_index"] == 7 and d["timestamp"] == 0.28 and d["faces"][0]["track_id"] == 4
    assert res.to_rows()[0]["track_id"] == 4 and res.to_rows()[0]["frame"] == 7
    assert res.plot().shape == (100, 100, 3)
    plain = Results([FaceResult(np.array([1, 1, 5, 5.0]), 0.9, None)]).to_dict()
    assert "frame_index" not in plain and plain["faces"][0]["track_id"] is None


def run_cli(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMOLENS_")}
    env["EMOLENS_HOME"] = str(cwd / "home")
    env["EMOLENS_THREADS"] = "2"
    cmd = [sys.executable, "-m", "emolens.cli", "video", *map(str, args)]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=180)


def test_cli_writes_video_timeline_and_plot(two_faces, tmp_path):
    path, _ = two_faces
    proc = run_cli(path, "--out", tmp_path / "out", "--every", "4", "--window", "5", "--show-fps", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "60 frames analysed" in proc.stderr and "2 tracks" in proc.stderr and "FPS on average" in proc.stderr
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"annotated.mp4", "timeline.csv", "timeline.json"} <= names
    doc = json.loads((tmp_path / "out" / "timeline.json").read_text())
    assert len(doc["tracks"]) == 2 and "every 4" in doc["stats"]["method"] and "last 5" in doc["stats"]["method"]


def test_cli_reports_a_truncated_file_and_still_writes(mjpeg_avi, tmp_path):
    data = mjpeg_avi.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    proc = run_cli(cut, "--no-video", "--out", tmp_path / "out", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "truncated" in proc.stderr and "undecodable" in proc.stderr
    assert (tmp_path / "out" / "timeline.csv").exists() and not (tmp_path / "out" / "annotated.mp4").exists()


def test_timeline_plot_title_says_truly_what_is_left_out():
    """Ten tracks as long as each other: "2 more tracks", not "2 shorter tracks"."""
    from emolens.video.timeline import MAX_PLOTTED_TRACKS

    def timeline(lengths: list[int]) -> Timeline:
        tl = Timeline(["happy", "sad"], "clip")
        for frame in range(max(lengths)):
            faces = [
                FaceResult(box=np.array([0, 0, 9, 9], np.float32), score=1.0, landmarks=None,
                           probs={"happy": 0.7, "sad": 0.3}, track_id=t)
                for t, n in enumerate(lengths) if frame < n
            ]  # fmt: skip
            tl.add(Results(faces=faces, frame_index=frame))
        return tl

    extra = 2
    info, title = timeline([5] * (MAX_PLOTTED_TRACKS + extra)).plotted_tracks()
    assert [s["track_id"] for s in info] == list(range(MAX_PLOTTED_TRACKS))
    assert f"{extra} more tracks not shown (at most 5 frames each, as long as some shown)" in title
    assert "shorter" not in title
    info, title = timeline([9] * MAX_PLOTTED_TRACKS + [3, 2]).plotted_tracks()
    assert "2 shorter tracks not shown (at most 3 frames each)" in title
