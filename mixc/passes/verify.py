"""Verify: the module is well typed, well placed, and leaks nothing unrevealed.

Checked, for every node: the op exists and its operand count, attributes and
result dtypes/shapes agree with its declaration's type rule. Global IR
(values on devices): every kind suits its device; once transfers are in
(``module.stage`` past ``place``), every op reads only values on its own
device, except ``to``/``reveal``, so a secret reaches a PYU only through
``reveal`` and one PYU's plaintext reaches another only through ``to``; a
chosen protocol's rule exists, runs on the node's device kind, accepts its
operands' kinds and produced the result kinds. Lowered IR (values at parties): every op reads
only its own party's values; plaintext crosses to another party only as an
explicit ``to``, a revealed/public value, or to/from a TEE's party;
``send``/``recv`` pair up.

The leak checks, each with a hand-written leaking program in
``tests/leaks/`` that it rejects:

- global: a secret (or TEE) value read on a PYU without ``reveal``; one
  PYU's plaintext read on another without an explicit ``to``; a ``to`` that
  turns a secret into plaintext (into a PYU or a TEE) instead of ``reveal``;
  a ``reveal`` of a PYU's plaintext (that is a ``to``) or onto a device that
  is not a PYU or TEE; a secret relabelled public by a protocol that does not
  take secrets;
- lowered: plaintext sent under a label that is not a disclosure; a
  disclosure label whose endpoints do not fit it (explicit ``to`` between
  PYU owners, ``public value`` only for public values, plaintext to a TEE
  only to a TEE's party and from one only by it, a reveal's shares only to
  a PYU's or TEE's owner, ``plaintext (reveal)`` of a private value only
  to one, ``HE public key`` only for a value straight from ``he.keygen``
  that depends on no private data); plaintext relabelled as a share by a local op
  that mixes in no randomness; and a share of private data (what depends on
  an input or a PYU computation) sent, other than as a reveal, to a party in
  no MPC device, or to one that holds every PRG key masking it (so it could
  unmask it). Endpoint checks use the module's devices: a per-party program
  lists the devices of the party and of its peers. The PRG-key check is a
  conservative approximation (any key the receiver lacks counts as a mask);
  in a single party's program a received share's masks are unknown, so it
  is checked fully only on the whole lowered program.

These checks read the labels and kinds the compiler writes (a ``send``'s
``what``, ``:arith``...) and hold the compiler to them. Nothing of a bundle
is trusted for running it: ``mixc.disclosure`` checks the party programs
from their ops alone, and holds them to the compiler's lowering of the
global program, before ``mixc run`` or ``mixc audit`` uses them.
"""
from ..errors import VerifyError
from ..ir.core import walk
from ..ir.ops import RING_DTYPES, infer
from ..protocols import rule

DEVICE_KINDS = {"PYU": {"plain"}, "MPC": {"public", "arith", "bool", "private"},
                "HE": {"he", "private", "public"}, "TEE": {"plain"}}
EXPLICIT_TO, PUBLIC_VALUE = "plaintext (explicit to)", "public value"
TO_TEE, FROM_TEE = "plaintext to trusted TEE", "plaintext revealed by TEE"
HE_PUBLIC_KEY = "HE public key"  # only a key straight from he.keygen (checked below)
PRIVATE_REVEAL = "plaintext (reveal)"  # a party's own (private) value revealed by its owner
PLAINTEXT_DISCLOSURES = (EXPLICIT_TO, PUBLIC_VALUE, TO_TEE, FROM_TEE, HE_PUBLIC_KEY,
                         PRIVATE_REVEAL)
SECRET_KINDS = ("arith", "bool", "masked", "he")
SHARE_KINDS = ("arith", "bool", "masked")  # masked by PRG words, which the checks below track


def _fail(node, message):
    where = f"{node.loc}: " if node.loc else ""
    raise VerifyError(f"{where}{node.op}: {message}")


def _check_types(node):
    if node.body is not None and node.op != "loop":
        _fail(node, "only a loop has a body")
    if node.op == "call":
        expected = [(d, tuple(s)) for d, s in node.attrs.get("result_types", ())]
    else:
        try:
            expected = infer(node.op, [v.type for v in node.operands], node.attrs)
        except VerifyError as e:
            _fail(node, str(e))
    got = [(r.type.dtype, tuple(r.type.shape)) for r in node.results]
    # Lowered shares are ring words whatever the logical dtype was.
    if len(got) != len(expected) or any(
            g != e and not (g[0] in RING_DTYPES or e[0] in RING_DTYPES) or g[1] != e[1]
            for g, e in zip(got, expected)):
        _fail(node, f"results {got} do not match the type rule's {expected}")


