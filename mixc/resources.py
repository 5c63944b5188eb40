"""Locate data files shipped with mixc.

Grammars live in ``grammars/`` at the repository root and are installed as
package data of the data-only package ``mixc.grammars`` (pyproject.toml maps
``mixc.grammars`` -> ``grammars/``).  ``grammar_path`` therefore works in an
editable install (it resolves to ``<repo>/grammars/<name>``), in a regular
install (``site-packages/mixc/grammars/<name>``) and, as a last resort, from a
plain source checkout that is not installed at all.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

__all__ = ["grammar_path", "grammar_text"]


def _grammar_dirs() -> list[Path]:
    dirs: list[Path] = []
    try:
        root = importlib.resources.files("mixc.grammars")
    except ModuleNotFoundError:
        root = None
    if root is not None:
        # Installed packages are plain directories (never zipped), so the
        # Traversable has a real filesystem path.
        dirs.append(Path(str(root)))
    # Source checkout fallback: <repo>/mixc/resources.py -> <repo>/grammars
    dirs.append(Path(__file__).resolve().parent.parent / "grammars")
    return dirs


def grammar_path(name: str) -> Path:
    """Return the filesystem path of grammar file ``name`` (e.g. ``"mixc.lark"``).

    Raises FileNotFoundError naming the directories searched if it is absent.
    """
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise ValueError(f"grammar name must be a plain file name, got {name!r}")
    dirs = _grammar_dirs()
    for d in dirs:
        p = d / name
        if p.is_file():
            return p
    searched = ", ".join(str(d) for d in dirs)
    raise FileNotFoundError(f"grammar {name!r} not found (searched: {searched})")


def grammar_text(name: str) -> str:
    """Return the contents of grammar file ``name`` as text (UTF-8)."""
    return grammar_path(name).read_text(encoding="utf-8")
