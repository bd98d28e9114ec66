"""An import-linter contract for what `llmdit --help` may load: no heavy library (torch,
diffusers, ...) may be imported at module level by the command modules, directly or through a
chain of module-level imports. Imports inside function bodies (command bodies) and under
`if TYPE_CHECKING:` do not run at import time and are allowed.

import-linter's own `forbidden` contract counts every import, wherever it sits, so it cannot tell
a lazy import in a command body from one at the top of a module; this contract can.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

from importlinter.application import output
from importlinter.domain import fields
from importlinter.domain.contract import Contract, ContractCheck


class ModuleLevelImportsContract(Contract):
    """Configuration: `source_modules` (modules and packages loaded at start-up: every module in
    a package counts) and `forbidden_modules` (external packages that must not load with them)."""

    type_name = "module_level"

    source_modules = fields.ListField(subfield=fields.StringField())
    forbidden_modules = fields.ListField(subfield=fields.StringField())

    def check(self, graph, verbose: bool) -> ContractCheck:
        roots = {m for s in self.source_modules for m in _with_children(graph, s)}
        chains = eager_chains(graph, roots, set(self.forbidden_modules))
        return ContractCheck(kept=not chains, metadata={"chains": chains})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for chain in check.metadata["chains"]:
            output.print_error(" -> ".join(chain) + " (module-level imports)")


def _with_children(graph, name: str) -> set[str]:
    return {name, *graph.find_descendants(name)} if name in graph.modules else set()


def eager_chains(graph, roots: set[str], forbidden: set[str]) -> list[list[str]]:
    """Chains of module-level imports from `roots` to a forbidden package (one per package)."""
    parent = {r: None for r in roots}
    queue = sorted(roots)
    found: dict[str, list[str]] = {}
    while queue:
        module = queue.pop(0)
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if not _imported_eagerly(graph, module, imported):
                continue
            top = imported.split(".")[0]
            if top in forbidden or imported in forbidden:
                found.setdefault(imported, _chain(parent, module) + [imported])
                continue
            # Importing a.b.c runs a/__init__.py and a/b/__init__.py too.
            for step in _with_parents(imported):
                if step not in parent and step in graph.modules and not graph.is_module_squashed(step):
                    parent[step] = module
                    queue.append(step)
    return [found[k] for k in sorted(found)]


def _with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _chain(parent: dict, module: str) -> list[str]:
    chain = [module]
    while parent.get(chain[-1]):
        chain.append(parent[chain[-1]])
    return chain[::-1]


def _imported_eagerly(graph, importer: str, imported: str) -> bool:
    details = graph.get_import_details(importer=importer, imported=imported)
    path = _file_of(importer)
    if path is None:
        return True
    eager = _eager_import_lines(str(path))
    return any(d["line_number"] in eager for d in details)


@cache
def _file_of(module: str) -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec(module)
    return Path(spec.origin) if spec and spec.origin and spec.origin.endswith(".py") else None


@cache
def _eager_import_lines(path: str) -> frozenset[int]:
    """Line numbers of the import statements that run when the module is imported."""
    tree = ast.parse(Path(path).read_text(), path)
    lines: set[int] = set()

    def visit(node, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, True)
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for sub in child.orelse:
                    visit(ast.Module(body=[sub], type_ignores=[]), lazy)
            else:
                if isinstance(child, (ast.Import, ast.ImportFrom)) and not lazy:
                    lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
                visit(child, lazy)

    visit(tree, False)
    return frozenset(lines)


def _is_type_checking(test) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )
