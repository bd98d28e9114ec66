"""The import contracts in pyproject.toml (docs/architecture.md) hold, and the contract for what
`llmdit --help` may load catches a heavy import at module level, however indirect."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())"]


def lint(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(cwd), str(ROOT / "tools")])}
    return subprocess.run([*LINT, "--no-cache", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_the_project_keeps_its_import_contracts():
    done = lint(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 kept, 0 broken" in done.stdout


def write_package(tmp: Path, mid_body: str) -> None:
    files = {
        "pkg/__init__.py": "",
        "pkg/cli/__init__.py": "",
        "pkg/cli/app.py": "from pkg import mid\n",
        "pkg/mid.py": mid_body,
        "heavy/__init__.py": "",
        "pyproject.toml": """
            [tool.importlinter]
            root_packages = ["pkg"]
            include_external_packages = true
            contract_types = ["module_level: import_contracts.ModuleLevelImportsContract"]

            [[tool.importlinter.contracts]]
            name = "help loads nothing heavy"
            type = "module_level"
            source_modules = ["pkg.cli"]
            forbidden_modules = ["heavy"]
        """,
    }
    for name, text in files.items():
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_text(textwrap.dedent(text))


def test_module_level_contract_finds_an_indirect_eager_import(tmp_path):
    write_package(tmp_path, "import json\nimport heavy\n")
    done = lint(tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "pkg.cli.app -> pkg.mid -> heavy" in done.stdout


def test_module_level_contract_allows_imports_inside_functions_and_type_checking(tmp_path):
    write_package(
        tmp_path,
        textwrap.dedent("""
        from typing import TYPE_CHECKING

        if TYPE_CHECKING:
            import heavy


        def run():
            import heavy

            return heavy
    """),
    )
    done = lint(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
