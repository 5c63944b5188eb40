"""Fold scalars: a public scale factor multiplies the smallest value of a product.

Invariant established: where a public scalar c scales a matrix product on an
MPC device, it multiplies whichever of the product's secret operands or its
result is smallest, counting only values nothing else reads:
``(c * X) @ Y`` becomes ``c * (X @ Y)`` when the result is smaller than X, and
``c * (X @ Y)`` (through transposes and reshapes of the result) becomes
``(c * X) @ Y`` when X is smaller than the result. The forms are equal in
real arithmetic; in fixed point each product by c is truncated (one TruncPr
per element of what it scales), so scaling the smallest value costs least
and rounds least. Authors write this all the time: ``w - lr * x.T @ g``
parses as ``(lr * x.T) @ g``, and ``w - lr * grad(loss)(w)`` scales a
weight-sized gradient made from a batch-sized one.

Also: a chain of two known public scales, ``c2 * (c1 * x)`` or ``(c1 * x) / c2``
(``lr * mean(g)``, ``lr * x.T @ g / n``), becomes one scale by their product when
that product is exact in fixed point: one truncation instead of two, no rounding
added. Other chains stay, since a small product would lose bits.
"""
import numpy as np

from ..ir.core import Node

_THROUGH = ("transpose", "reshape")  # linear, so they commute with a scalar product


def _public_scalar(v):
    return v.type.kind == "public" and tuple(v.type.shape) == ()


def _split(node):
    """(scalar, other) when ``node`` is a public scalar times a secret f32 value."""
    if node is None or node.op != "mul":
        return None
    a, b = node.operands
    for scalar, other in ((a, b), (b, a)):
        if _public_scalar(scalar) and other.type.kind != "public" \
                and other.type.dtype == scalar.type.dtype == "f32":
            return scalar, other
    return None


