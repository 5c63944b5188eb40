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
import copy

import numpy as np

from ..ir.core import TensorType, walk
from ..ir.ops import infer
from ..ir.core import Block, Node
from ..protocols import LOOP_CARRIERS, PUBLIC_SHARING, load, rule

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
        self._types = {}    # (dtype, shape, party, kind) -> its TensorType
        self.block = {}     # what a protocol reuses within the current block (see ``scoped``)
        self.program_nodes = self.out.nodes  # the top-level block, while a loop body is lowered
        self._captures = []  # per loop body being lowered: {program-level value: block argument}
        self._producers = None
        self.loc = None

    def device_of(self, value):
        return self.source.devices[value.type.place]

    def emit(self, party, op, operands=(), kind="plain", attrs=None, dtype=None, shape=None):
        """One local op at ``party``; result dtype/shape from the op's type rule."""
        if attrs is None:
            attrs = {}
        if dtype is None:
            (dtype, shape), = infer(op, [v.type for v in operands], attrs)
        key = (dtype, tuple(shape), party, kind)
        t = self._types.get(key)
        if t is None:  # 10^5 results of a few hundred types: one (immutable) object each
            t = self._types[key] = TensorType(*key)
        return self.out.add(op, operands, (t,), attrs, self.loc).results[0]  # add copies attrs

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

    def sandbox(self):
        """A copy to lower something on trial: what it emits, and the bookkeeping it
        changes (tags, streams, protocols' tables), are thrown away with it."""
        trial = copy.copy(self)
        for name, value in self.__dict__.items():
            if isinstance(value, dict):
                value = {k: dict(v) if isinstance(v, dict) else v for k, v in value.items()}
            elif isinstance(value, list):
                value = [dict(v) if isinstance(v, dict) else v for v in value]
            trial.__dict__[name] = value
        trial.out = copy.copy(self.out)
        trial.out.nodes = []
        trial.program_nodes = []
        return trial

    def add_party(self, party):
        if party not in self.out.parties:
            self.out.parties = tuple(self.out.parties) + (party,)


def _pieces(ctx, value, arg):
    """``value``'s local pieces as block argument ``arg``'s kind (a public value shared
    trivially, or kept at the owner ``arg`` is private to)."""
    device = ctx.device_of(value)
    share = PUBLIC_SHARING.get((arg.type.kind, len(device.parties)))
    if value.type.kind == arg.type.kind or share is None:
        return ctx.parts[value]
    return share(ctx, value, device, arg)


def _flat(piece):
    """A party's piece as local values: one, or the components of a tuple (replicated)."""
    return list(piece) if isinstance(piece, tuple) else [piece]


def _bind(ctx, global_values, locals_of):
    """Fresh local arguments (or results) for ``global_values``, shaped like the pieces
    ``locals_of`` gives (a tuple piece gets a tuple of them); returns them in order and
    records them in ``ctx.parts``."""
    bound = []
    for g, pieces in zip(global_values, locals_of):
        ctx.parts[g] = {}
        for party, piece in pieces.items():
            fresh = [ctx.out.new_value(v.type.with_(kind=g.type.kind)) for v in _flat(piece)]
            ctx.parts[g][party] = tuple(fresh) if isinstance(piece, tuple) else fresh[0]
            bound.extend(fresh)
    return bound


_SETTLE_PASSES = 3


def _lower_loop(ctx, node):
    """A loop, once. Where a protocol tracks a layout beside its lowered values (an HE
    ciphertext's element positions and fraction bits; ``LOOP_CARRIERS``), a carried value
    keeps one layout in every iteration: ``_settle`` picks it, what enters is brought to
    it before the loop and what the body yields before the ``yield``."""
    carriers = {a: LOOP_CARRIERS[a.type.kind] for a in node.body.args
                if a.type.kind in LOOP_CARRIERS}
    _lower_loop_in(ctx, node, carriers, _settle(ctx, node, carriers) if carriers else {})


def _settle(ctx, node, carriers):
    """Layouts of the carried values: the body lowered on trial (``sandbox``) from the
    layouts of what enters, then from those its previous trial yielded, until they repeat
    (at most ``_SETTLE_PASSES`` trials); then, one carried value at a time, the layouts of
    values its best trial's body made (``alternatives``: e.g. the packing of a product
    an accumulator adds up). The trial whose iteration sends the fewest messages (bringing
    the yielded values to the layouts included) wins."""
    body, captures = node.body, node.attrs["captures"]
    carried = [(a, y) for a, y in zip(body.args[captures:], body.nodes[-1].operands)
               if a in carriers]

    def attempt(layouts):
        trial = ctx.sandbox()
        _lower_loop_in(trial, node, carriers, layouts)
        messages = sum(n.op == "xfer" for n in walk(trial.out.nodes[-1].body.nodes))
        return messages, trial

    layouts = {a: carriers[a].layout_of(ctx, v, a, node)
               for v, a in zip(node.operands, body.args) if a in carriers}
    if not carried:  # captured ones only: they keep their own
        return layouts
    best = None
    for _ in range(_SETTLE_PASSES):
        messages, trial = attempt(layouts)
        if best is None or messages <= best[0]:
            best = (messages, layouts, trial)
        following = dict(layouts)
        following.update({a: carriers[a].layout_of(trial, y, a, node) for a, y in carried})
        if following == layouts:
            break
        layouts = following
    for a, _ in carried:
        for alternative in carriers[a].alternatives(best[2], a):
            layouts = dict(best[1])
            layouts[a] = alternative
            messages, trial = attempt(layouts)
            if messages < best[0]:
                best = (messages, layouts, trial)
    return best[1]


def _lower_loop_in(ctx, node, carriers, layouts):
    body = node.body
    captures = node.attrs["captures"]
    entering = [carriers[a].enter(ctx, v, a, layouts[a], node) if a in carriers
                else _pieces(ctx, v, a) for v, a in zip(node.operands, body.args)]
    operands = [v for pieces in entering for piece in pieces.values() for v in _flat(piece)]
    args = _bind(ctx, body.args, entering)
    for a in carriers:
        carriers[a].bind(ctx, a, layouts[a])
    n_captured = sum(len(_flat(piece)) for pieces in entering[:captures]
                     for piece in pieces.values())
    outer_nodes, outer_consts, outer_block = ctx.out.nodes, ctx._consts, ctx.block
    ctx.out.nodes, ctx._consts, ctx.block = [], {}, {}
    ctx._captures.append({})
    try:
        _lower_nodes(ctx, body.nodes[:-1])
        end = body.nodes[-1]
        ctx.loc = end.loc or node.loc
        carried = body.args[captures:]
        yielded = [carriers[a].enter(ctx, y, a, layouts[a], node) if a in carriers
                   else _pieces(ctx, y, a) for y, a in zip(end.operands, carried)]
        for a, pieces in zip(carried, yielded):
            if set(pieces) != set(ctx.parts[a]):
                raise NotImplementedError(f"a loop's carried value held by "
                                          f"{', '.join(sorted(ctx.parts[a]))} but yielded by "
                                          f"{', '.join(sorted(pieces))}")
        local_yield = [v for a, pieces in zip(carried, yielded) for p in ctx.parts[a]
                       for v in _flat(pieces[p])]
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
    for r, a in zip(node.results, carried):
        if a in carriers:
            carriers[a].bind(ctx, r, layouts[a])
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
