"""The house rules a reader relies on: layers import downward only, the on-device rooms never import
torch, function-local imports only guard optional dependencies, modules stay readable in size.

Why the layer check copies the sources first: import-linter (grimp) finds a package's modules by
walking its folder, and the design card keeps export/, runtime/, ... at the top of the repository,
mapped into `nim4_edge.*` by setuptools. A copy laid out as installed (nim4_edge/runtime/...) is
what grimp can read; the contracts themselves live in pyproject.toml ([tool.importlinter]).
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROOMS = ("runtime", "devices", "export", "quant", "recipes", "serve", "bench", "cli")
MAX_MODULE_LINES = 600


def _installed_layout(target: Path) -> Path:
    """The package's .py files laid out as installed: target/nim4_edge/<room>/..."""
    package = target / "nim4_edge"
    package.mkdir(parents=True)
    shutil.copy(ROOT / "nim4_edge" / "__init__.py", package / "__init__.py")
    for room in ROOMS:
        for source in (ROOT / room).rglob("*.py"):
            copy = package / room / source.relative_to(ROOT / room)
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, copy)
    return package


def _lint_imports(tree: Path) -> subprocess.CompletedProcess:
    lint = Path(sys.executable).with_name("lint-imports")
    command = [str(lint)] if lint.exists() else [shutil.which("lint-imports") or "lint-imports"]
    return subprocess.run(command + ["--config", str(ROOT / "pyproject.toml"), "--no-cache"], cwd=tree,
                          capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"})


def test_layers_import_downward_only(tmp_path):
    _installed_layout(tmp_path)
    result = _lint_imports(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


def test_a_forbidden_import_breaks_the_contracts(tmp_path):
    package = _installed_layout(tmp_path)
    with open(package / "runtime" / "audio.py", "a") as f:
        f.write("\nimport nim4_edge.cli.main  # the bottom layer reaching for the top\n")
    with open(package / "runtime" / "features.py", "a") as f:
        f.write("\nimport torch  # the on-device install must not need torch\n")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    assert "0 kept, 2 broken" in result.stdout, result.stdout
    assert "nim4_edge.runtime.audio -> nim4_edge.cli.main" in result.stdout


def _package_files():
    yield ROOT / "nim4_edge" / "__init__.py"
    for room in ROOMS:
        yield from sorted((ROOT / room).rglob("*.py"))


def test_function_local_imports_only_guard_optional_dependencies():
    """An import inside a function must say why (a comment with 'optional', 'probe' or 'guarded' on its
    line or the line above): an optional dependency (torch, onnx, PortAudio, ...) or an install probe."""
    unexplained = []
    for path in _package_files():
        lines = path.read_text(encoding="utf-8").splitlines()
        for function in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    near = " ".join(lines[max(0, node.lineno - 2) : node.lineno]).lower()
                    if not any(word in near for word in ("optional", "probe", "guarded")):
                        unexplained.append(f"{path.relative_to(ROOT)}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    assert not unexplained, "function-local imports without a reason:\n" + "\n".join(unexplained)


def test_modules_stay_readable_in_size():
    long = [f"{p.relative_to(ROOT)}: {n} lines" for p in _package_files()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES]
    assert not long, long


@pytest.mark.parametrize("room", ROOMS)
def test_every_room_is_a_package(room):
    assert (ROOT / room / "__init__.py").is_file()
