"""The IR core: typed SSA values, nodes, and modules.

A ``Module`` is a list of ``Node``s in program order (SSA: every value is
defined once, before its uses). A node may own a ``Block`` (its ``body``): a
region with its own arguments and nodes, which is how a ``loop`` keeps its
body once instead of once per iteration. Values defined in a block are seen
only inside it; what a body reads from outside comes in as an operand of the
node that owns it (a captured value), so no pass has to look across a block
boundary. Every ``Value`` carries a ``TensorType`` that
shows its dtype, shape, where it lives (a device in the global IR, a party in
lowered and per-party IR) and its kind (plaintext, public, arithmetic share,
...). Ops are declared once in ``mixc.ir.ops``; the printer, the parser and
the verifier all read those declarations.
"""
from __future__ import annotations

import contextlib
import gc
import struct
from dataclasses import dataclass, field

# What a value is at its place. Plain: a party's own plaintext. Public: the
# same plaintext known to every party of an MPC device. Arith/bool: secret
# shares. He: a ciphertext under an HE device's key owner's key (held by the
# evaluator). Masked: a value plus a mask the holder does not know. Private: a
# plaintext that one party of an MPC or HE device holds alone (the others hold
# nothing): the server's weights kept unshared for the masking protocol.
KINDS = ("plain", "public", "arith", "bool", "he", "masked", "private")
DTYPES = ("f32", "f64", "i32", "i64", "u8", "u32", "u64", "u128", "bool")


@dataclass(frozen=True)
class TensorType:
    dtype: str
    shape: tuple
    place: str
    kind: str = "plain"

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}")
        if self.kind not in KINDS:
            raise ValueError(f"unknown value kind {self.kind!r}")

    @property
    def size(self):
        n = 1
        for d in self.shape:
            n *= d
        return n

    def with_(self, **changes) -> "TensorType":
        fields = dict(dtype=self.dtype, shape=self.shape, place=self.place, kind=self.kind)
        fields.update(changes)
        return TensorType(**fields)

    def __str__(self):
        kind = "" if self.kind == "plain" else f":{self.kind}"
        return f"{self.dtype}[{','.join(map(str, self.shape))}]@{self.place}{kind}"


class Value:
    """An SSA value. Identity is the object; ``id`` is its number in the printed text."""

    __slots__ = ("id", "type")

    def __init__(self, id: int, type: TensorType):
        self.id, self.type = id, type

    def __repr__(self):
        return f"%{self.id}: {self.type}"


@dataclass(eq=False)
class Block:
    """A region: arguments bound by the node that owns it, and nodes in order."""

    args: tuple
    nodes: list = field(default_factory=list)


@dataclass(eq=False)
class Node:
    op: str
    operands: tuple
    results: tuple
    attrs: dict = field(default_factory=dict)
    loc: str | None = None  # the author's "file.py:line" this node came from
    body: Block | None = None  # a loop's region

    @property
    def result(self) -> Value:
        (r,) = self.results
        return r


def walk(nodes):
    """Every node of ``nodes`` and of the blocks they own, in program order (a node
    before its body)."""
    for n in nodes:
        yield n
        if n.body is not None:
            yield from walk(n.body.nodes)


@dataclass(eq=False)
class Module:
    """A program: header facts (name, devices, parties) and nodes in order."""

    name: str
    devices: dict = field(default_factory=dict)  # name -> mixc.config.Device
    parties: tuple = ()
    nodes: list = field(default_factory=list)
    next_id: int = 0
    network: str = "lan"  # the build's network profile for the cost model; not printed
    stage: str = ""       # the last pass run on it ("" when parsed or built by hand)
    prefer: tuple = ()    # protocols the author asked for wherever they apply; not printed

    def new_value(self, type: TensorType) -> Value:
        v = Value(self.next_id, type)
        self.next_id += 1
        return v

    def add(self, op, operands=(), result_types=(), attrs=None, loc=None, at=None) -> Node:
        """Append (or insert before index ``at``) a node with fresh result values."""
        first = self.next_id
        results = tuple([Value(i, t) for i, t in enumerate(result_types, first)])
        self.next_id = first + len(results)
        node = Node(op, tuple(operands), results, dict(attrs or {}), loc)
        if at is None:
            self.nodes.append(node)
        else:
            self.nodes.insert(at, node)
        return node

    def fresh(self) -> "Module":
        """An empty module with the same header, for passes that rebuild the node list."""
        return Module(self.name, dict(self.devices), tuple(self.parties), [], self.next_id,
                      self.network, self.stage, tuple(self.prefer))

    def walk(self):
        """Every node, those in loop bodies included (see ``walk``)."""
        return walk(self.nodes)

    def users(self):
        """Map each value to the nodes that read it (in any block)."""
        users = {}
        for n in walk(self.nodes):
            for v in n.operands:
                users.setdefault(v, []).append(n)
        return users

    def renumbered(self) -> "Module":
        """The same program with values numbered 0.. in the order the text shows them
        (a loop's results, then its block's arguments, then its body)."""
        mapping = {}
        out = self.fresh()
        count = [0]

        def fresh(values):
            new = []
            i = count[0]
            for v in values:
                nv = mapping[v] = Value(i, v.type)
                new.append(nv)
                i += 1
            count[0] = i
            return tuple(new)

        def copy(nodes):
            copied = []
            for n in nodes:
                operands = tuple([mapping[v] for v in n.operands])
                if len(n.results) == 1:  # most nodes: numbered here, without a call
                    (r,) = n.results
                    results = (Value(count[0], r.type),)
                    mapping[r] = results[0]
                    count[0] += 1
                else:
                    results = fresh(n.results) if n.results else ()
                body = None
                if n.body is not None:
                    args = fresh(n.body.args)
                    body = Block(args, copy(n.body.nodes))
                copied.append(Node(n.op, operands, results, dict(n.attrs), n.loc, body))
            return copied

        out.nodes = copy(self.nodes)
        out.next_id = count[0]
        return out

    def renumber(self) -> "Module":
        """``renumbered``'s numbering given to this module's own values, in place: for a
        program whose Value objects no other module still prints or reads
        (``partition.split(..., consume=True)``); 10x faster than the copy."""
        count = 0

        def number(nodes):
            nonlocal count
            for n in nodes:
                for r in n.results:
                    r.id = count
                    count += 1
                if n.body is not None:
                    for a in n.body.args:
                        a.id = count
                        count += 1
                    number(n.body.nodes)

        number(self.nodes)
        self.next_id = count
        return self

    def __eq__(self, other):
        """Structural equality: what ``parse_module(print_module(m)) == m`` checks.

        Same name, parties, devices (in order) and, node by node, the same op,
        operand ids, result ids and types, attrs (see ``attr_equal``) and loc.
        ``next_id`` and object identity of values do not matter.
        """
        if not isinstance(other, Module):
            return NotImplemented
        if self.name != other.name or tuple(self.parties) != tuple(other.parties):
            return False
        if list(self.devices) != list(other.devices):
            return False
        for a, b in zip(self.devices.values(), other.devices.values()):
            if not _device_equal(a, b):
                return False
        return _nodes_equal(self.nodes, other.nodes)

    __hash__ = object.__hash__

    def __str__(self):
        from .printer import print_module
        return print_module(self)


