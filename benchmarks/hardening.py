"""The attack-and-fault review of issue 16, repeated on the code before and after the fixes.

Method: the sources of both trees (``--before``, a git ref, extracted with ``git archive``; the
working tree as "after") are run in fresh processes with ``PYTHONPATH`` pointing at each:

- memory: decode a 9999x9999 PNG (just under the 100 MP limit) of each kind; the peak RSS growth
  over the decode (``ru_maxrss``) in bytes per pixel; a failure is more than 4 B/px + 64 MB;
- race: ``--race`` trials of two concurrent ``emolens models promote accurate`` on an empty
  registry; a failure is any state but v1, v2 with v2 active and only v1 in its history;
- fuzz: the OpenAPI fuzz run (``tests/test_fuzz.py``) with ``--examples`` per operation; a failure
  is an operation with a 5xx or an answer its schema does not document;
- the rest: each test of ``tests/test_hardening.py`` is one attack (its tries are the requests or
  files it sends); a failure is the test failing on that tree.

Writes ``benchmarks/results/hardening.md``. Run: ``python benchmarks/hardening.py``.

``--server-review`` repeats only the server attacks of the second review (issue 36: ``tests/
test_hardening_server.py``, the live socket's key tests, and the random-seed fuzz run with
``--fuzz-requests`` requests after the fixes, 1,500 before) on ``--before`` (default ``3a4579e``) and
the working tree, and replaces that section of the results file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

BASELINE = "ca9394e"  # main before the hardening work

PEAK = """
import resource, sys
from emolens.image.io import load_image
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
image = load_image(sys.argv[1], max_pixels=100_000_000)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024 / (image.shape[0] * image.shape[1]))
"""

# test name (prefix) -> (attack or fault, tries per run)
ATTACKS = {
    "test_float_tiff_with_nan": ("float TIFF with NaN: the error names the file", 1),
    "test_heic_says": ("HEIC photo: the error says it is not supported and what is", 1),
    "test_hostile_files_through_the_cli": ("hostile files through `emolens analyze` (9 files)", 9),
    "test_hostile_files_through_http": ("hostile files through POST /api/v1/analyze (9 files)", 9),
    "test_promote_refuses_paths": ("`models promote README.md`, a broken version, a broken named model", 4),
    "test_api_promote_refuses": ("POST /models/{file}/promote, broken version; /readyz with a broken active model", 5),
    "test_faces_names_and_attendance": ("personal data without a key (8 endpoints)", 8),
    "test_out_of_range_numbers": ("out-of-range numbers over HTTP (offset, restore, classifier)", 5),
    "test_cli_feedback_list_refuses": ("`feedback list --limit` 1e20, -5, 0", 3),
    "test_cli_people_restore_with_a_huge": ("`people restore 99999999999999999999`", 1),
    "test_feedback_uploads_decode_inside": ("feedback uploads decoded outside the analysis gate", 2),
    "test_import_refuses_links": ("import follows a symlink out of feedback_images/", 1),
    "test_database_and_its_wal": ("emolens.db, -wal, -shm readable by others", 3),
    "test_an_existing_world_readable": ("an existing 0644 database stays readable by others", 1),
    "test_access_log_keeps": ("?key= and person ids in the access log", 3),
    "test_half_open_connections": ("half-open connections (no bytes; half the headers)", 2),
    "test_onnxruntime_writes_no_telemetry": ("ONNX Runtime telemetry files in ~/.cache", 1),
}


SECOND_REVIEW = "3a4579e"  # main before issue 36
# tests/test_hardening_server.py and test_live.py test (prefix) -> (attack or fault, tries per run)
SERVER_ATTACKS = {
    "test_app_serves_registered_model_names_only": (
        "`/app/config.json?model=emolens.db` and other names (21 requests)",
        21,
    ),
    "test_app_data_needs_the_read_key": ("`/app` settings and model files without a key where reads need one", 2),
    "test_host_header_must_name_the_server": ("foreign Host headers (DNS rebinding)", 6),
    "test_app_config_of_a_routed_or_ensemble": ("`/app/config.json` with `adaptive` or an ensemble as the model", 2),
    "test_shadow_disagreements_and_crops": ("shadow disagreements and face crops without a key", 2),
    "test_uploads_are_swept_on_a_timer": ("uploads past their expiry with no new request; their bytes in the files", 3),
    "test_uploads_are_capped_in_bytes": ("uploads beyond the byte cap", 4),
    "test_erasing_a_person_erases": ("uploads left after erasing a person", 1),
    "test_a_locked_database_answers_503": ("write lock held elsewhere: /healthz unanswered, no 503", 11),
    "test_a_hung_postgresql": ("PostgreSQL stopped (SIGSTOP): no answer, no 503/504, /readyz hangs", 4),
    "test_a_full_database_is_507": ("full database: 500 instead of 507, /readyz ready", 2),
    "test_a_database_that_is_down": ("PostgreSQL down: 500s; /readyz shows host and port", 3),
    "test_an_ambiguous_session_prefix": ("ambiguous attendance-session prefix (report, stop, images)", 3),
    "test_api_docs_load_only_same_origin": ("`/docs`, `/redoc` load assets from third parties", 2),
    "test_the_access_log_redacts_a_key_whose": ("`?k%65y=` and other encoded key names in the log", 3),
    "test_every_route_declares_the_key": ("routes without the key their data needs", 1),
    "test_an_encoded_key_name_is_redacted": ("WebSocket: `?k%65y=` logged in clear; a revoked key keeps its socket", 2),
}


def server_review(args) -> None:
    """The second review's server rows (see the module's docstring), written into their section."""
    t0 = time.time()
    results = {}
    with tempfile.TemporaryDirectory(prefix="emolens-hardening-") as tmp:
        trees = {"before": extract(args.before or SECOND_REVIEW, Path(tmp) / "before"), "after": ROOT / "src"}
        for name, src in trees.items():
            print(f"[{name}] attacks", flush=True)
            tests, _ = pytest_outcomes(src, "tests/test_hardening_server.py")
            live, _ = pytest_outcomes(src, "tests/test_live.py", PYTEST_ADDOPTS='-k "encoded_key"')
            n = args.fuzz_requests if name == "after" else 1500
            print(f"[{name}] random fuzz, {n} requests", flush=True)
            _, text = pytest_outcomes(src, "tests/test_fuzz.py", PYTEST_ADDOPTS="-s -k random", FUZZ_REQUESTS=str(n))
            m = re.search(r"fuzz seed (\d+): (\d+) requests, (\d+) answered 5xx", text)
            results[name] = {"tests": {**tests, **live}, "fuzz": m.groups() if m else ("?", "0", "-1")}
    b, a = results["before"], results["after"]

    def failed(tests: dict[str, str], prefix: str) -> int:
        hits = [o for t, o in tests.items() if t.startswith(prefix)]
        return sum(o != "PASSED" for o in hits) if hits else -1

    rows = [(w, t, failed(b["tests"], p), failed(a["tests"], p)) for p, (w, t) in SERVER_ATTACKS.items()]
    rows.append(
        (
            f"random-seed fuzz: requests answered 5xx (before {b['fuzz'][1]} requests, seed {b['fuzz'][0]}; "
            f"after {a['fuzz'][1]} requests, seed {a['fuzz'][0]})",
            int(a["fuzz"][1]),
            int(b["fuzz"][2]),
            int(a["fuzz"][2]),
        )
    )
    title = "## Second review (issue 36): the server"
    section = [
        title,
        "",
        f"`python benchmarks/hardening.py --server-review` (before: `{args.before or SECOND_REVIEW}`, after: the "
        f"working tree), load average {os.getloadavg()[0]:.0f} at the end; run time {time.time() - t0:.0f} s. "
        "Per-test rows: 1 when the test of that attack failed on that tree; the fuzz row counts 5xx answers.",
        "",
        "| attack or fault | tries | failures before | failures after |",
        "|---|---:|---:|---:|",
        *(f"| {w} | {t} | {fb} | {fa} |" for w, t, fb, fa in rows),
        "",
    ]
    text = args.out.read_text() if args.out.exists() else ""
    head = text.split(title)[0].rstrip("\n")
    args.out.write_text((head + "\n\n" if head else "") + "\n".join(section))
    print("\n".join(section))


def extract(ref: str, into: Path) -> Path:
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", ref, "src"], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "src"


def env_for(src: Path, **extra: str) -> dict[str, str]:
    inherited = os.environ.get("PYTHONPATH", "")  # e.g. packages installed beside the environment
    path = os.pathsep.join(p for p in (str(src), str(ROOT / "tests"), inherited) if p)
    env = {**os.environ, "PYTHONPATH": path, **extra}
    env.pop("EMOLENS_MODEL", None)
    return env


def memory(src: Path, images: dict[str, Path]) -> dict[str, float]:
    out = {}
    for kind, path in images.items():
        r = subprocess.run([sys.executable, "-c", PEAK, str(path)], env=env_for(src), capture_output=True, text=True)
        out[kind] = float(r.stdout) if r.returncode == 0 else float("nan")
    return out


def race(src: Path, trials: int, work: Path) -> int:
    bad = 0
    for t in range(trials):
        home = work / f"race{t}"
        env = env_for(src, EMOLENS_HOME=str(home))
        cmd = [sys.executable, "-m", "emolens.cli", "models", "promote", "accurate"]
        procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(2)]
        for p in procs:
            p.wait(600)
        versions = sorted(p.name for p in (home / "registry" / "versions").iterdir() if not p.name.startswith("."))
        state = json.loads((home / "registry" / "active.json").read_text())
        bad += versions != ["v1", "v2"] or state != {"version": "v2", "history": ["v1"]}
    return bad


def pytest_outcomes(src: Path, target: str, **extra: str) -> tuple[dict[str, str], str]:
    cmd = [sys.executable, "-m", "pytest", target, "-q", "-rA", "-p", "no:cacheprovider", "-o", "addopts="]
    r = subprocess.run(cmd, cwd=ROOT, env=env_for(src, **extra), capture_output=True, text=True)
    outcomes = {}
    for line in r.stdout.splitlines():
        m = re.match(r"(PASSED|FAILED|ERROR|SKIPPED) \S+::(\S+)", line)
        if m:
            outcomes[m.group(2)] = m.group(1)
    return outcomes, r.stdout


def fuzz(src: Path, examples: int) -> tuple[int, int, list[str]]:
    outcomes, text = pytest_outcomes(src, "tests/test_fuzz.py", FUZZ_EXAMPLES=str(examples))
    failing = sorted(set(re.findall(r"((?:GET|POST|DELETE|PUT|PATCH) /[^\s:]+): \w+: ", text)))
    ops = int(m.group(1)) if (m := re.search(r"operations: (\d+)", text)) else 0
    return len(failing), ops, failing


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--before", default=None, help=f"git ref before the fixes ({BASELINE}; server review: {SECOND_REVIEW})"
    )
    ap.add_argument("--server-review", action="store_true", help="only the second review's server attacks")
    ap.add_argument("--fuzz-requests", type=int, default=10_000, help="random fuzz requests after the fixes")
    ap.add_argument("--race", type=int, default=7, help="trials of the promotion race")
    ap.add_argument("--examples", type=int, default=50, help="fuzz examples per operation")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "hardening.md")
    args = ap.parse_args()
    if args.server_review:
        return server_review(args)
    args.before = args.before or BASELINE
    from test_hardening import write_png

    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="emolens-hardening-") as tmp:
        work = Path(tmp)
        trees = {"before": extract(args.before, work / "before"), "after": ROOT / "src"}
        images = {
            "16-bit grey": write_png(work / "g16.png", 9999, 9999, 0, 16),
            "8-bit grey": write_png(work / "g8.png", 9999, 9999, 0, 8),
            "8-bit RGB": write_png(work / "rgb.png", 9999, 9999, 2, 8),
            "8-bit RGBA": write_png(work / "rgba.png", 9999, 9999, 6, 8),
        }
        results = {}
        for name, src in trees.items():
            print(f"[{name}] memory", flush=True)
            mem = memory(src, images)
            print(f"[{name}] race", flush=True)
            raced = race(src, args.race, work / name)
            print(f"[{name}] fuzz", flush=True)
            fz = fuzz(src, args.examples)
            print(f"[{name}] attacks", flush=True)
            tests, _ = pytest_outcomes(
                src, "tests/test_hardening.py", PYTEST_ADDOPTS='-k "not concurrent and not accepted_image"'
            )
            results[name] = {"memory": mem, "race": raced, "fuzz": fz, "tests": tests}
            print(json.dumps({k: v for k, v in results[name].items() if k != "tests"}, default=str), flush=True)

    b, a = results["before"], results["after"]
    budget = 4 + 64 * 2**20 / (9999 * 9999)
    rows = []
    for kind in images:
        rows.append(
            (
                f"decode a 9999x9999 {kind} PNG (bytes per pixel: before {b['memory'][kind]:.1f}, "
                f"after {a['memory'][kind]:.1f})",
                1,
                int(not b["memory"][kind] <= budget),
                int(not a["memory"][kind] <= budget),
            )
        )
    rows.append(("two concurrent `models promote accurate` on an empty registry", args.race, b["race"], a["race"]))
    rows.append(
        (
            f"OpenAPI fuzz, {args.examples} examples per operation, admin key (failing operations: "
            f"before {', '.join(b['fuzz'][2]) or 'none'}; after {', '.join(a['fuzz'][2]) or 'none'})",
            a["fuzz"][1] or b["fuzz"][1],
            b["fuzz"][0],
            a["fuzz"][0],
        )
    )

    def failed(tests: dict[str, str], prefix: str) -> int:
        hits = [o for t, o in tests.items() if t.startswith(prefix)]
        return sum(o != "PASSED" for o in hits) if hits else -1

    for prefix, (what, tries) in ATTACKS.items():
        rows.append((what, tries, failed(b["tests"], prefix), failed(a["tests"], prefix)))

    lines = [
        "# Hardening: attacks and faults, before and after",
        "",
        f"Measured by `python benchmarks/hardening.py` (before: `{args.before}`, after: the working tree) on "
        f"{platform.machine()} with {os.cpu_count()} cores, Python {platform.python_version()}; the machine was "
        f"shared with other jobs (load average {os.getloadavg()[0]:.0f} at the end), so only the counts, not times, "
        f"are meaningful. Run time {time.time() - t0:.0f} s.",
        "",
        "Failures count runs in which the attack succeeded (for the per-test rows: the test of that attack "
        "failed on that tree; -1: the test could not run there). Memory budget: 4 bytes per pixel + 64 MB.",
        "",
        "| attack or fault | tries | failures before | failures after |",
        "|---|---:|---:|---:|",
        *(f"| {w} | {t} | {fb} | {fa} |" for w, t, fb, fa in rows),
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
