"""The package's structure: one resolver for model names, settings read only where they enter."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "emolens"

# Where get_settings() may be called: entry points, each only when it was given no Settings.
# identify/gallery.py and store/feedback.py are still to be given theirs.
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
    "identify/gallery.py",
    "store/feedback.py",
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
