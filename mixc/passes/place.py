"""Place: every value gets its device and its kind.

Invariant established: every result type's ``place`` names a device of the
module and its ``kind`` is one that device can hold: ``plain`` on a PYU or a TEE;
``public`` (known to every party, e.g. constants and what is computed only
from constants) or ``arith`` (secret-shared) on an MPC device; ``private``
(one party's own plaintext), ``public`` or ``he`` (a ciphertext) on an HE
device (``protocols.he.place_kind``).
"""
from ..errors import TraceError


def _from_constants(node, kinds):
    """Constants, and ops whose operands all are: public. (dp_noise has no operands but
    is a secret draw.)"""
    if node.op == "constant":
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


def run(module):
    kinds = {}
    for node in module.nodes:
        for r in node.results:
            device = module.devices.get(r.type.place)
            if device is None:
                raise TraceError(f"{node.loc or node.op}: value %{r.id} is on unknown device "
                                 f"{r.type.place!r}")
            r.type = r.type.with_(kind=_kind(node, device, kinds, module))
            kinds[r] = r.type.kind
    return module
