"""Protocol tables: what each protocol implements, at what cost, and how it lowers.

A protocol is one module that calls ``register`` once per op it implements,
the way JAX registers ``ad.primitive_jvps``. The selection pass and the
lowering pass read only these tables, so adding a protocol never edits a
dispatcher: import its module in ``PROTOCOL_MODULES`` and it takes part.

A rule says, for one (protocol, op):
- ``device``: the device kind it runs on ("PYU", "MPC", "TEE", ...);
- ``accepts(kinds, node, module)``: whether it handles operands of those kinds;
- ``result_kind``: the kind of value it produces;
- ``wants``: the kind its secret operands must be in ("arith", "bool"); the
  selector converts operands of the other kind (costs from the ``a2b`` and
  ``b2a`` rules);
- ``cost(node, module) -> Cost``: bytes sent (all parties together) and
  rounds, as functions of the node's shapes and the ring width;
- ``lower(ctx, node)``: emit the party-local ops and messages
  (see ``passes.lower.LowerContext``).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Cost:
    bytes: int = 0
    rounds: int = 0
    ops: int = 0  # party-local ops all parties run, where a rule's choice changes them

    def __add__(self, other):
        return Cost(self.bytes + other.bytes, self.rounds + other.rounds, self.ops + other.ops)

    def times(self, n):
        return Cost(self.bytes * n, self.rounds * n, self.ops * n)


@dataclass(frozen=True)
class NetworkProfile:
    """Turns a Cost into estimated seconds: bytes / bandwidth + rounds * latency + ops *
    per_op (the executor's overhead per party-local op, which circuits of many small
    ops on packed bits pay more than their bytes)."""
    name: str
    bandwidth: float  # bytes per second
    latency: float    # seconds per round
    per_op: float = 4e-6  # seconds per party-local op (measured: a few microseconds)

    def seconds(self, cost: Cost) -> float:
        return (cost.bytes / self.bandwidth + cost.rounds * self.latency
                + cost.ops * self.per_op)


NETWORKS = {
    "lan": NetworkProfile("lan", bandwidth=1.25e9, latency=0.0001),
    "wan": NetworkProfile("wan", bandwidth=12.5e6, latency=0.04),
}


@dataclass(frozen=True)
class Rule:
    protocol: str
    op: str
    device: str
    accepts: object
    result_kind: str
    cost: object
    lower: object
    wants: str | None = None  # the kind its secret operands must have; None: as they come
    doc: str = ""


RULES: dict = {}  # op -> [Rule]
# (share kind, parties of the device) -> fn(ctx, value, device, arg) -> {party: piece}: a public
# value as trivial shares of that kind (what a loop's carried shared value starts from when
# its start is public); a piece is one local value, or a tuple of them (replicated shares)
PUBLIC_SHARING: dict = {}
# value kind -> carrier: how a loop's carried value of that kind keeps, in every iteration,
# the layout its protocol tracks beside the lowered value (``passes.lower._settle``)
LOOP_CARRIERS: dict = {}
PROTOCOL_MODULES = ("mixc.protocols.plaintext", "mixc.protocols.arith2pc",
                    "mixc.protocols.bool2pc", "mixc.protocols.tee",
                    "mixc.protocols.private", "mixc.protocols.he", "mixc.protocols.masking",
                    "mixc.protocols.rep3", "mixc.protocols.rep3bool")
_loaded = False


def register(protocol, op, *, device, accepts, result_kind, cost, lower, wants=None, doc=""):
    RULES.setdefault(op, []).append(
        Rule(protocol, op, device, accepts, result_kind, cost, lower, wants, doc))


def register_public_sharing(kind, fn, parties=2):
    """``fn(ctx, value, device, arg)``: public ``value`` as the pieces of kind ``kind`` on a
    device of ``parties`` parties, for the loop's block argument (or yield) ``arg``."""
    PUBLIC_SHARING[kind, parties] = fn


def register_loop_carrier(kind, carrier):
    """``carrier`` has ``layout_of(ctx, value, arg, loop)`` (the layout ``value`` would give
    the block argument ``arg``), ``enter(ctx, value, arg, layout, loop)`` (the local pieces
    of ``value`` in ``layout``, emitted where the lowering is), ``bind(ctx, value,
    layout)`` (record the layout of a freshly bound argument or result) and
    ``alternatives(ctx, arg)`` (other layouts worth trying for ``arg``)."""
    LOOP_CARRIERS[kind] = carrier


def load():
    """Import every protocol module once so its rules are in the tables."""
    global _loaded
    if not _loaded:
        for name in PROTOCOL_MODULES:
            importlib.import_module(name)
        _loaded = True


def rules_for(op):
    load()
    return RULES.get(op, [])


def rule(protocol, op, device=None) -> Rule:
    """The rule of ``protocol`` for ``op`` (on device kind ``device``, where a protocol
    registers the op for several)."""
    for r in rules_for(op):
        if r.protocol == protocol and (device is None or r.device == device):
            return r
    raise KeyError(f"protocol {protocol!r} does not implement {op!r}")


@dataclass
class CostReport:
    network: NetworkProfile
    rows: list = field(default_factory=list)  # (value id, op, protocol, Cost, loc)

    @property
    def total(self) -> Cost:
        out = Cost()
        for row in self.rows:
            out = out + row[3]
        return out