# ------------------------------------------------------------ structural equality

def _type_key(t):
    return (t.dtype, tuple(int(d) for d in t.shape), t.place, t.kind)


def _values_equal(xs, ys) -> bool:
    return [(v.id, _type_key(v.type)) for v in xs] == [(v.id, _type_key(v.type)) for v in ys]


def _nodes_equal(xs, ys) -> bool:
    return len(xs) == len(ys) and all(_node_equal(a, b) for a, b in zip(xs, ys))


def _node_equal(a, b) -> bool:
    if a.op != b.op or (a.loc or None) != (b.loc or None):
        return False
    if [v.id for v in a.operands] != [v.id for v in b.operands]:
        return False
    if not _values_equal(a.results, b.results):
        return False
    if (a.body is None) != (b.body is None):
        return False
    if a.body is not None and not (_values_equal(a.body.args, b.body.args)
                                   and _nodes_equal(a.body.nodes, b.body.nodes)):
        return False
    return _attrs_equal(a.attrs, b.attrs)


def _attrs_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(attr_equal(a[k], b[k]) for k in a)


def _device_equal(a, b) -> bool:
    if (a.name, a.kind, tuple(a.parties)) != (b.name, b.kind, tuple(b.parties)):
        return False
    return _attrs_equal(dict(a.options), dict(b.options))


def attr_equal(x, y) -> bool:
    """Equality of attribute values as the text shows them.

    numpy arrays: same dtype, shape and bytes. Sequences: elementwise (a list
    equals the tuple with the same items: both print as a tuple). Floats:
    bitwise (0.0 != -0.0), and NaN equals NaN. Numpy scalars equal the
    Python scalar they print as; a bool never equals an int.
    """
    import numpy as np

    if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
        return (isinstance(x, np.ndarray) and isinstance(y, np.ndarray)
                and x.dtype == y.dtype and x.shape == y.shape
                and np.ascontiguousarray(x).tobytes() == np.ascontiguousarray(y).tobytes())
    if isinstance(x, (tuple, list)) or isinstance(y, (tuple, list)):
        return (isinstance(x, (tuple, list)) and isinstance(y, (tuple, list))
                and len(x) == len(y) and all(attr_equal(p, q) for p, q in zip(x, y)))
    xb, yb = isinstance(x, (bool, np.bool_)), isinstance(y, (bool, np.bool_))
    if xb or yb:
        return xb and yb and bool(x) == bool(y)
    xf, yf = isinstance(x, (float, np.floating)), isinstance(y, (float, np.floating))
    if xf or yf:
        if not (xf and yf):
            return False
        x, y = float(x), float(y)
        if x != x or y != y:
            return x != x and y != y
        return struct.pack("<d", x) == struct.pack("<d", y)
    xi, yi = isinstance(x, (int, np.integer)), isinstance(y, (int, np.integer))
    if xi or yi:
        return xi and yi and int(x) == int(y)
    if x is None or y is None:
        return x is None and y is None
    if isinstance(x, str) or isinstance(y, str):
        return isinstance(x, str) and isinstance(y, str) and str(x) == str(y)
    return type(x) is type(y) and bool(x == y)


@contextlib.contextmanager
def collector_paused():
    """Pause Python's cyclic garbage collector (usable as a decorator).

    Tracing, the passes and parsing allocate 10^5-10^6 IR objects that live on,
    and each collection rescans all of them: about half of a large build's time.
    They form no cycles that need collecting before the work is done.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
