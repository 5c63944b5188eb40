"""Fold scalars: a public scale factor moves past the matrix product it feeds.

Invariant established: no ``dot_general`` reads a product of a public scalar
and a secret value that nothing else reads; ``(c * X) @ Y`` became
``c * (X @ Y)`` wherever the product's result is no larger than X. The two
are equal in real arithmetic; in fixed point the scale factor's truncation
now acts on the smaller result (one TruncPr of |X @ Y| elements instead of
|X|, and a smaller error). Authors write this all the time:
``w - lr * x.T @ g`` parses as ``(lr * x.T) @ g``.
"""
from ..ir.core import Node


def _public_scalar(v):
    return v.type.kind == "public" and tuple(v.type.shape) == ()


def _scaled_secret(node, device_kind):
    """(scalar, secret) when ``node`` is a public scalar times a secret on an MPC device."""
    if node is None or node.op != "mul" or device_kind(node) != "MPC":
        return None
    a, b = node.operands
    for scalar, secret in ((a, b), (b, a)):
        if _public_scalar(scalar) and secret.type.kind != "public" \
                and secret.type.dtype == scalar.type.dtype == "f32":
            return scalar, secret
    return None


def _fold(module, nodes):
    def device_kind(node):
        return module.devices[node.results[0].type.place].kind

    uses, producer = {}, {}
    for n in nodes:
        for v in n.operands:
            uses[v] = uses.get(v, 0) + 1
        for r in n.results:
            producer[r] = n
    folded, renamed, out = set(), {}, []
    for n in nodes:
        n.operands = tuple(renamed.get(v, v) for v in n.operands)
        if n.body is not None:
            n.body.nodes = _fold(module, n.body.nodes)
        out.append(n)
        if n.op != "dot_general" or device_kind(n) != "MPC":
            continue
        for i, v in enumerate(n.operands):
            made_by = producer.get(v)
            pair = _scaled_secret(made_by, device_kind)
            if pair is None or uses[v] != 1 or n.result.type.size > v.type.size:
                continue
            scalar, secret = pair
            n.operands = n.operands[:i] + (secret,) + n.operands[i + 1:]
            scaled = Node("mul", (scalar, n.result), (module.new_value(n.result.type),),
                          {}, made_by.loc)
            renamed[n.result] = scaled.result
            out.append(scaled)
            folded.add(made_by)
            break
    return [n for n in out if n not in folded]


def run(module):
    module.nodes = _fold(module, module.nodes)
    return module.renumbered()
