"""The pass pipeline: a list anyone can read and extend.

Tracing (``mixc.frontend``) makes the global IR; then each pass below runs in
order, each a module with ``run(module) -> module`` whose docstring states the
invariant it establishes. ``verify`` runs after each pass when asked (tests
do); the traced IR has no kinds yet, so checking starts after ``place``.
"""
from . import (batch_comparisons, coalesce_messages, fold_scalars, hoist_invariants,
               insert_transfers, lower, partition, place, select_protocols, verify)

PIPELINE = [
    ("place", place.run),
    ("insert_transfers", insert_transfers.run),
    ("fold_scalars", fold_scalars.run),
    ("batch_comparisons", batch_comparisons.run),
    ("select_protocols", select_protocols.run),
    ("lower", lower.run),
    ("hoist_invariants", hoist_invariants.run),
    ("partition", partition.run),
    ("coalesce_messages", coalesce_messages.run),
]


def run_pipeline(module, passes=None, verify_between=False, keep=None):
    """Run the named passes (all by default); ``keep`` gets (name, module) after each."""
    names = [n for n, _ in PIPELINE]
    chosen = passes or names
    unknown = [p for p in chosen if p not in names]
    if unknown:
        raise ValueError(f"unknown pass(es) {', '.join(unknown)}; the pipeline is {', '.join(names)}")
    for name, fn in PIPELINE:
        if name not in chosen:
            continue
        module = fn(module)
        module.stage = name
        if verify_between:
            verify.run(module)
        if keep is not None:
            keep(name, module)
    return module