def _is_lowered(module):
    places = {r.type.place for n in walk(module.nodes) for r in n.results}
    return bool(places) and places <= set(module.parties) and not places & set(module.devices)


def _check_loop(node, same_place):
    """A loop's arguments bind its operands, its yield matches its carried arguments, its
    results are what it carries; ``same_place``: an operand lives where its argument does."""
    body = node.body
    if body is None or not body.nodes or body.nodes[-1].op != "yield":
        _fail(node, "a loop's body ends with a yield")
    if len(body.args) != len(node.operands):
        _fail(node, f"{len(node.operands)} operands bind {len(body.args)} block arguments")
    carried = body.args[node.attrs["captures"]:]
    end = body.nodes[-1]
    for kind, xs, ys in (("operand", node.operands, body.args), ("yield", end.operands, carried),
                         ("result", node.results, carried)):
        if len(xs) != len(ys):
            _fail(node, f"{len(xs)} {kind}s for {len(ys)} block arguments")
        for x, y in zip(xs, ys):
            if (x.type.dtype, tuple(x.type.shape)) != (y.type.dtype, tuple(y.type.shape)):
                _fail(node, f"{kind} %{x.id}: {x.type} does not match block argument "
                            f"%{y.id}: {y.type}")
            if kind != "operand" and x.type.place != y.type.place:
                _fail(node, f"{kind} %{x.id} lives at {x.type.place}, its carried value at "
                            f"{y.type.place}")
            if kind == "operand" and same_place and x.type.place != y.type.place:
                _fail(node, f"operand %{x.id} lives at {x.type.place}, its block argument "
                            f"%{y.id} at {y.type.place}")
    for r, a in zip(node.results, carried):
        if r.type.kind != a.type.kind:
            _fail(node, f"result %{r.id} is {r.type.kind}, its carried value {a.type.kind}")
    if any(n.op == "yield" for n in body.nodes[:-1]):
        _fail(node, "a yield ends a loop's body; it cannot stand before its last op")


def _verify_global(module, nodes=None, defined=None):
    # Before insert_transfers, ops may still read other devices' values.
    transfers_in = module.stage not in ("trace", "place")
    defined = set() if defined is None else defined
    for node in module.nodes if nodes is None else nodes:
        for v in node.operands:
            if v not in defined:
                _fail(node, f"reads %{v.id} before it is defined"
                            + (" (or outside its loop body)" if nodes is not None else ""))
        _check_types(node)
        if node.op == "loop":
            _check_loop(node, transfers_in)
            _check_kinds(module, node, node.body.args)
            _verify_global(module, node.body.nodes, set(node.body.args))
            defined.update(node.results)
            continue
        if node.op == "yield" and nodes is None:
            _fail(node, "a yield outside a loop body")
        _check_kinds(module, node, node.results)
        defined.update(node.results)
        if not node.results:
            continue
        dest = module.devices[node.results[0].type.place]
        if node.op in ("to", "reveal"):
            _check_move(node, module.devices[node.operands[0].type.place], dest)
        for v in node.operands:
            src = module.devices[v.type.place]
            if src.name == dest.name:
                continue
            if node.op == "reveal" or (node.op == "to" and dest.kind != "PYU"):
                continue
            if node.op == "to" and node.attrs.get("explicit") and src.kind == "PYU":
                continue
            if transfers_in:
                _fail(node, f"{dest.name} reads %{v.id}, which lives on {src.name}, with no "
                            "transfer (reveal or explicit to)")
        if "protocol" in node.attrs:
            try:
                try:
                    r = rule(node.attrs["protocol"], node.op, dest.kind)
                except KeyError:
                    r = rule(node.attrs["protocol"], node.op)
            except KeyError as e:
                _fail(node, str(e))
            for res in node.results:
                if res.type.kind != r.result_kind:
                    _fail(node, f"%{res.id} has kind {res.type.kind}, protocol {r.protocol} makes "
                                f"{r.result_kind}")
            kinds = tuple(v.type.kind for v in node.operands)
            if r.device != dest.kind or not r.accepts(kinds, node, module):
                _fail(node, f"protocol {r.protocol} does not run {node.op} on {dest.kind} "
                            f"{dest.name} for operands ({', '.join(kinds) or 'none'})")


def _check_kinds(module, node, values):
    for r in values:
        device = module.devices.get(r.type.place)
        if device is None:
            _fail(node, f"%{r.id} is on unknown device {r.type.place!r}")
        if r.type.kind not in DEVICE_KINDS[device.kind]:
            _fail(node, f"%{r.id} of kind {r.type.kind} cannot live on {device.kind} {device.name}")


