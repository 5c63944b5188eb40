"""The import structure of ``mixc/protocols/`` (read with ``ast``, nothing is imported).

Design rule: no module imports another protocol's private names; what two
protocols share lives in one module both import. Checked here, over every
import in every module of the package, including imports inside functions:

- no module imports an underscore-prefixed name from a sibling module (or
  reaches one as ``sibling._name``);
- the imports between the modules form no cycle;
- the shared helper modules (every module that is not one of the protocols
  ``PROTOCOL_MODULES`` loads: ``common``, ``shares``, ``correlations``,
  ``hepack``, ``dealerfree``, ...) import no protocol module: they sit below
  the protocols.
"""
from __future__ import annotations

import ast
from pathlib import Path

from mixc.protocols import PROTOCOL_MODULES

PACKAGE = "mixc.protocols"
DIR = Path(__file__).resolve().parent.parent / "mixc" / "protocols"
MODULES = sorted(p.stem for p in DIR.glob("*.py") if p.stem != "__init__")
PROTOCOLS = {m.rsplit(".", 1)[1] for m in PROTOCOL_MODULES}


def _imports(name):
    """[(sibling module, imported names, line)] and [(sibling, attribute, line)] of
    module ``name``: every import of another module of the package, anywhere in it."""
    tree = ast.parse((DIR / f"{name}.py").read_text(encoding="utf-8"), filename=f"{name}.py")
    found, aliases = [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                target = node.module
            elif node.level == 0 and (node.module or "").startswith(PACKAGE + "."):
                target = node.module[len(PACKAGE) + 1:]
            elif node.level == 0 and node.module == PACKAGE:
                target = None
            else:
                continue  # outside the package (``..passes``, numpy, ...)
            if target is None:  # ``from . import x``: submodules, or the registry's names
                for a in node.names:
                    if a.name in MODULES:
                        found.append((a.name, [], node.lineno))
                        aliases[a.asname or a.name] = a.name
                    else:
                        found.append(("__init__", [a.name], node.lineno))
            else:
                found.append((target.split(".")[0], [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith(PACKAGE + "."):
                    found.append((a.name[len(PACKAGE) + 1:].split(".")[0], [], node.lineno))
    attrs = [(aliases[n.value.id], n.attr, n.lineno) for n in ast.walk(tree)
             if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
             and n.value.id in aliases]
    return found, attrs


IMPORTS = {m: _imports(m) for m in MODULES}
GRAPH = {m: sorted({t for t, _, _ in IMPORTS[m][0] if t in MODULES and t != m})
         for m in MODULES}


def test_the_modules_are_read():
    assert {"arith2pc", "bool2pc", "he", "dealerfree", "private", "masking", "tee",
            "plaintext", "common"} <= set(MODULES)
    assert "common" in GRAPH["arith2pc"] and "hepack" in GRAPH["dealerfree"]


def test_no_module_imports_a_siblings_private_names():
    bad = []
    for m, (found, attrs) in IMPORTS.items():
        for target, names, line in found:
            bad += [f"{m}.py:{line}: from {target} import {n}" for n in names
                    if n.startswith("_") and n != "__future__"]
        bad += [f"{m}.py:{line}: {target}.{attr}" for target, attr, line in attrs
                if attr.startswith("_")]
    assert not bad, "private names used across modules of mixc/protocols:\n" + "\n".join(bad)


def test_no_import_cycle():
    state = {}  # module -> 1 (on the path) or 2 (done)

    def visit(m, path):
        state[m] = 1
        for t in GRAPH[m]:
            if state.get(t) == 1:
                cycle = path[path.index(t):] + [t]
                raise AssertionError("import cycle in mixc/protocols: " + " -> ".join(cycle))
            if t not in state:
                visit(t, path + [t])
        state[m] = 2

    for m in MODULES:
        if m not in state:
            visit(m, [m])


def test_shared_modules_import_no_protocol():
    shared = [m for m in MODULES if m not in PROTOCOLS]
    assert {"common", "dealerfree"} <= set(shared)
    bad = [f"{m} imports {t}" for m in shared for t in GRAPH[m] if t in PROTOCOLS]
    assert not bad, "shared modules must sit below the protocols: " + "; ".join(bad)
