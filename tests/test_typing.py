"""Types flow through tasks: mypy finds exactly the errors marked in ``typing/cases.py``, and
finds the package after the README's ``pip install -e .``."""

from __future__ import annotations

import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from mypy import api

from .utils import TIMEOUT

REPO = Path(__file__).resolve().parent.parent
CASES = Path(__file__).resolve().parent / "typing" / "cases.py"
_MARK = re.compile(r"#\s*E:\s*([\w-]+)\s*$")
_ERROR = re.compile(r"^(?P<path>.+?):(?P<line>\d+): error: .*\[(?P<code>[\w-]+)\]$")


def mypy_errors(args: list[str]) -> tuple[set[tuple[int, str]], str]:
    """Run mypy (in this process) and return its errors as (line, code), with its output."""
    out, err, _ = api.run(["--no-error-summary", "--show-error-codes", "--no-pretty",
                           "--hide-error-context", *args])
    errors = {(int(m["line"]), m["code"]) for m in map(_ERROR.match, out.splitlines()) if m}
    return errors, out + err


def test_marked_calls_and_only_those_are_type_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Typed tasks check their arguments and type their results; the bad lines and no others
    fail."""
    expected = {
        (number, mark[1])
        for number, line in enumerate(CASES.read_text().splitlines(), start=1)
        if (mark := _MARK.search(line))
    }
    assert len(expected) >= 10
    monkeypatch.chdir(REPO)  # mypy searches the working directory first: this tree's easyjobs
    errors, output = mypy_errors(["--strict", "--config-file", str(REPO / "pyproject.toml"),
                                  "--cache-dir", str(tmp_path / "cache"), str(CASES)])
    assert errors == expected, output


def test_mypy_finds_the_package_after_an_editable_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``pip install -e .`` writes a path mypy follows (not an import hook that hides easyjobs)."""
    pytest.importorskip("wheel", reason="setuptools builds the editable wheel with it (.[test])")
    env = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True,
                   timeout=TIMEOUT)
    python = env / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True, timeout=TIMEOUT).stdout.strip()
    # pip and setuptools (and easyjobs' own dependencies) come from this environment.
    Path(site, "from-test-env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-build-isolation", "--no-index", "-e", str(REPO)],
                   check=True, cwd=tmp_path, timeout=TIMEOUT)
    user = tmp_path / "user.py"
    user.write_text("from easyjobs import EasyJobsWorker\n\n"
                    "worker = EasyJobsWorker(manager_secret='s')\n\n\n"
                    "@worker.task()\nasync def add(a: int) -> int:\n    return a\n\n\n"
                    "async def main() -> None:\n    await add('x')\n")
    # Outside the repo and without PYTHONPATH (mypy asks the interpreter for its sys.path):
    # only the install can lead mypy to easyjobs.
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    errors, output = mypy_errors(["--strict", "--python-executable", str(python),
                                  "--cache-dir", str(tmp_path / "cache"), str(user)])
    assert errors == {(12, "arg-type")}, output
