"""Hoist loop invariants: what a loop body computes the same way every iteration runs once.

Invariant established: no node of a loop body is pure (``OpDef.pure``: its results
depend on its operands and attributes alone) with every operand loop-invariant (a
captured value, or the result of another such node), unless its result is larger
than ``MAX_ELEMENTS``. Such a node moves in front of the loop, its results become new
captures, and the body reads them through new block arguments; a capture that only
hoisted nodes read is dropped. Lowering leaves many (a constant's broadcast and
encoding, a counter step, a public scale times a captured share before its
truncation): in a 468-step training loop each would otherwise run 468 times. Random
streams, messages, the loop counter and every other impure op stay where they are.
Nested loops are hoisted innermost first, so an invariant of both loops ends up in
front of the outer one.
"""
from __future__ import annotations

from ..ir.core import Block, Node
from ..ir.ops import OPS

# A hoisted value lives for the whole loop instead of one iteration; above this size
# keeping it alive costs more memory than recomputing it costs time.
MAX_ELEMENTS = 1 << 22


def run(module):
    module.nodes = _hoist_block(module, module.nodes)
    return module


def _with_operands(node, operands, **changes):
    """``node`` reading ``operands`` (a new node: the module before this pass, which the
    build keeps, must not change); its results keep their identity."""
    return Node(node.op, tuple(operands), node.results, dict(changes.get("attrs", node.attrs)),
                node.loc, changes.get("body", node.body))


def _hoist_block(module, nodes):
    out = []
    for node in nodes:
        if node.op == "loop":
            hoisted, node = _hoist_loop(module, node)
            out.extend(hoisted)
        out.append(node)
    return out


def _hoistable(node, invariant):
    return (node.body is None and OPS[node.op].pure and node.results
            and all(v in invariant for v in node.operands)
            and all(r.type.size <= MAX_ELEMENTS for r in node.results))


def _hoist_loop(module, loop):
    """(nodes to run before the loop, the loop without them)."""
    body = _hoist_block(module, loop.body.nodes)
    captures = loop.attrs["captures"]
    args = loop.body.args
    outside = dict(zip(args[:captures], loop.operands[:captures]))  # body arg -> outer value
    invariant = set(args[:captures])
    hoisted, kept = [], []
    for node in body:
        if _hoistable(node, invariant):
            invariant.update(node.results)
            hoisted.append(_with_operands(node, (outside.get(v, v) for v in node.operands)))
        else:
            kept.append(node)
    if not hoisted:
        return [], _with_operands(loop, loop.operands, body=Block(args, body))
    used_inside = {v for n in kept for v in n.operands}  # captures are explicit operands
    new_captures = [r for n in hoisted for r in n.results if r in used_inside]
    new_args = {r: module.new_value(r.type) for r in new_captures}
    kept = [n if not any(v in new_args for v in n.operands)
            else _with_operands(n, (new_args.get(v, v) for v in n.operands)) for n in kept]
    still_read = [i for i in range(captures) if args[i] in used_inside]  # others fed hoisted nodes
    operands = (tuple(loop.operands[i] for i in still_read) + tuple(new_captures)
                + loop.operands[captures:])
    block = Block(tuple(args[i] for i in still_read) + tuple(new_args.values())
                  + args[captures:], kept)
    return hoisted, _with_operands(loop, operands, body=block,
                                   attrs={**loop.attrs, "captures": len(still_read) + len(new_args)})
