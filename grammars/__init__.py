"""Lark grammars of mixc, installed as the data-only package ``mixc.grammars``.

This file exists so that ``mixc.grammars`` is a regular package that both the
editable-install finder and ``importlib.resources`` can resolve; use
``mixc.resources.grammar_path(name)`` rather than importing it directly.
"""