def _check_move(node, src, dest):
    """What a ``to`` or ``reveal`` may do: only ``reveal`` opens a secret, only to a PYU or TEE."""
    (v,) = node.operands
    if node.op == "reveal":
        if dest.kind not in ("PYU", "TEE"):
            _fail(node, f"reveal onto {dest.kind} device {dest.name}: a value is revealed to a PYU "
                        "or TEE device")
        if src.kind == "PYU" and src.name != dest.name:
            _fail(node, f"reveal of {src.name}'s plaintext %{v.id}: plaintext moves between PYUs "
                        "only by an explicit to")
        return
    if src.name == dest.name:
        return
    secret = src.kind in ("MPC", "HE", "TEE") or v.type.kind in SECRET_KINDS
    if dest.kind in ("PYU", "TEE") and secret:
        _fail(node, f"to() opens %{v.id} ({src.kind} {src.name}) as plaintext on {dest.name}; "
                    "only reveal may")
    if dest.kind == "TEE" and src.kind != "PYU":
        _fail(node, f"to() from {src.kind} {src.name} into TEE {dest.name}")


def _roles(module):
    """party -> the device kinds it takes part in (none for the dealer)."""
    roles = {p: set() for p in module.parties}
    for d in module.devices.values():
        for p in d.parties:
            roles.setdefault(p, set()).add(d.kind)
    return roles


def is_reveal_label(what):
    return what.endswith("(reveal)")


def _check_endpoints(node, v, src, dst, what, roles):
    """A disclosure or share label must fit who sends and who receives."""
    def needs(party, kinds, role):
        if party in roles and not roles[party] & set(kinds):
            _fail(node, f"{what!r} from {src} to {dst}, but {party} is not {role}")
    if what == EXPLICIT_TO:
        needs(src, ("PYU",), "a PYU's owner")
        needs(dst, ("PYU",), "a PYU's owner")
    elif what == PUBLIC_VALUE:
        if v.type.kind != "public":
            _fail(node, f"{src}'s {v.type.kind} value %{v.id} sent to {dst} as a public value")
    elif what == TO_TEE:
        needs(dst, ("TEE",), "a TEE's party")
    elif what == FROM_TEE:
        needs(src, ("TEE",), "a TEE's party")
    elif is_reveal_label(what):
        needs(dst, ("PYU", "TEE"), "the owner of a PYU or TEE device (where reveals go)")


class _Flow:
    """Per lowered value: does it depend on private plaintext, and which PRG keys mask it."""

    def __init__(self):
        self.private, self.seeds = {}, {}
        self.made_by = {}  # value -> the op that made it
        self.packed = {}   # a pack's result -> the values in it (checked one by one when sent)

    def op(self, node, party):
        ins = node.operands
        private = any(self.private.get(v, False) for v in ins)
        seeds = frozenset().union(*(self.seeds.get(v, frozenset()) for v in ins))
        if node.op in ("input", "call"):
            private = True
        elif node.op == "random":
            seeds = frozenset({node.attrs["seed"]})
        elif node.op.startswith("ot."):
            # OT correlations: drawn from this party's private randomness (like its own
            # PRG key), so they mask what they are mixed into from the peer
            seeds = seeds | {party}
        elif node.op == "recv":
            # a peer's value: plaintext from a peer is private; a share is masked by keys
            # this program cannot see
            private = node.results[0].type.kind == "plain"
            seeds = frozenset() if private else frozenset({f"?{node.attrs['from']}"})
        if node.op == "pack":
            self.packed[node.result] = node.operands
        for r in node.results:
            self.private[r], self.seeds[r] = private, seeds
            self.made_by[r] = node.op

    def bind(self, arg, value):
        self.private[arg] = self.private.get(value, False)
        self.seeds[arg] = self.seeds.get(value, frozenset())
        self.made_by[arg] = self.made_by.get(value)

    def merge(self, arg, value):
        """``arg`` may also hold ``value``: private if either is, masked only by the keys
        masking both."""
        self.private[arg] = self.private.get(arg, False) or self.private.get(value, False)
        self.seeds[arg] = self.seeds.get(arg, frozenset()) & self.seeds.get(value, frozenset())

    def masked(self, v):
        return bool(self.seeds.get(v)) or v.type.kind in SECRET_KINDS


def _knows(party, seed):
    return not seed.startswith("?") and party in seed.split("~")