class _Block:
    def __init__(self, module, nodes):
        self.module, self.nodes = module, nodes
        self.uses, self.producer, self.position = {}, {}, {}
        for i, n in enumerate(nodes):
            for v in n.operands:
                self.uses[v] = self.uses.get(v, 0) + 1
            for r in n.results:
                self.producer[r], self.position[r] = n, i
        self.before = {}    # node -> nodes to insert before it
        self.dropped = set()
        self.renamed = {}

    def on_mpc(self, node):
        return self.module.devices[node.results[0].type.place].kind == "MPC"

    def only_use(self, v):
        return self.uses.get(v, 0) == 1

    def scaled_operand(self, dot):
        """``(c * X) @ Y`` -> ``c * (X @ Y)`` when X @ Y is smaller than X."""
        for i, v in enumerate(dot.operands):
            made_by = self.producer.get(v)
            pair = _split(made_by) if made_by is not None and made_by not in self.dropped else None
            if pair is None or not self.only_use(v) or dot.result.type.size >= v.type.size:
                continue
            scalar, secret = pair
            dot.operands = dot.operands[:i] + (secret,) + dot.operands[i + 1:]
            scaled = Node("mul", (scalar, dot.result),
                          (self.module.new_value(dot.result.type),), {}, made_by.loc)
            self.renamed[dot.result] = scaled.result
            self.dropped.add(made_by)
            return scaled
        return None

    def scaled_result(self, mul, index):
        """``c * T(X @ Y)`` -> ``T((c * X) @ Y)`` when X is smaller than the result."""
        pair = _split(mul)
        if pair is None:
            return
        scalar, value = pair
        chain = value
        while self.only_use(chain) and self.producer.get(chain) is not None \
                and self.producer[chain].op in _THROUGH:
            chain = self.producer[chain].operands[0]
        dot = self.producer.get(chain)
        if dot is None or dot.op != "dot_general" or not self.only_use(chain) \
                or dot in self.dropped:
            return
        candidates = [(v.type.size, i) for i, v in enumerate(dot.operands)
                      if v.type.kind != "public" and v.type.size < value.type.size]
        if not candidates:
            return
        _, i = min(candidates)
        scalar_at = self.position.get(scalar, -1)
        constant = self.producer.get(scalar)
        if scalar_at > self.position[chain] and (constant is None or constant.op != "constant"):
            return  # computed after the product: cannot move before it
        inserted = []
        if scalar_at > self.position[chain]:  # a constant made later: make it again here
            copy = Node("constant", (), (self.module.new_value(scalar.type),),
                        dict(constant.attrs), constant.loc)
            inserted.append(copy)
            scalar = copy.result
        operand = dot.operands[i]
        scaled = Node("mul", (scalar, operand), (self.module.new_value(operand.type),), {}, mul.loc)
        inserted.append(scaled)
        self.before.setdefault(dot, []).extend(inserted)
        dot.operands = dot.operands[:i] + (scaled.result,) + dot.operands[i + 1:]
        self.renamed[mul.result] = value
        self.dropped.add(mul)

    def known_scale(self, node):
        """(factor, secret operand) when ``node`` multiplies or divides a secret f32 value
        by a public scalar whose value is a constant."""
        if node.op == "mul":
            pair = _split(node)
        elif node.op == "div" and _public_scalar(node.operands[1]) \
                and node.operands[0].type.kind != "public" and node.result.type.dtype == "f32":
            pair = (node.operands[1], node.operands[0])
        else:
            return None
        constant = self.producer.get(pair[0]) if pair is not None else None
        if constant is None or constant.op != "constant":
            return None
        factor = float(np.asarray(constant.attrs["value"]))
        return (factor if node.op == "mul" else 1.0 / factor), pair[1]

    def chained_scale(self, node):
        """``c2 * (c1 * x)`` (or with divisions) -> ``(c1 c2) * x`` when c1 c2 is exact in
        fixed point: one truncation instead of two, and no rounding of its own."""
        outer = self.known_scale(node)
        if outer is None or not self.only_use(outer[1]):
            return
        made_by = self.producer.get(outer[1])
        inner = self.known_scale(made_by) if made_by is not None and made_by not in self.dropped \
            else None
        if inner is None:
            return
        factor = inner[0] * outer[0]
        f = self.module.devices[node.result.type.place].fraction_bits
        encoded = factor * 2.0 ** f
        if not (factor != 0 and float(np.float32(factor)) == factor and encoded == int(encoded)
                and abs(encoded) < 2.0 ** 31):
            return
        scalar = node.operands[0] if node.op == "mul" and _public_scalar(node.operands[0]) \
            else node.operands[1]
        constant = Node("constant", (), (self.module.new_value(scalar.type),),
                        {"value": np.asarray(factor, np.float32)}, node.loc)
        self.before.setdefault(node, []).append(constant)
        node.op, node.operands = "mul", (constant.result, inner[1])
        self.dropped.add(made_by)

    def run(self):
        for index, n in enumerate(self.nodes):
            if n.results and self.on_mpc(n) and n.op == "mul":
                self.scaled_result(n, index)
        out = []
        for n in self.nodes:
            out.extend(self.before.get(n, ()))
            n.operands = tuple(self._final(v) for v in n.operands)
            if n.body is not None:
                n.body.nodes = _fold(self.module, n.body.nodes)
            out.append(n)
            if n.op == "dot_general" and self.on_mpc(n):
                scaled = self.scaled_operand(n)
                if scaled is not None:
                    out.append(scaled)
        return [n for n in out if n not in self.dropped]

    def fold_chains(self):
        for n in self.nodes:
            if n.results and n not in self.dropped and self.on_mpc(n):
                self.chained_scale(n)
        out = []
        for n in self.nodes:
            out.extend(self.before.get(n, ()))
            out.append(n)
        return [n for n in out if n not in self.dropped]

    def _final(self, v):
        while v in self.renamed:
            v = self.renamed[v]
        return v


def _fold(module, nodes):
    """Both rewrites of the scale's place, then chains of scales (which the first may
    have made) in one."""
    return _Block(module, _Block(module, nodes).run()).fold_chains()


def run(module):
    module.nodes = _fold(module, module.nodes)
    return module.renumbered()
