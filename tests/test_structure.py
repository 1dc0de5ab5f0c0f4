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

# The composition root: the one module that reads the process's settings (emolens.workspace).
READS_SETTINGS = {"workspace.py"}


def import_cycles():
    spec = importlib.util.spec_from_file_location("import_cycles", ROOT / "scripts" / "import_cycles.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The layers, lowest first: a module may import from its own layer and those below, never above
# (module-level and function-level imports alike; ``if TYPE_CHECKING:`` blocks are types, not
# imports). docs/development.md shows the same table.
LAYERS = [
    {"core"},  # settings, errors, files, threads
    {"image", "detect", "classify", "models", "store", "data"},  # pixels, detectors, model files and names, rows
    {"workspace"},  # the composition root: builds the parts below once
    {"pipeline"},  # Analyzer and its results: detect → align → classify
    {"evaluate", "explain", "train", "export", "feedback", "identify", "video", "batch", "shadow", "synth"},
    {"cli", "serve", "webapp", "__init__"},  # where programs start
]


def layer_of(module: str) -> int:
    part = module.split(".")[1] if "." in module else "__init__"
    for i, names in enumerate(LAYERS):
        if part in names:
            return i
    raise AssertionError(f"{module} is in no layer: add its folder to LAYERS and docs/development.md")


def test_imports_never_run_back_up_the_layers():
    edges = import_cycles().graph(PACKAGE)
    upward = sorted(f"{a} -> {b}" for a, targets in edges.items() for b in targets if layer_of(b) > layer_of(a))
    assert not upward, upward


def test_the_layer_rule_finds_an_arrow_running_up():
    assert layer_of("emolens.image.io") < layer_of("emolens.pipeline.analyzer") < layer_of("emolens.cli.main")


def test_the_top_of_the_package_holds_only_the_front_door():
    loose = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert loose == ["__init__.py", "workspace.py"], loose


def test_the_registry_needs_nothing_from_the_model_resolver():
    edges = import_cycles().graph(PACKAGE, typing_too=True)
    assert "emolens.models.resolve" not in edges["emolens.models.registry"]
    assert "emolens.models.registry" in edges["emolens.models.resolve"]


def test_only_the_composition_root_reads_the_process_settings():
    """Everything below the root is handed ready objects: the CLI, the server and the workers too
    take their settings from a Workspace."""
    readers = set()
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                f = node.func
                name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
                if name == "get_settings":
                    readers.add(rel)
    assert readers == READS_SETTINGS, (
        f"these modules read the process's settings instead of being given them: {sorted(readers - READS_SETTINGS)}"
    )


def test_a_model_name_is_parsed_once_per_load(monkeypatch, emolens_home):
    """--model / EMOLENS_MODEL / ?model= text is read into a ModelSpec once; what is resolved,
    loaded and reported afterwards is that spec, never its text parsed again."""
    from emolens.models import ModelSpec, clear_model_cache
    from emolens.pipeline.analyzer import Analyzer
    from emolens.workspace import Workspace

    parsed = []
    real = ModelSpec.parse.__func__

    def counting(cls, spec):
        if not isinstance(spec, ModelSpec):
            parsed.append(spec)
        return real(cls, spec)

    monkeypatch.setattr(ModelSpec, "parse", classmethod(counting))
    clear_model_cache()
    example = PACKAGE / "assets" / "examples" / "astronaut.jpg"
    for text in ("accurate*3+fast", "adaptive", "active"):
        parsed.clear()
        analyzer = Analyzer(text, workspace=Workspace.default())
        results = analyzer(example)
        assert parsed == [text], (text, parsed)
        assert results.model == {"active": "fast"}.get(text, str(ModelSpec(analyzer.spec.members)))


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
