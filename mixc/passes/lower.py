"""Lower: protocol ops become party-local ops and messages.

Invariant established: every node runs at one party (its results' ``place``
is a party, not a device); the only op that crosses parties is ``xfer``,
whose operand lives at the sender and whose result lives at the receiver,
with a tag unique per (sender, receiver) and a ``what`` saying what crosses.
Each global value maps to its local pieces: a PYU value to its owner's
plaintext, a public MPC value to a copy at every party, a shared value to
one share per party.

A loop is lowered once: its body's ops become the parties' local ops inside
one ``loop`` node whose block arguments, yielded values and results are the
local pieces of the global ones (a public value entering a shared carried
value is shared there by the protocol's ``PUBLIC_SHARING`` entry). The loop
node still spans parties; ``partition`` gives each party its own. Message
tags and PRG streams in a body are unique per iteration at run time: the
executor derives them from the static tag or stream and the iteration.
"""
import numpy as np

from ..ir.core import TensorType
from ..ir.ops import infer
from ..ir.core import Block, Node
from ..protocols import PUBLIC_SHARING, load, rule

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
        self.block = {}     # what a protocol reuses within the current block (see ``scoped``)
        self.program_nodes = self.out.nodes  # the top-level block, while a loop body is lowered
        self._captures = []  # per loop body being lowered: {program-level value: block argument}
        self._producers = None
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

    def scoped(self, name):
        """A dict a protocol keeps for the block being lowered: what it made here may be
        reused later in the same block (never in another, where it is not defined)."""
        return self.block.setdefault(name, {})

    def captured(self, value):
        """``value``, made at program level (a session token, an HE key), as the block being
        lowered sees it: inside a loop body, a block argument of that loop (an extra captured
        operand, added when the loop node is made), so a body reads only its arguments."""
        if not self._captures:
            return value
        frame = self._captures[-1]
        if value not in frame:
            frame[value] = self.out.new_value(value.type)
        return frame[value]

    def producer(self, value):
        """The global node that made ``value`` (None for block arguments and inputs)."""
        if self._producers is None:
            from ..ir.core import walk
            self._producers = {r: n for n in walk(self.source.nodes) for r in n.results}
        return self._producers.get(value)

    def add_party(self, party):
        if party not in self.out.parties:
            self.out.parties = tuple(self.out.parties) + (party,)


def _pieces(ctx, value, kind):
    """``value``'s local pieces as kind ``kind`` (a public value shared trivially)."""
    if value.type.kind == kind or kind not in PUBLIC_SHARING:
        return ctx.parts[value]
    return PUBLIC_SHARING[kind](ctx, value, ctx.device_of(value))


def _bind(ctx, global_values, locals_of):
    """Fresh local arguments (or results) for ``global_values``, shaped like the pieces
    ``locals_of`` gives; returns them in order and records them in ``ctx.parts``."""
    bound = []
    for g, pieces in zip(global_values, locals_of):
        ctx.parts[g] = {}
        for party, piece in pieces.items():
            ctx.parts[g][party] = v = ctx.out.new_value(piece.type.with_(kind=g.type.kind))
            bound.append(v)
    return bound


def _lower_loop(ctx, node):
    body = node.body
    captures = node.attrs["captures"]
    entering = [_pieces(ctx, v, a.type.kind) for v, a in zip(node.operands, body.args)]
    operands = [piece for pieces in entering for piece in pieces.values()]
    args = _bind(ctx, body.args, entering)
    n_captured = sum(len(p) for p in entering[:captures])
    outer_nodes, outer_consts, outer_block = ctx.out.nodes, ctx._consts, ctx.block
    ctx.out.nodes, ctx._consts, ctx.block = [], {}, {}
    ctx._captures.append({})
    try:
        _lower_nodes(ctx, body.nodes[:-1])
        end = body.nodes[-1]
        ctx.loc = end.loc
        carried = body.args[captures:]
        yielded = [_pieces(ctx, y, a.type.kind) for y, a in zip(end.operands, carried)]
        for a, pieces in zip(carried, yielded):
            if set(pieces) != set(ctx.parts[a]):
                raise NotImplementedError(f"a loop's carried value held by "
                                          f"{', '.join(sorted(ctx.parts[a]))} but yielded by "
                                          f"{', '.join(sorted(pieces))}")
        local_yield = [pieces[p] for a, pieces in zip(carried, yielded) for p in ctx.parts[a]]
        ctx.out.nodes.append(Node("yield", tuple(local_yield), (), {}, end.loc))
        nodes = ctx.out.nodes
    finally:
        ctx.out.nodes, ctx._consts, ctx.block = outer_nodes, outer_consts, outer_block
        extra = ctx._captures.pop()
    # program-level values the body reads (ctx.captured), as the enclosing block sees them
    operands[n_captured:n_captured] = [ctx.captured(v) for v in extra]
    args[n_captured:n_captured] = extra.values()
    n_captured += len(extra)
    results = _bind(ctx, node.results, [ctx.parts[a] for a in carried])
    ctx.out.nodes.append(Node("loop", tuple(operands), tuple(results),
                              {"trip_count": node.attrs["trip_count"], "captures": n_captured},
                              node.loc, Block(tuple(args), nodes)))


def _lower_nodes(ctx, nodes):
    for node in nodes:
        ctx.loc = node.loc
        if node.op == "loop":
            _lower_loop(ctx, node)
            continue
        try:
            device = ctx.source.devices[(node.results or node.operands)[0].type.place]
            rule(node.attrs["protocol"], node.op, device.kind).lower(ctx, node)
        except NotImplementedError as e:
            raise NotImplementedError(f"{node.loc or node.op}: {e} is not implemented") from None


def lowered(module):
    """The context that lowered ``module``: ``ctx.out`` is the lowered module and
    ``ctx.parts`` maps each global value to its local pieces (``simulate``'s range
    sanitizer reads both)."""
    load()
    ctx = LowerContext(module)
    _lower_nodes(ctx, module.nodes)
    ctx.out.devices = dict(module.devices)
    return ctx


def run(module):
    ctx = lowered(module)
    ctx.out.parts = ctx.parts  # not printed: what ``simulate``'s range sanitizer reads
    return ctx.out
