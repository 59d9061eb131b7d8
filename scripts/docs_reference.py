"""MkDocs hook: the reference pages, generated from the code at build time so they cannot drift.

``mkdocs.yml`` names this file under ``hooks:``. It needs no network and no running manager:

- ``protocol.md`` is ``proto/PROTOCOL.md`` as it is;
- ``openapi.json`` is ``easyjobs.manager.openapi.document([])``, the fixed routes;
- in ``http-api.md`` the marker ``<!-- openapi -->`` becomes the fixed routes (and one example
  task route), rendered from that document;
- in ``cli.md`` the marker ``<!-- cli -->`` becomes the ``--help`` of every command of
  ``easyjobs.cli.build_parser()``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

from easyjobs.cli import build_parser
from easyjobs.manager import openapi
from easyjobs.tasks import make_options, spec_for

ROOT = Path(__file__).resolve().parent.parent
HELP_WIDTH = 78
"""Columns of the --help text: what a code block of the Material theme shows without scrolling."""


def on_files(files: Files, config: MkDocsConfig) -> Files:
    protocol = (ROOT / "proto" / "PROTOCOL.md").read_text(encoding="utf-8")
    files.append(File.generated(config, "protocol.md", content=protocol))
    document = json.dumps(openapi.document([]), indent=2) + "\n"
    files.append(File.generated(config, "openapi.json", content=document))
    return files


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    if page.file.src_uri == "http-api.md":
        return markdown.replace("<!-- openapi -->", http_reference())
    if page.file.src_uri == "cli.md":
        return markdown.replace("<!-- cli -->", cli_reference())
    return markdown


def add(a: int, b: int = 1) -> int:
    """The example task of the task routes, in queue ``ETL``."""
    return a + b


def http_reference() -> str:
    example = spec_for(add, "ETL", make_options())
    fixed = openapi.document([])["paths"]
    task_paths = openapi.document([example])["paths"]
    lines = ["### Task routes", "",
             "One per task a worker advertises; this one is for the task "
             "`add(a: int, b: int = 1)` in queue `ETL`.", ""]
    lines += _paths({path: ops for path, ops in task_paths.items() if path not in fixed})
    lines += ["### Fixed routes", ""]
    lines += _paths(fixed)
    return "\n".join(lines)


def _paths(paths: dict[str, Any]) -> Iterator[str]:
    for path, operations in paths.items():
        for method, op in operations.items():
            yield f"#### `{method.upper()} {path}`"
            yield ""
            summary = op.get("summary")
            auth = "no token" if op.get("security") == [] else "bearer token"
            yield f"`{op['operationId']}` · {auth}" + (f" · {summary}" if summary else "")
            yield ""
            if op.get("parameters"):
                yield "| parameter | in | schema | description |"
                yield "| --- | --- | --- | --- |"
                for param in op["parameters"]:
                    yield (f"| `{param['name']}` | {param['in']} | {_schema(param['schema'])} "
                           f"| {param.get('description', '')} |")
                yield ""
            body = op.get("requestBody")
            if body:
                schema = body["content"]["application/json"]["schema"]
                need = "required" if body.get("required") else "optional"
                yield f"Body ({need}, JSON):"
                yield ""
                yield "```json"
                yield json.dumps(schema, indent=2)
                yield "```"
                yield ""
            yield "| status | meaning |"
            yield "| --- | --- |"
            for status, response in sorted(op["responses"].items()):
                yield f"| {status} | {response['description']} |"
            yield ""


def _schema(schema: dict[str, Any]) -> str:
    return f"`{json.dumps(schema)}`".replace("|", "\\|")


def cli_reference() -> str:
    return "\n".join(_commands(build_parser(), 3))


def _commands(parser: argparse.ArgumentParser, depth: int) -> Iterator[str]:
    parser.formatter_class = _formatter
    yield f"{'#' * depth} `{parser.prog}`"
    yield ""
    yield "```text"
    yield parser.format_help().rstrip()
    yield "```"
    yield ""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _commands(sub, min(depth + 1, 6))


def _formatter(prog: str) -> argparse.HelpFormatter:
    """A fixed width, so the page does not depend on the terminal of whoever builds it."""
    return argparse.HelpFormatter(prog, width=HELP_WIDTH)
