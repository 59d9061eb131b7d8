"""The wire core stays sans-I/O: importing it loads no event loop, socket, web stack or database.

Each check runs in a fresh interpreter, because this test process has long since imported all of
those. The child prints, for each module it imports in turn, the forbidden modules that import
newly loaded, so a failure names the culprit.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("asyncio", "socket", "starlette", "websockets", "uvicorn", "sqlite3")
MODULES = (
    "easyjobs.errors",
    "easyjobs.jobs",
    "easyjobs.protocol",
    "easyjobs.protocol.frames",
    "easyjobs.protocol.auth",
    "easyjobs.protocol.session",
)

# Stands in an empty ``easyjobs`` package, so only the listed modules' own imports are measured.
BYPASS_PACKAGE_INIT = """
import importlib.util, types
spec = importlib.util.find_spec("easyjobs")
package = types.ModuleType("easyjobs")
package.__path__ = list(spec.submodule_search_locations)
sys.modules["easyjobs"] = package
"""

CHILD = """
import importlib, json, sys
{setup}
loaded = {{}}
for name in {modules!r}:
    before = set(sys.modules)
    importlib.import_module(name)
    new = set(sys.modules) - before
    loaded[name] = sorted({{m.split(".")[0] for m in new}} & set({forbidden!r}))
print(json.dumps(loaded))
"""


def _forbidden_imports(setup: str) -> dict[str, list[str]]:
    code = CHILD.format(setup=setup, modules=MODULES, forbidden=FORBIDDEN)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    loaded: dict[str, list[str]] = json.loads(done.stdout)
    return {name: mods for name, mods in loaded.items() if mods}


def test_protocol_modules_themselves_import_no_io() -> None:
    """The protocol, job and error modules import no asyncio, socket, web stack or sqlite3."""
    assert _forbidden_imports(BYPASS_PACKAGE_INIT) == {}


def test_importing_the_protocol_through_the_package_loads_no_io() -> None:
    """Importing the protocol the usual way, package ``__init__`` included, stays I/O-free."""
    loaded = _forbidden_imports("")
    assert loaded == {}, (
        f"{loaded}: easyjobs/__init__.py must not import the manager, workers or client eagerly"
    )
