"""Batch comparisons: independent comparisons on one device become one.

Invariant established: within a block, no two secret ``lt`` ops on the same MPC
device and dtype are at the same comparison depth (the number of secret
comparisons on the longest path of operands into them); such a group became
one ``lt`` of the flattened, concatenated operands, whose result is sliced
back into each comparison's shape. A comparison circuit costs the same
rounds whatever its width and its local work grows with its number of ops,
not its width: the thresholds of a range reduction (``log``'s eleven), the
levels of a max tree, a relu and its derivative each paid a whole circuit.
Nodes are then ordered again (stable: every node keeps its place unless a
merged comparison needs operands defined later), which cannot create a cycle
because no comparison in a group depends on another.
"""
import heapq

from ..ir.core import Node, TensorType


def _secret(v):
    return v.type.kind not in ("public", "plain")


def _mergeable(module, node):
    if node.op != "lt" or not node.results:
        return False
    device = module.devices[node.result.type.place]
    return device.kind == "MPC" and any(_secret(v) for v in node.operands)


def _groups(module, nodes):
    depth, groups = {}, {}
    for n in nodes:
        d = max((depth.get(v, 0) for v in n.operands), default=0)
        if _mergeable(module, n):
            key = (n.result.type.place, n.operands[0].type.dtype, d)
            groups.setdefault(key, []).append(n)
            d += 1
        elif n.body is not None:
            d += 1  # what a loop computes may hold comparisons
        for r in n.results:
            depth[r] = d
    return [g for g in groups.values() if len(g) > 1]


class _Emitter:
    def __init__(self, module, priority):
        self.module, self.priority, self.nodes = module, priority, []

    def __call__(self, op, operands, shape, dtype, attrs, loc, kind=None):
        kind = kind or ("arith" if any(_secret(v) for v in operands) else "public")
        place = operands[0].type.place
        node = Node(op, tuple(operands), (self.module.new_value(TensorType(dtype, shape, place,
                                                                           kind)),),
                    attrs, loc)
        self.nodes.append((self.priority, node))
        return node.result


def _flat(emit, v, shape):
    size = 1
    for d in shape:
        size *= d
    if tuple(v.type.shape) != tuple(shape):
        v = emit("broadcast_in_dim", [v], tuple(shape), v.type.dtype,
                 {"shape": tuple(shape), "broadcast_dimensions": ()}, None)
    if len(shape) != 1:
        v = emit("reshape", [v], (size,), v.type.dtype, {"new_sizes": (size,)}, None)
    return v, size


def _merge(module, group, index):
    """New nodes (with priorities) computing the group's comparisons as one, and the map
    from each member's result to its slice of the merged result."""
    first = min(index[n] for n in group)
    before = _Emitter(module, first - 0.5)
    sides, sizes = ([], []), []
    for n in group:
        shape = tuple(n.result.type.shape)
        for side, v in zip(sides, n.operands):
            flat, size = _flat(before, v, shape)
            side.append(flat)
        sizes.append(size)
    total = sum(sizes)
    loc = group[0].loc
    joined = [before("concatenate", side, (total,), side[0].type.dtype, {"dimension": 0}, loc)
              for side in sides]
    merged = before("lt", joined, (total,), "bool", {}, loc, kind="arith")
    renamed, after, offset = {}, [], 0
    for n, size in zip(group, sizes):
        emit = _Emitter(module, index[n])
        piece = emit("slice", [merged], (size,), "bool",
                     {"start": (offset,), "limit": (offset + size,), "strides": (1,)}, n.loc)
        shape = tuple(n.result.type.shape)
        if shape != (size,):
            piece = emit("reshape", [piece], shape, "bool", {"new_sizes": shape}, n.loc)
        renamed[n.result] = piece
        after += emit.nodes
        offset += size
    return before.nodes + after, renamed


def _schedule(prioritised):
    """Stable topological order: among the nodes whose operands are ready, the one with
    the smallest priority first (the order they had, with merged work where it fits)."""
    made_by = {r: i for i, (_, n) in enumerate(prioritised) for r in n.results}
    waiting = [0] * len(prioritised)
    users = [[] for _ in prioritised]
    for i, (_, n) in enumerate(prioritised):
        deps = {made_by[v] for v in n.operands if v in made_by}
        waiting[i] = len(deps)
        for d in deps:
            users[d].append(i)
    ready = [(p, i) for i, (p, _) in enumerate(prioritised) if not waiting[i]]
    heapq.heapify(ready)
    order = []
    while ready:
        _, i = heapq.heappop(ready)
        order.append(prioritised[i][1])
        for u in users[i]:
            waiting[u] -= 1
            if not waiting[u]:
                heapq.heappush(ready, (prioritised[u][0], u))
    return order


def _batch(module, nodes):
    for n in nodes:
        if n.body is not None:
            n.body.nodes = _batch(module, n.body.nodes)
    groups = _groups(module, nodes)
    if not groups:
        return nodes
    index = {n: i for i, n in enumerate(nodes)}
    merged_away = {n for g in groups for n in g}
    prioritised = [(float(i), n) for i, n in enumerate(nodes) if n not in merged_away]
    renamed = {}
    for group in groups:
        new, names = _merge(module, group, index)
        prioritised += new
        renamed.update(names)
    for _, n in prioritised:
        n.operands = tuple(renamed.get(v, v) for v in n.operands)
    last = len(nodes) + 1.0
    prioritised = [(last if n.op == "yield" else p, n) for p, n in prioritised]
    return _schedule(prioritised)


def run(module):
    module.nodes = _batch(module, module.nodes)
    return module.renumbered()
