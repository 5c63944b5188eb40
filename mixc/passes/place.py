"""Place: every value gets its device and its kind.

Invariant established: every result type's ``place`` names a device of the
module and its ``kind`` is one that device can hold: ``plain`` on a PYU or a TEE;
``public`` (known to every party, e.g. constants and what is computed only
from constants) or ``arith`` (secret-shared) on an MPC device; ``private``
(one party's own plaintext), ``public`` or ``he`` (a ciphertext) on an HE
device (``protocols.he.place_kind``). In a loop body the same holds, and a
loop's carried value has one kind in every iteration: its block argument, the
value its ``yield`` passes on and the loop's result agree (public only if
every iteration keeps it public); a captured value's argument has the kind it
has on the loop's device (shared when it comes from a PYU).
"""
from ..errors import TraceError


def _from_constants(node, kinds):
    """Constants, loop counters, and ops whose operands all are public. (dp_noise has no
    operands but is a secret draw.)"""
    if node.op in ("constant", "loop_index"):
        return True
    return bool(node.operands) and all(kinds.get(v) == "public" for v in node.operands)


def _kind(node, device, kinds, module=None):
    if device.kind in ("PYU", "TEE"):  # a TEE party runs in the clear, like a PYU
        return "plain"
    if device.kind == "MPC":
        if node.op == "to":
            return "arith"
        return "public" if _from_constants(node, kinds) else "arith"
    if device.kind == "HE":  # private to one party, public, or a ciphertext (protocols.he)
        from ..protocols.he import place_kind
        return place_kind(node, device, kinds, module)
    raise TraceError(f"{node.loc or node.op}: {device.kind} devices are not supported yet")


def _device(module, node, value):
    device = module.devices.get(value.type.place)
    if device is None:
        raise TraceError(f"{node.loc or node.op}: value %{value.id} is on unknown device "
                         f"{value.type.place!r}")
    return device


def _entering(module, node, operand, arg, kinds):
    """The kind of a loop's block argument bound to ``operand``."""
    device = _device(module, node, arg)
    if device.kind == "HE":  # private keeps its owner (protocols.he)
        from ..protocols.he import carried_kind
        return carried_kind(module, arg, [operand], kinds)
    if operand.type.place == arg.type.place:
        return kinds[operand]
    return "arith" if device.kind == "MPC" else "plain"


def _join(a, b):
    """The kind a carried value needs when one iteration gives ``a`` and another ``b``."""
    return a if a == b else ("arith" if "public" in (a, b) else b)


def _carried_join(module, node, arg, yielded, kinds):
    if _device(module, node, arg).kind == "HE":
        from ..protocols.he import carried_kind
        return carried_kind(module, arg, [arg, yielded], kinds)
    return _join(kinds[arg], kinds[yielded])


def _set_kind(value, kind, kinds):
    value.type = value.type.with_(kind=kind)
    kinds[value] = kind


def _place_loop(module, node, kinds):
    body = node.body
    for operand, arg in zip(node.operands, body.args):
        _set_kind(arg, _entering(module, node, operand, arg, kinds), kinds)
    carried = body.args[node.attrs["captures"]:]
    while True:
        _place_nodes(module, body.nodes, kinds)
        yielded = body.nodes[-1].operands
        joined = [_carried_join(module, node, a, y, kinds) for a, y in zip(carried, yielded)]
        if all(j == kinds[a] for j, a in zip(joined, carried)):
            break
        for a, k in zip(carried, joined):
            _set_kind(a, k, kinds)
    for r, a in zip(node.results, carried):
        _set_kind(r, kinds[a], kinds)


def _place_nodes(module, nodes, kinds):
    for node in nodes:
        if node.body is not None:
            _place_loop(module, node, kinds)
            continue
        for r in node.results:
            _set_kind(r, _kind(node, _device(module, node, r), kinds, module), kinds)


def run(module):
    _place_nodes(module, module.nodes, {})
    return module