def _check_flow(node, party, flow):
    """Plaintext becomes a share only by mixing in randomness (or another share)."""
    if node.op in ("random", "recv", "constant", "input", "call", "xfer", "send", "output"):
        return
    plain_in = [v for v in node.operands if v.type.kind == "plain"]
    if not plain_in or any(flow.masked(v) for v in node.operands):
        return
    for r in node.results:
        if r.type.kind in ("public",) + SHARE_KINDS:
            _fail(node, f"{party} relabels plaintext %{plain_in[0].id} as {r.type.kind} %{r.id} "
                        "without masking it")


def _check_unmaskable(node, v, src, dst, what, flow, roles):
    """A share of private data goes only to an MPC (or HE) party, with a mask it cannot remove."""
    if v.type.kind not in SHARE_KINDS or is_reveal_label(what) or not flow.private.get(v):
        return
    if dst in roles and not roles[dst] & {"MPC", "HE"}:
        _fail(node, f"{src} sends {dst} %{v.id} ({what!r}), a {v.type.kind} value of private "
                    f"data, but {dst} is in no MPC device")
    seeds = flow.seeds.get(v, frozenset())
    if all(_knows(dst, s) for s in seeds):
        keys = ", ".join(sorted(seeds)) or "no PRG key"
        _fail(node, f"{src} sends {dst} %{v.id} ({what!r}), a {v.type.kind} value of private "
                    f"data masked only by {keys}, which {dst} holds")


def _verify_lowered(module):
    state = _Lowered(module)
    state.nodes(module.nodes, set())
    # A single party's program pairs with its peers' programs, not with itself.
    if len(state.seen) > 1 and set(state.sends) != set(state.recvs):
        missing = sorted(set(state.sends) ^ set(state.recvs))[0]
        raise VerifyError(f"send/recv do not pair up: (from, to, tag) = {missing}")


class _Lowered:
    """The lowered-IR checks, block by block (a loop body sees only its arguments)."""

    def __init__(self, module):
        self.seen, self.sends, self.recvs = set(), {}, {}
        self.roles, self.flow = _roles(module), _Flow()

    def loop(self, node):
        """A carried value's flow is its start's merged with what the body yields: the
        body is checked once to learn the yields, then again with the merge."""
        _check_loop(node, True)
        body, flow = node.body, self.flow
        carried = body.args[node.attrs["captures"]:]
        for v, a in zip(node.operands, body.args):
            flow.bind(a, v)
        if carried:
            saved = (set(self.seen), dict(self.sends), dict(self.recvs))
            self.nodes(body.nodes, set(body.args))
            self.seen, self.sends, self.recvs = saved
            for a, y in zip(carried, body.nodes[-1].operands):
                flow.merge(a, y)
        self.nodes(body.nodes, set(body.args))
        for r, a in zip(node.results, carried):
            flow.bind(r, a)
            flow.merge(r, body.nodes[-1].operands[carried.index(a)])

    def nodes(self, nodes, defined):
        for node in nodes:
            for v in node.operands:
                if v not in defined:
                    _fail(node, f"reads %{v.id} before it is defined")
            if node.op == "loop":
                self.loop(node)
                defined.update(node.results)
                continue
            _check_types(node)
            if node.op != "yield":
                self.node(node)
            defined.update(node.results)

    def node(self, node):
        roles, flow = self.roles, self.flow
        party = (node.operands[0].type.place if node.op in ("send", "output", "xfer")
                 else node.results[0].type.place)
        self.seen.add(party)
        for v in node.operands:
            if v.type.place != party:
                _fail(node, f"{party} reads %{v.id}, which lives at {v.type.place}")
        if node.op in ("xfer", "send"):
            (v,) = node.operands
            dst = node.result.type.place if node.op == "xfer" else node.attrs["to"]
            what = node.attrs["what"]
            if v.type.kind in ("plain", "public") and what not in PLAINTEXT_DISCLOSURES:
                _fail(node, f"{party}'s plaintext %{v.id} would reach {dst} "
                            f"(sent as {what!r}) without reveal")
            _check_endpoints(node, v, party, dst, what, roles)
            if what == HE_PUBLIC_KEY and (flow.private.get(v) or v.type.dtype != "u8"
                                          or flow.made_by.get(v, "he.keygen") != "he.keygen"):
                _fail(node, f"{party} sends %{v.id} as an HE public key, but it is not one "
                            "made by he.keygen")
            for part in flow.packed.get(v, (v,)):
                _check_unmaskable(node, part, party, dst, what, flow, roles)
            if node.op == "send":
                self.sends[(party, dst, node.attrs["tag"])] = node
        if node.op == "recv":
            self.recvs[(node.attrs["from"], party, node.attrs["tag"])] = node
        _check_flow(node, party, flow)
        flow.op(node, party)


def run(module):
    if _is_lowered(module):
        _verify_lowered(module)
    else:
        _verify_global(module)
    return module
