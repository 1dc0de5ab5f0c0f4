"""MkDocs hooks: the parts of the site that are generated from the code at build time.

- ``<!-- emolens:rest-api -->`` becomes the REST reference, rendered from the app's OpenAPI schema
  (also published whole as ``reference/openapi.json``);
- ``<!-- emolens:settings -->`` becomes the table of settings, read from ``emolens.core.settings``;
- ``<!-- emolens:benchmarks -->`` becomes the list of ``benchmarks/results/*.md``, and
  ``<!-- emolens:model-cards -->`` the list of shipped model cards; both are published as pages
  of the site from where they live in the repository (not copied into ``docs/``);
- the module ``emolens_docs`` carries the click command behind the Typer app, for mkdocs-click.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import types
from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
RESULTS = ROOT / "benchmarks" / "results"
ASSETS = SRC / "emolens" / "assets"
if str(SRC) not in sys.path:  # build from a checkout even where emolens is not installed
    sys.path.insert(0, str(SRC))


def on_config(config):
    # Building the app or importing the CLI must not touch the user's data folder.
    os.environ.setdefault("EMOLENS_HOME", tempfile.mkdtemp(prefix="emolens-docs-"))
    import typer

    from emolens.cli import app

    module = types.ModuleType("emolens_docs")
    module.cli = typer.main.get_command(app)
    sys.modules["emolens_docs"] = module
    return config


def _title(path: Path) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
    return path.stem


def on_files(files: Files, config) -> Files:
    for path in sorted(RESULTS.glob("*")):
        if path.is_file():
            files.append(File.generated(config, f"benchmarks/results/{path.name}", abs_src_path=str(path)))
    for path in sorted(ASSETS.glob("*.md")):
        files.append(File.generated(config, f"models/{path.name}", abs_src_path=str(path)))
    files.append(File.generated(config, "reference/openapi.json", content=json.dumps(_openapi(), indent=2)))
    from emolens.pipeline.results import FaceRecord

    schema = json.dumps(FaceRecord.model_json_schema(), indent=2)
    files.append(File.generated(config, "reference/face.schema.json", content=schema))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    src = page.file.src_uri
    if src.startswith("benchmarks/results/"):
        return _drop_missing_links(markdown, src, files)
    depth = src.count("/")
    up = "../" * depth
    if "<!-- emolens:benchmarks -->" in markdown:
        rows = [
            f"- [{_title(p)}]({up}benchmarks/results/{p.name}) — `benchmarks/results/{p.name}`"
            for p in sorted(RESULTS.glob("*.md"))
        ]
        markdown = markdown.replace("<!-- emolens:benchmarks -->", "\n".join(rows))
    if "<!-- emolens:model-cards -->" in markdown:
        rows = [f"- [{p.stem}]({up}models/{p.name})" for p in sorted(ASSETS.glob("*.md"))]
        markdown = markdown.replace("<!-- emolens:model-cards -->", "\n".join(rows))
    if "<!-- emolens:rest-api -->" in markdown:
        markdown = markdown.replace("<!-- emolens:rest-api -->", _render_openapi(_openapi()))
    if "<!-- emolens:settings -->" in markdown:
        markdown = markdown.replace("<!-- emolens:settings -->", _render_settings())
    return markdown


def _drop_missing_links(markdown: str, src: str, files: Files) -> str:
    """Benchmark results may name figures that are written next to them but not committed:
    keep their caption as text rather than publish a broken link."""
    base = src.rsplit("/", 1)[0]

    def keep(m: re.Match) -> str:
        target = m.group(3)
        if "://" in target or target.startswith("#") or files.get_file_from_path(f"{base}/{target}"):
            return m.group(0)
        return f"{m.group(2)} (`{target}`, not in the repository)"

    return re.sub(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)", keep, markdown)


# --- REST API from OpenAPI ----------------------------------------------------------------------

_OPENAPI: dict | None = None


def _openapi() -> dict:
    global _OPENAPI
    if _OPENAPI is None:
        from emolens.serve.app import create_app

        _OPENAPI = create_app().openapi()
    return _OPENAPI


def _schema_type(schema: dict) -> str:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{name.lower()})"
    if "anyOf" in schema:
        return " or ".join(_schema_type(s) for s in schema["anyOf"])
    if schema.get("type") == "array":
        return f"array of {_schema_type(schema.get('items', {}))}"
    if "enum" in schema:
        return " · ".join(f"`{v}`" for v in schema["enum"])
    return schema.get("type", "any")


def _cell(text: str | None) -> str:
    return " ".join((text or "").split()).replace("|", "\\|")


def _render_openapi(spec: dict) -> str:
    out: list[str] = [
        f"EmoLens {spec['info']['version']}, OpenAPI {spec['openapi']}: [openapi.json](openapi.json).",
        "",
    ]
    by_tag: dict[str, list[tuple[str, str, dict]]] = {}
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            by_tag.setdefault((op.get("tags") or ["other"])[0], []).append((method.upper(), path, op))
    for tag, ops in by_tag.items():
        out += [f"## {tag}", ""]
        for method, path, op in ops:
            out += [f"### `{method} {path}`", "", _cell(op.get("summary")), ""]
            if op.get("description"):
                out += [op["description"].strip(), ""]
            params = op.get("parameters") or []
            if params:
                out += ["| parameter | in | type | required | description |", "|---|---|---|---|---|"]
                for p in params:
                    out.append(
                        f"| `{p['name']}` | {p['in']} | {_schema_type(p.get('schema', {}))} | "
                        f"{'yes' if p.get('required') else 'no'} | {_cell(p.get('description'))} |"
                    )
                out.append("")
            body = (op.get("requestBody") or {}).get("content") or {}
            for media, content in body.items():
                out += [f"Request body (`{media}`): {_schema_type(content.get('schema', {}))}", ""]
            responses = op.get("responses") or {}
            if responses:
                out += ["| status | meaning |", "|---|---|"]
                for status, r in responses.items():
                    schema = (r.get("content") or {}).get("application/json", {}).get("schema")
                    shape = f" — {_schema_type(schema)}" if schema else ""
                    out.append(f"| {status} | {_cell(r.get('description'))}{shape} |")
                out.append("")
    schemas = (spec.get("components") or {}).get("schemas") or {}
    if schemas:
        out += ["## Schemas", ""]
        for name, schema in schemas.items():
            out += [f"### {name}", ""]
            if schema.get("description"):
                out += [_cell(schema["description"]), ""]
            props = schema.get("properties") or {}
            required = set(schema.get("required") or [])
            if props:
                out += ["| field | type | required | description |", "|---|---|---|---|"]
                for field, s in props.items():
                    out.append(
                        f"| `{field}` | {_schema_type(s)} | {'yes' if field in required else 'no'} | "
                        f"{_cell(s.get('description') or s.get('title'))} |"
                    )
                out.append("")
    return "\n".join(out)


# --- settings ---------------------------------------------------------------------------------

_FIELD = re.compile(r"^    (\w+): ([^=]+?) = (.+?)(?:\s+#\s*(.*))?$")


def _render_settings() -> str:
    """Each field of ``Settings``, its environment variable, default and the comment beside it."""
    import inspect

    from emolens.core.settings import Settings

    lines = ["| environment variable | type | default | what |", "|---|---|---|---|"]
    for raw in inspect.getsource(Settings).splitlines():
        m = _FIELD.match(raw)
        if not m or m.group(1) not in Settings.model_fields:
            continue
        name, kind, default, note = m.groups()
        default = "`~/.local/share/emolens`" if name == "home" else f"`{default.strip()}`"
        lines.append(f"| `EMOLENS_{name.upper()}` | `{kind.strip()}` | {default} | {_cell(note)} |")
    return "\n".join(lines)
