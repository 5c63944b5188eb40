"""Lower: protocol ops become party-local ops and messages.

Invariant established: every node runs at one party (its results' ``place``
is a party, not a device); the only op that crosses parties is ``xfer``,
whose operand lives at the sender and whose result lives at the receiver,
with a tag unique per (sender, receiver) and a ``what`` saying what crosses.
Each global value maps to its local pieces: a PYU value to its owner's
plaintext, a public MPC value to a copy at every party, a shared value to
one share per party.
"""
import numpy as np

from ..ir.core import TensorType
from ..ir.ops import infer
from ..protocols import rule

DEALER = "dealer"


def seed_name(a, b=None):
    """The PRG key two parties share (or a party's own key when ``b`` is None)."""
    return a if b is None else "~".join(sorted((a, b)))


class LowerContext:
    """What a protocol's ``lower(ctx, node)`` uses to emit local ops."""

    def __init__(self, module):
        self.source = module
        self.out = module.fresh()
        self.parts = {}     # global value -> {party: local value}
        self._tags = {}     # (sender, receiver) -> last tag
        self._streams = {}  # seed name -> last stream id
        self._consts = {}   # (party, kind, dtype, shape, bytes) -> value: one node per constant
        self.loc = None

    def device_of(self, value):
        return self.source.devices[value.type.place]

    def emit(self, party, op, operands=(), kind="plain", attrs=None, dtype=None, shape=None):
        """One local op at ``party``; result dtype/shape from the op's type rule."""
        attrs = dict(attrs or {})
        if dtype is None:
            (dtype, shape), = infer(op, [v.type for v in operands], attrs)
        t = TensorType(dtype, tuple(shape), party, kind)
        return self.out.add(op, operands, [t], attrs, self.loc).result

    def emit_many(self, party, op, operands, types, attrs):
        return self.out.add(op, operands, types, attrs, self.loc).results

    def xfer(self, value, to_party, what, kind=None):
        """Send ``value`` from its party to ``to_party``; the received copy."""
        key = (value.type.place, to_party)
        self._tags[key] = tag = self._tags.get(key, 0) + 1
        t = value.type.with_(place=to_party, kind=kind or value.type.kind)
        return self.out.add("xfer", [value], [t], {"tag": tag, "what": what}, self.loc).result

    def stream(self, seed):
        self._streams[seed] = s = self._streams.get(seed, 0) + 1
        return s

    def random(self, party, seed, shape, stream, kind="arith"):
        return self.emit(party, "random", (), kind,
                         {"shape": tuple(shape), "seed": seed, "stream": stream})

    def const(self, party, value, kind="public"):
        value = np.asarray(value)
        key = (party, kind, value.dtype.str, value.shape, value.tobytes())
        if key not in self._consts:
            self._consts[key] = self.emit(party, "constant", (), kind, {"value": value})
        return self._consts[key]

    def add_party(self, party):
        if party not in self.out.parties:
            self.out.parties = tuple(self.out.parties) + (party,)


def run(module):
    ctx = LowerContext(module)
    for node in module.nodes:
        ctx.loc = node.loc
        try:
            rule(node.attrs["protocol"], node.op).lower(ctx, node)
        except NotImplementedError as e:
            raise NotImplementedError(f"{node.loc or node.op}: {e} is not implemented") from None
    out = ctx.out
    out.devices = dict(module.devices)
    return out
