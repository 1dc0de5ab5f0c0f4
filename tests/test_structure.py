"""The shape of the code, read from the source with ``ast`` (``scripts/import_cycles.py``): one
resolver for model names, settings read only where they enter, no import cycles, modules of a
readable size, and a command line that starts without NumPy."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "emolens"
MAX_LINES = 500
# The one import cycle allowed: the detector registry imports its backends, which register themselves.
DETECTOR_REGISTRY = [
    "emolens.detect.base",
    "emolens.detect.dlib_backend",
    "emolens.detect.haar",
    "emolens.detect.retinaface",
    "emolens.detect.whole",
]

# Where get_settings() may be called: entry points, each only when it was given no Settings.
READS_SETTINGS = {
    "analyzer.py",  # Analyzer
    "models.py",  # ModelResolver
    "registry.py",  # Registry
    "video/pipeline.py",  # VideoAnalyzer
    "serve/app.py",  # create_app
    "batch/runner.py",  # BatchJob
    "learn.py",  # finetune_from_feedback
    "shadow.py",  # promote_shadow
    "io.py",  # load_image, the public decoder, when given no pixel limit
    "identify/embed.py",  # create_embedder
    "store/db.py",  # default_url: stores made without a URL
    "identify/gallery.py",  # People
    "store/feedback.py",  # FeedbackStore, made without a URL
    "store/people.py",  # PeopleStore, likewise
}


def import_cycles():
    spec = importlib.util.spec_from_file_location("import_cycles", ROOT / "scripts" / "import_cycles.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_registry_needs_nothing_from_the_model_resolver():
    cyc = import_cycles()
    edges = cyc.graph(PACKAGE, typing_too=True)
    assert "emolens.models" not in edges["emolens.registry"]
    assert "emolens.models" in edges["emolens.analyzer"] and "emolens.registry" in edges["emolens.models"]
    in_cycles = {m for comp in cyc.cycles(edges) for m in comp}
    around_models = {"emolens.models", "emolens.registry", "emolens.catalog", "emolens.analyzer", "emolens.settings"}
    assert not in_cycles & around_models, cyc.cycles(edges)
    assert {"emolens.detect.base", "emolens.detect.retinaface"} <= in_cycles  # the detector registry's own: allowed


def test_settings_are_read_only_by_entry_points():
    readers = set()
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                f = node.func
                name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
                if name == "get_settings":
                    readers.add(rel)
    below = {r for r in readers if not r.startswith("cli/")} - READS_SETTINGS
    assert not below, f"these modules read the process's settings instead of being given them: {sorted(below)}"


def test_the_cycle_finder_finds_a_cycle():
    assert import_cycles().cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_only_import_cycle_is_the_detector_registrys():
    cyc = import_cycles()
    assert cyc.cycles(cyc.graph(PACKAGE)) == [DETECTOR_REGISTRY]


def test_modules_stay_readable():
    long = {
        m: n
        for m, p in import_cycles().modules(PACKAGE).items()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, long


def test_the_command_line_starts_without_numpy():
    """Every command module is imported to build the app: what they need at start is cheap."""
    heavy = ("numpy", "cv2", "onnxruntime", "torch")
    code = f"import sys\nimport emolens.cli\nprint(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_lazy_exports_are_the_functions_not_modules_of_the_same_name():
    import types

    import emolens.evaluate

    for name in emolens.evaluate.__all__:
        assert not isinstance(getattr(emolens.evaluate, name), types.ModuleType), name
