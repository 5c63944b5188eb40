"""What each party's program discloses, derived from its ops alone.

A bundle's party programs are not trusted: ``mixc run`` (every mode) and
``mixc audit`` call ``check_bundle`` (``verify_for_run``) before anything of
them runs. It holds them to two things:

1. **They are the compiler's lowering of the global program.** The global
   program after select_protocols (``after/select_protocols.mir``) is
   verified (``passes.verify``) and lowered again by this mixc; every party
   file must be that, byte for byte. So a reveal's shares are the protocol's
   final shares of exactly the revealed value, and a message carries nothing
   else: an edit that swaps a result share for an input, however labelled,
   is refused at its line.
2. **No message discloses more than the global program's reveals and
   explicit ``to``s** (``check``, run on the programs as written when one is
   edited, so that a leak is named, and on the compiler's otherwise). A
   ``send``'s ``what`` note and the declared kinds (``:arith``...) play no
   part; they are only echoed in the report.

``check`` gives each value a knowledge class by abstract interpretation of
its party's program (``_Value``):

- ``known``: the parties that can compute it (its party; every party for
  constants and loop counters; a PRG stream's seed holders; a peer a value
  was received from or sent to; whatever is computed from such values only);
- ``hidden[R]``: the inputs (by name) it depends on through values party R
  does not know;
- ``pads``: keystreams it holds linearly, once, so that a party lacking one
  sees a one-time pad: a PRG stream ``(seed, stream)`` (lacked by the
  parties not in ``seed``; one drawn in a loop body is fresh each
  iteration), a party's own randomness from an OT-made triple, a ciphertext
  under a key owner's key (opaque to every other party however often:
  encryption is randomised). ``_RULES`` declares how each op keeps its
  operands' pads; every other op, products and non-linear ones, loses them.

Every ``send`` (a ``pack``'s parts one by one) is a message to its receiver
R. R learns nothing from it if it holds a pad R lacks that masks no other
message to R: messages are peeled one at a time, and a message in a loop
body whose pad is drawn outside the body masks one message per iteration.
Otherwise R can read it, and it is refused if a pad R lacks still masks
another message (a two-time pad; except the two shares of a reveal from an
HE product, ``_pairs``, whose combination is a value of inputs the reveal
gives R), if it depends on an input that no reveal or explicit ``to`` to R
depends on, if it is a share (no input, no pad) while nothing is revealed
to R, or if, with R's other readable messages
from the same sender, it holds more elements (every iteration counted) than
the global program reveals or sends to R from the sender's devices.

Loops are analysed once per body (twice when they carry values: once to
learn what the body yields). Messages pair up across programs by (sender,
receiver, tag): the programs are interpreted side by side, a party pausing
at a ``recv`` until its peer's ``send`` has been interpreted.
"""
from __future__ import annotations

import hashlib
import math
import os
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from .errors import VerifyError
from .ir.core import collector_paused, walk

# ----------------------------------------------------------------- transfer rules
# How each op's result holds its operands' pads (every other op keeps none:
# products and non-linear functions lose the mask).
#   "linear": sums and differences: a pad in exactly one operand survives;
#   "move": moves elements without repeating one (reshape, slice...): pads survive;
#   ("first", k): a fused step linear with unit coefficient in operand k only;
#   "he": a homomorphic op: the ciphertext's key stays, the plaintext's pads are lost;
#   "he_linear": homomorphic sum: ciphertext key stays, plaintext pads as "linear".
LINEAR, MOVE, HE, HE_LINEAR = "linear", "move", "he", "he_linear"
_RULES = {
    "add": LINEAR, "sub": LINEAR, "xor": LINEAR, "neg": MOVE, "not": MOVE,
    "reshape": MOVE, "transpose": MOVE, "squeeze": MOVE, "slice": MOVE,
    "reduce_sum": MOVE, "dynamic_slice": MOVE, "ring_words": MOVE,
    "beaver_finish": ("first", 0), "and_finish": ("first", 0),
    "he.add": HE_LINEAR, "he.sub": HE_LINEAR, "he.neg": HE_LINEAR, "he.add_plain": HE_LINEAR,
    "he.mul_scalar": HE, "he.matmul": HE, "he.mul_elementwise": HE,
    "he.extract": HE_LINEAR,
}
# Ops that move the values of several operands side by side (their parts stay apart).
_JOINS = ("pack", "concatenate")


def _he_pad(owner):
    """A ciphertext under ``owner``'s key: opaque to every other party, however often
    (RLWE encryption is randomised, so no two-time rule applies)."""
    return ("he", owner)


def _lacks(party, pad):
    kind = pad[0]
    if kind == "prg":
        return party not in pad[1].split("~")
    return party != pad[1]


@dataclass(slots=True)  # never changed once made (a change makes another); not frozen:
class _Value:             # 10^5 of them, and a frozen dataclass is slow to make
    known: frozenset
    hidden: tuple          # per party index: input names reached through unknown values
    pads: frozenset
    parts: tuple = ()      # a pack's or concatenation's operands, each checked alone
    size: int = 0          # a part's element count (0: the whole message's)


@dataclass
class Message:
    sender: str
    receiver: str
    node: object
    value: _Value
    loops: tuple           # the loop nodes around the send, outermost first

    @property
    def elements(self):
        """Elements sent, over every iteration of the loops around it."""
        return (self.value.size or _size(self.node.operands[0])) * _times(self.loops)


class Policy:
    """What the global program allows: party -> input names it may learn in the clear,
    and the parties something is revealed to (from the global IR after select_protocols)."""

    def __init__(self):
        self.plain = defaultdict(set)
        self.revealed = defaultdict(list)  # party -> [(node, desc)]
        self.grants = defaultdict(list)  # party -> the reveal and to nodes giving it plaintext
        # (sender, receiver) -> elements the sender may let the receiver read: of the values
        # revealed or sent to it from a device the sender is in, every iteration counted
        self.budget = defaultdict(int)

    def why(self, party):
        """The global program's transfers to ``party``, as words."""
        return ", ".join(f"{n.op} of %{n.operands[0].id}" + (f" ({n.loc})" if n.loc else "")
                         for n in self.grants[party]) or "nothing"

    @classmethod
    def of(cls, module):
        deps = _input_deps(module)
        policy = cls()
        for node, loops in _walk_loops(module.nodes):
            if node.op not in ("to", "reveal") or not node.results:
                continue
            (v,) = node.operands
            src, dst = module.devices[v.type.place], module.devices[node.result.type.place]
            if src.name == dst.name:
                continue
            receivers = dst.parties
            if node.op == "reveal":
                for r in receivers:
                    policy.revealed[r].append((node, f"%{node.result.id}"))
                # a revealed value may be any function of its inputs (a + b reveals b to
                # a's owner): which function is pinned by the programs being the
                # compiler's lowering of this one (check_bundle)
                opens_plain = True
            else:
                opens_plain = src.kind == "PYU" and (dst.kind == "TEE"
                                                     or node.attrs.get("explicit"))
            if opens_plain:
                for r in receivers:
                    for sender in src.parties:
                        policy.budget[(sender, r)] += _size(node.result) * _times(loops)
                    policy.plain[r] |= deps.get(v, set())
                    policy.grants[r].append(node)
        return policy


def _walk_loops(nodes, loops=()):
    """(node, the loop nodes around it) for every node, in program order."""
    for n in nodes:
        yield n, loops
        if n.body is not None:
            yield from _walk_loops(n.body.nodes, loops + (n,))


def _input_deps(module):
    """Global value -> the input names it depends on (a loop's results: on everything
    its body reads)."""
    deps = {}

    def run(nodes):
        for n in nodes:
            if n.op == "input":
                deps[n.result] = {n.attrs["name"]}
                continue
            got = set().union(*(deps.get(v, set()) for v in n.operands))
            if n.body is not None:
                for a, v in zip(n.body.args, n.operands):
                    deps[a] = set(got)
                run(n.body.nodes)
                for n2 in walk(n.body.nodes):
                    for v in n2.operands:
                        got |= deps.get(v, set())
            for r in n.results:
                deps[r] = got
    run(module.nodes)
    return deps


# ---------------------------------------------------------------- interpretation

class _Party:
    """One party's program, interpreted as a generator that pauses at a ``recv`` whose
    message is not in yet."""

    def __init__(self, name, module, parties, mailbox, messages, drawn_at):
        self.name, self.module, self.parties = name, module, parties
        self.drawn_at = drawn_at  # pad -> loop depth it is drawn at
        self.mailbox, self.messages = mailbox, messages
        self.env = {}
        self.none = tuple(frozenset() for _ in parties)
        self.memo = {}
        self.everyone = frozenset(parties)
        self.me = frozenset({name})

    def run(self):
        yield from self.block(self.module.nodes, (), final=True)

    def block(self, nodes, loops, final):
        for node in nodes:
            op = node.op
            if op == "loop":
                yield from self.loop(node, loops, final)
            elif op == "recv":
                key = (node.attrs["from"], self.name, node.attrs["tag"])
                while final and key not in self.mailbox:
                    yield key
                # a probe pass (only learning what a loop yields) does not wait for its peers
                got = self.mailbox.get(key, _Value(frozenset(), self.none, frozenset()))
                self.env[node.result] = self.learnt(got, node.attrs["from"])
            elif op == "send":
                self.send(node, loops, final)
            elif op != "yield" and op != "output":
                self.op(node, loops)

    def loop(self, node, loops, final):
        body = node.body
        k = node.attrs["captures"]
        carried = body.args[k:]
        inner = loops + (node,)
        for v, a in zip(node.operands, body.args):
            self.env[a] = self.env[v]
        if carried:  # once to learn what the body yields, then with it merged in
            yield from self.block(body.nodes, inner, final=False)
            for a, y in zip(carried, body.nodes[-1].operands):
                self.env[a] = self.merge(self.env[a], self.env[y])
        yield from self.block(body.nodes, inner, final)
        for r, a, y in zip(node.results, carried, body.nodes[-1].operands):
            self.env[r] = self.merge(self.env[a], self.env[y])

    def merge(self, a, b):
        hidden = a.hidden if b.hidden is self.none else b.hidden if a.hidden is self.none \
            else tuple(x | y for x, y in zip(a.hidden, b.hidden))
        return _Value(a.known & b.known, hidden, a.pads & b.pads)

    def learnt(self, value, sender):
        """A received value: known to the receiver too; its parts stay apart."""
        hidden = value.hidden if any(value.hidden) else self.none
        return _Value(value.known | {self.name, sender}, hidden, value.pads, value.parts)

    def send(self, node, loops, final):
        (v,) = node.operands
        to = node.attrs["to"]
        value = self.env[v]
        if final:
            for part in value.parts or (value,):
                self.messages.append(Message(self.name, to, node, part, loops))
            self.mailbox[(self.name, to, node.attrs["tag"])] = value
        # the receiver now knows what it was sent
        self.env[v] = _Value(value.known | {to}, value.hidden, value.pads,
                             tuple(_Value(p.known | {to}, p.hidden, p.pads, p.parts, p.size)
                                   for p in value.parts), value.size)

    def op(self, node, loops):
        op = node.op
        made_here = _Party._ORIGINS.get(op)
        if made_here is not None:  # a value made from nothing another party holds
            made_here(self, node, node.attrs, loops)
            return
        env = self.env
        ins = [env[v] for v in node.operands]
        known = _common_known(ins, self.me)
        hidden = self.hidden_of(ins)
        results = node.results
        if op in _JOINS:
            parts = tuple(p for x, v in zip(ins, node.operands)
                          for p in (x.parts or (_Value(x.known, x.hidden, x.pads, (), _size(v)),)))
            # every element of a join is padded when every part is (by its own pads)
            pads = frozenset().union(*(p.pads for p in parts)) \
                if parts and all(p.pads for p in parts) else frozenset()
            env[node.result] = _Value(known, hidden, pads, parts)
            return
        if op == "unpack" and ins[0].parts and len(ins[0].parts) == len(results):
            for r, part in zip(results, ins[0].parts):
                env[r] = part
            return
        self.depth_now = len(loops)
        if op.startswith(("he.", "he_mm.")):
            rule, size = _RULES.get(op), _plaintext_size(node, ins)
            for r in results:
                env[r] = _Value(known, hidden, self.he_pads(node, ins, rule), size=size)
            return
        if len(results) == 1:  # most ops
            env[results[0]] = _Value(known, hidden, self.pads(node, ins, 0))
            return
        for i, r in enumerate(results):
            env[r] = _Value(known, hidden, self.pads(node, ins, i))

    def _input(self, node, a, loops):
        hidden = tuple(frozenset() if p == self.name else frozenset({a["name"]})
                       for p in self.parties)
        self.env[node.result] = _Value(self.me, hidden, frozenset())

    def _public(self, node, a, loops):
        self.env[node.result] = _Value(self.everyone, self.none, frozenset())

    def _random(self, node, a, loops):
        holders = frozenset(a["seed"].split("~")) | self.me
        # a stream drawn in a loop body is offset by the iteration (a fresh one each)
        pad = ("prg", a["seed"], a["stream"], a.get("ring", 64), bool(loops))
        self.drawn_at.setdefault(pad, len(loops))
        self.env[node.result] = _Value(holders & self.everyone | self.me, self.none,
                                       frozenset({pad}))

    def _own(self, node, a, loops):
        self.env[node.result] = _Value(self.me, self.none, frozenset())

    def _keygen(self, node, a, loops):  # (secret key, public key): the public one is everyone's
        self.env[node.results[0]] = _Value(self.me, self.none, frozenset())
        self.env[node.results[1]] = _Value(self.everyone, self.none, frozenset())

    _ORIGINS = {"input": _input, "constant": _public, "loop_index": _public,
                "random": _random, "dp_noise": _own, "he.keygen": _keygen}

    def hidden_of(self, ins):
        """Per party: the inputs reached through operands it does not know."""
        carriers = [x for x in ins if x.hidden is not self.none]
        if not carriers:
            return self.none
        key = tuple((x.hidden, x.known) for x in carriers)
        hidden = self.memo.get(key)
        if hidden is None:
            hidden = self.memo[key] = self.join_hidden(carriers)
        return hidden

    def join_hidden(self, carriers):
        hidden = tuple(frozenset().union(*(x.hidden[i] for x in carriers if p not in x.known))
                       for i, p in enumerate(self.parties))
        return hidden if any(hidden) else self.none

    def pads(self, node, ins, index):
        """The pads of result ``index`` of a node that is not an HE op."""
        op = node.op
        rule = _RULES.get(op)
        if op.startswith("ot.") and op.endswith("_triple") and index < 2:
            # my random a and b of an OT-made triple: my own randomness
            pad = ("ot", self.name, id(node), index)
            self.drawn_at.setdefault(pad, self.depth_now)
            return frozenset({pad})
        if op in ("broadcast_in_dim", "take") and not _repeats(node):
            rule = MOVE
        if rule == LINEAR:
            padded = [x.pads for x in ins if x.pads]
            if len(padded) < 2:  # most ops: no pad shared, nothing to cancel
                return padded[0] if padded else frozenset()
            seen = defaultdict(int)
            for pads in padded:
                for p in pads:
                    seen[p] += 1
            return frozenset(p for p, n in seen.items() if n == 1)
        if rule == MOVE:
            return ins[0].pads
        if isinstance(rule, tuple):
            return ins[rule[1]].pads - frozenset().union(*(x.pads for j, x in enumerate(ins)
                                                            if j != rule[1]))
        return frozenset()

    def he_pads(self, node, ins, rule):
        op = node.op
        if op in ("he.keygen",):
            return frozenset()
        if op in ("he.encrypt", "he_mm.encrypt"):
            return frozenset({_he_pad(self.name)}) | ins[1].pads
        if op in ("he.decrypt", "he_mm.decrypt"):
            return frozenset(p for p in ins[1].pads if p[0] != "he")
        keys = frozenset(p for x in ins for p in x.pads if p[0] == "he")
        if op == "he_mm.eval":  # W . X + mask: the mask's pads survive
            return keys | ins[3].pads
        if rule == HE_LINEAR:
            seen = defaultdict(int)
            for x in ins:
                for p in x.pads:
                    if p[0] != "he":
                        seen[p] += 1
            return keys | frozenset(p for p, n in seen.items() if n == 1)
        return keys


def _common_known(ins, me):
    """Who knows every operand, and ``me``: mostly the same set object throughout, so no
    new set is made then (10^5 ops)."""
    if not ins:
        return me
    known = ins[0].known
    for x in ins[1:]:
        if x.known is not known:
            known = known & x.known
    return known if me <= known else known | me


def _plaintext_size(node, ins):
    """How many ring values a ciphertext holds (what its key owner can read of it)."""
    a = node.attrs
    if "positions" in a:
        return int(np.asarray(a["positions"]).size)
    if "plan" in a:
        m, _k, n = (int(x) for x in a["plan"][:3])
        return m * n
    return max((x.size for x in ins), default=0)


def _size(v):
    return math.prod(v.type.shape)


def _times(loops):
    return math.prod(loop.attrs["trip_count"] for loop in loops)


def _repeats(node):
    """Does a broadcast or gather use an operand element twice (so a pad would be too)?"""
    if node.op == "broadcast_in_dim":
        return int(np.prod(node.attrs["shape"], dtype=np.int64)) != \
            int(np.prod(node.operands[0].type.shape, dtype=np.int64))
    idx = np.asarray(node.attrs["indices"]).ravel()
    return np.unique(idx).size != idx.size


def interpret(programs):
    """party -> Module: every message (Message), interpreted side by side."""
    parties = sorted(programs)
    mailbox, messages, drawn_at = {}, [], {}
    runners = {p: _Party(p, programs[p], parties, mailbox, messages, drawn_at).run()
               for p in parties}
    waiting = {}
    while runners:
        progressed = False
        for p in list(runners):
            if p in waiting and waiting[p] not in mailbox:
                continue
            try:
                waiting[p] = next(runners[p])
                progressed = True
            except StopIteration:
                del runners[p]
                waiting.pop(p, None)
                progressed = True
        if not progressed:
            p, (src, _dst, tag) = next(iter(waiting.items()))
            raise VerifyError(f"{p} waits for message {tag} from {src}, which no program sends")
    return messages, drawn_at


# ---------------------------------------------------------------- judgement

class Disclosure(VerifyError):
    """Messages that disclose more than the global program allows, one line each."""


@dataclass
class Finding:
    message: Message
    verdict: str      # "opaque", "known", "share", "plain"
    detail: str = ""


def judge(messages, drawn_at, policy, parties):
    """Classify every message; the refusals as (Message, reason)."""
    index = {p: i for i, p in enumerate(parties)}
    findings, refusals = [], []
    by_receiver = defaultdict(list)
    for m in messages:
        by_receiver[m.receiver].append(m)
    for r, ms in by_receiver.items():
        lacking = {id(m): _lacking(m, r) for m in ms}
        opaque, stuck = _peel(ms, lacking, drawn_at)
        paired = _pairs(ms, stuck, lacking, drawn_at, policy, index[r])
        for m in ms:
            v = m.value
            if r in v.known:
                findings.append(Finding(m, "known"))
            elif id(m) in opaque:
                findings.append(Finding(m, "opaque"))
            elif id(m) in paired:
                findings.append(paired[id(m)])
            elif id(m) in stuck:
                pad, other = stuck[id(m)]
                refusals.append((m, f"keystream {_pad_name(pad)} masks this message to {r} and "
                                    "another: a two-time pad", [other]))
            else:
                leaked = v.hidden[index[r]] - policy.plain[r]
                if leaked:
                    refusals.append((m, f"{m.sender} sends {r} a value that discloses input(s) "
                                        f"{', '.join(sorted(leaked))}, which no reveal or explicit "
                                        f"to of the global program gives {r}", []))
                elif v.hidden[index[r]]:
                    findings.append(Finding(m, "plain", ", ".join(sorted(v.hidden[index[r]]))))
                elif not policy.revealed[r]:
                    refusals.append((m, f"{m.sender} sends {r} an unmasked share, but the global "
                                        f"program reveals nothing to {r}", []))
                else:
                    findings.append(Finding(m, "share"))
    refusals += _over_budget(findings, policy)
    return findings, refusals


def _over_budget(findings, policy):
    """Each (sender, receiver) pair whose readable messages (plaintext, or shares the
    receiver can open) hold more elements than the global program reveals or sends to the
    receiver from the sender's devices: refused at its first plaintext message (else its
    first share), naming the others."""
    pairs = defaultdict(list)
    for f in findings:
        if f.verdict in ("plain", "share"):
            pairs[(f.message.sender, f.message.receiver)].append(f)
    refusals = []
    for (sender, receiver), fs in pairs.items():
        total = sum(f.message.elements for f in fs)
        if total <= policy.budget[(sender, receiver)]:
            continue
        first = min(fs, key=lambda f: f.verdict != "plain").message
        refusals.append((first, f"{sender} lets {receiver} read {total} elements (plaintext or "
                                f"shares it can open), more than the "
                                f"{policy.budget[(sender, receiver)]} the global program reveals "
                                f"or sends to {receiver} from {sender}'s devices",
                         [f.message for f in fs if f.message is not first]))
    return refusals


def _lacking(m, receiver):
    out = set()
    for p in m.value.pads:
        if _lacks(receiver, p):
            out.add(p)
    return out


def _peel(ms, lacking, drawn_at):
    """One-time-pad peeling: a message with a lacking pad no other remaining message holds
    is uniform whatever the others are; remove it and repeat. Returns the opaque messages'
    ids and, for each message left, a pad it shares and a message it shares it with."""
    holders = defaultdict(list)
    for m in ms:
        if any(p[0] == "he" for p in lacking[id(m)]):
            continue  # a ciphertext the receiver cannot decrypt: its contents stay unseen
        for p in lacking[id(m)]:
            if p[0] == "he":
                continue
            holders[p].append(m)
            if _repeated(m, p, drawn_at):
                holders[p].append(m)  # drawn outside the loop it is sent in: reused
    opaque = {id(m) for m in ms if any(p[0] == "he" for p in lacking[id(m)])}
    count = {p: len(h) for p, h in holders.items()}
    queue = [m for m in ms if id(m) not in opaque]
    changed = True
    while changed:
        changed = False
        rest = []
        for m in queue:
            if any(count.get(p) == 1 for p in lacking[id(m)]):
                opaque.add(id(m))
                for p in lacking[id(m)]:
                    if p in count:
                        count[p] -= 1
                changed = True
            else:
                rest.append(m)
        queue = rest
    stuck = {}
    for m in queue:
        for p in sorted(lacking[id(m)], key=str):
            others = [o for o in holders[p] if o is not m]
            stuck[id(m)] = (p, others[0] if others else m)
            break
    return opaque, stuck


def _pairs(ms, stuck, lacking, drawn_at, policy, r):
    """The two shares of a reveal from an HE product, Enc(r.W - s) under the receiver's
    own key and (x - r).W + s: two messages to one receiver, from one sender, masked by
    a stream of the sender's own (``s``, nothing else the receiver lacks), one of them a
    ciphertext the receiver decrypts, each sent once per draw. The receiver learns their
    combination, s cancelled: a value of inputs. Returns message id -> Finding for each
    such pair whose combination depends on inputs the global program gives the receiver
    in the clear: the plaintext one carries it (and counts against the budget), the
    ciphertext is then a one-time-padded copy. Any other pair stays a two-time pad."""
    by_pad = defaultdict(list)
    for m in ms:
        if id(m) in stuck and len(lacking[id(m)]) == 1:
            (pad,) = lacking[id(m)]
            by_pad[pad].append(m)
    out = {}
    for pad, pair in by_pad.items():
        holders = [m for m in ms if pad in lacking[id(m)]]
        if len(pair) != 2 or len(holders) != 2 or pad[0] != "prg" \
                or {m.sender for m in pair} != {pad[1]} \
                or any(_repeated(m, pad, drawn_at) for m in pair):
            continue
        plain, sealed = sorted(pair, key=lambda m: ("he", m.receiver) in m.value.pads)
        if ("he", plain.receiver) in plain.value.pads \
                or ("he", sealed.receiver) not in sealed.value.pads:
            continue
        hidden = plain.value.hidden[r] | sealed.value.hidden[r]
        if not hidden or hidden - policy.plain[plain.receiver]:
            continue
        out[id(plain)] = Finding(plain, "plain", ", ".join(sorted(hidden)))
        out[id(sealed)] = Finding(sealed, "opaque")
    return out


def _repeated(m, pad, drawn_at):
    """Is ``m`` sent more than once per draw of ``pad`` (a loop between the two)?"""
    depth = drawn_at.get(pad, 0)
    return any(loop.attrs["trip_count"] > 1 for loop in m.loops[depth:])


def _pad_name(p):
    if p[0] == "prg":
        return f"(seed {p[1]!r}, stream {p[2]})"
    return f"{p[0]} of {p[1]}"


# ---------------------------------------------------------------- entry points

class Report:
    """The result of ``check``: every message a party can learn something from, as lines."""

    def __init__(self, findings, policy, where):
        self.findings, self.policy, self.where = findings, policy, where

    def lines(self):
        out = []
        for f in sorted(self.findings, key=lambda f: (f.message.receiver, self.where(f.message))):
            m = f.message
            if f.verdict in ("opaque", "known"):
                continue
            size = int(np.prod(m.node.operands[0].type.shape, dtype=np.int64))
            at = self.where(m)
            if f.verdict == "plain":
                out.append(f"{m.receiver} learns from {m.sender} at {at} ({size} elements) a "
                           f"value of input(s) {f.detail}, which the global program's "
                           f"{self.policy.why(m.receiver)} give {m.receiver}")
            else:
                reveals = ", ".join(f"{desc}" + (f" ({n.loc})" if n.loc else "")
                                    for n, desc in self.policy.revealed[m.receiver])
                out.append(f"{m.receiver} learns a share from {m.sender} at {at} "
                           f"({size} elements): its part of the reveal of {reveals}")
        return out

    def counts(self):
        c = defaultdict(int)
        for f in self.findings:
            c[f.verdict] += 1
        return dict(c)

    def text(self):
        c = self.counts()
        head = [f"messages checked: {sum(c.values())} ({c.get('opaque', 0)} masked by a pad "
                f"the receiver lacks, {c.get('known', 0)} already known to the receiver, "
                f"{c.get('share', 0)} shares of reveals, {c.get('plain', 0)} plaintext "
                "disclosures)"]
        learnt = [f"- {line}" for line in self.lines()] or ["- nothing"]
        return "\n".join(head + ["what each party learns (derived from the party programs):"]
                         + learnt) + "\n"


@collector_paused()
def check(programs, policy, filenames=None, texts=None):
    """Check every party's program (party -> Module) against ``policy`` (a Policy, or the
    global program after select_protocols, which is verified first); raise
    ``VerifyError`` listing each refused message as ``<file>:<line>: ...``, else return
    the ``Report``. ``filenames``: party -> the file named in messages; ``texts``: party ->
    its program text (printed if not given), read only to find line numbers."""
    if not isinstance(policy, Policy):
        from .passes import verify
        verify.run(policy)
        policy = Policy.of(policy)
    parties = sorted(programs)
    messages, drawn_at = interpret(programs)
    findings, refusals = judge(messages, drawn_at, policy, parties)
    where = _Locator(programs, filenames or {}, texts or {})
    if refusals:
        raise Disclosure("\n".join(
            f"{where(m)}: {reason}" + (f" (with {', '.join(where(o) for o in related)})"
                                       if related else "")
            for m, reason, related in sorted(refusals, key=lambda r: where(r[0]))))
    return Report(findings, policy, where)


class _Locator:
    """``file:line`` of a node in its party's program text (lines found on first use)."""

    def __init__(self, programs, filenames, texts):
        self.programs, self.filenames, self.texts = programs, filenames, texts
        self.lines = {}

    def __call__(self, m):
        party = m.sender
        if party not in self.lines:
            text = self.texts.get(party)
            if text is None:
                from .ir.printer import print_module
                text = print_module(self.programs[party])
            self.lines[party] = dict(zip(map(id, walk(self.programs[party].nodes)),
                                         node_lines(text)))
        name = self.filenames.get(party, f"{party}.mir")
        return f"{name}:{self.lines[party].get(id(m.node), '?')}"


def node_lines(text):
    """The line number of each node of a program text, in ``walk`` order."""
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith(("#", "module ", "parties ", "device ", "^(", "}")):
            continue
        out.append(i)
    return out


LOWERING = ("lower", "hoist_invariants", "partition", "coalesce_messages")


def compile_parties(global_module, passes=LOWERING, keep_lowered=True):
    """Each party's program as this compiler lowers the global program (after
    select_protocols) with ``passes`` (those of LOWERING the bundle was built with): what
    a bundle's party files must be, byte for byte; and the lowered global program (None
    unless ``keep_lowered``: the party programs then take over its nodes)."""
    from .passes import partition, run_pipeline
    global_module.stage = "select_protocols"
    lowered = run_pipeline(global_module, passes=[p for p in LOWERING if p in passes])
    if not keep_lowered:
        return partition.split(lowered, consume=True), None
    return partition.split(lowered), lowered


@collector_paused()
def check_bundle(directory, label=None, derived=None, for_audit=True):
    """Check a bundle directory before anything of it runs: its global program (after
    select_protocols) verifies; every party file is exactly what the compiler makes of
    it (so a reveal's shares are the protocol's final shares of the revealed value, and
    no message carries anything else); and ``check`` finds no message disclosing more
    than the global program's reveals and explicit ``to``s (an edited party file is
    checked as written first, so that a leak is named). ``label``: the directory as
    named in messages (``bundle/alice.mir:12``). ``derived``: called with party -> Module
    as soon as the compiler's programs are made, before they are compared and checked
    (``mixc run --local`` hands them to its parties meanwhile). Returns the Checked
    bundle (one that can print its ``audit`` only if ``for_audit``)."""
    made = _Derivation(directory, label, keep_lowered=for_audit)
    if derived is not None:
        derived(made.programs)
    texts = made.compare_files()
    report = check(made.programs, made.policy, made.names, texts)
    return Checked(made.manifest, report, made.programs, made.selected, made.lowered)


class _Derivation:
    """The first half of ``check_bundle``: the bundle's global program parsed and verified,
    its Policy, and each party's program as this compiler lowers it (``programs``), with
    the file it must equal (``names``: as named in messages); the lowered global program
    too if ``keep_lowered`` (the audit reads it), else None."""

    def __init__(self, directory, label=None, keep_lowered=True):
        from pathlib import Path
        from .bundle import _filename, _manifest, _read_text
        from .errors import MixcError
        from .ir.parser import parse_module
        from .passes import verify
        d = self.directory = Path(directory)
        self.manifest = manifest = _manifest(d)
        prefix = (label if label is not None else str(d)).rstrip("/")
        g = d / "after" / "select_protocols.mir"
        if not g.is_file():
            raise MixcError(f"{g}: missing from the bundle (the global program the party "
                            "programs are checked against)")
        gname = f"{prefix}/after/{g.name}"
        self.selected = parse_module(_read_text(g), filename=gname)
        verify.run(self.selected)
        # read before lowering rewires the global program's nodes
        self.policy = Policy.of(self.selected)
        built_with = manifest.get("passes", LOWERING)
        if "lower" not in built_with or "partition" not in built_with:
            raise MixcError(f"bundle {d} was built without lowering and partition: it has no "
                            "party programs to run")
        self.programs, self.lowered = compile_parties(self.selected, built_with, keep_lowered)
        if sorted(self.programs) != sorted(manifest["parties"]):
            raise VerifyError(f"{gname}: its parties {', '.join(sorted(self.programs))} are "
                              f"not the manifest's {', '.join(sorted(manifest['parties']))}")
        self.files = {p: d / f"{_filename(p)}.mir" for p in self.programs}
        self.names = {p: f"{prefix}/{f.name}" for p, f in self.files.items()}

    def compare_files(self):
        """Refuse a party file that is not its program's text (``_refuse_edited``: the
        leak the edit makes, or its first differing line); -> party -> text."""
        from .bundle import _read_text
        from .ir.printer import print_module
        texts, on_disk = {}, {}
        for p, f in self.files.items():
            texts[p] = print_module(self.programs[p])
            on_disk[p] = _read_text(f) if f.is_file() else None
        edited = [p for p in self.programs if on_disk[p] is not None and on_disk[p] != texts[p]]
        if edited:
            _refuse_edited(self.programs, self.policy, self.names,
                           {p: on_disk[p] for p in edited}, texts)
        return texts


def _refuse_edited(programs, policy, names, edited, texts):
    """Raise for the ``edited`` party files (party -> text): the leak they make, if the
    analysis of the files as written finds one (named at its line), else their first
    line that differs from the compiler's."""
    from .ir.parser import parse_module
    written = dict(programs)
    written.update({p: parse_module(t, filename=names[p]) for p, t in edited.items()})
    try:
        check(written, policy, names, edited)
    except Disclosure:
        raise
    except Exception:  # noqa: BLE001 - an edit the analysis cannot follow: refused below
        pass
    raise VerifyError("\n".join(_first_difference(names[p], edited[p], texts[p])
                                 for p in edited))


class Checked:
    """A bundle that passed ``check_bundle``: its Report, and party -> Module (the
    compiler's, identical to the files)."""

    def __init__(self, manifest, report, programs, selected, lowered):
        self.manifest, self.report, self.programs = manifest, report, programs
        self._selected, self._lowered = selected, lowered

    def audit(self):
        """The audit (``mixc.audit.audit_text``) of the checked programs, then what each
        party learns from them."""
        from .audit import audit_text
        text = audit_text(self.manifest["program"], {"select_protocols": self._selected},
                          self._lowered)
        return (text.rstrip("\n") + "\n\nverified (mixc.disclosure): every party program is "
                "what the global program compiles to\n" + self.report.text())


def _first_difference(name, got, want):
    got_lines, want_lines = got.splitlines(), want.splitlines()
    for i, (a, b) in enumerate(zip(got_lines, want_lines), 1):
        if a != b:
            return (f"{name}:{i}: not what the global program compiles to: this line is "
                    f"`{_clip(a)}`, the compiler's is `{_clip(b)}` (edited, or built by "
                    "another mixc: rebuild the bundle)")
    i = min(len(got_lines), len(want_lines)) + 1
    return (f"{name}:{i}: not what the global program compiles to: its length differs "
            "(edited, or built by another mixc: rebuild the bundle)")


def _clip(line, n=120):
    line = line.strip()
    return line if len(line) <= n else line[:n] + "..."


def check_built(bundle):
    """``check`` a Bundle made by ``mixc.bundle.build`` (its modules in memory)."""
    graph = bundle.stages.module("select_protocols") if hasattr(bundle.stages, "module") else None
    if graph is None:
        from .ir.parser import parse_module
        graph = parse_module(bundle.stages["select_protocols"])
    return check(bundle.programs, graph)


def verify_for_run(directory, label=None):
    """``check_bundle`` before a run, remembered: a bundle whose exact texts (and this
    mixc's sources) passed before is not checked again (a key in the user's cache
    directory, which whoever ships a bundle cannot write). Returns party -> the checked
    Module, or None when remembered."""
    pending = RunCheck(directory, label)
    return pending.run().programs if pending.needed else None


class RunCheck:
    """``verify_for_run`` in two steps, so that a caller can do other work between them
    (``mixc run --local`` starts its parties while it checks): the cheap part at once
    (every party file's hash is the manifest's; is the bundle remembered?), then ``run``
    when ``needed``."""

    def __init__(self, directory, label=None):
        from pathlib import Path
        from .bundle import check_programs
        check_programs(directory)  # an edit without new hashes: "edited after mixc build"
        self.directory, self.label = directory, label
        self.key = _bundle_key(Path(directory))
        self.needed = self.key is None or not (_cache_dir() / self.key).is_file()

    def run(self, derived=None):
        """``check_bundle``, remembered once passed: the Checked bundle."""
        checked = check_bundle(self.directory, self.label, derived, for_audit=False)
        remember(self.directory, self.key)
        return checked

    def start(self):
        """``run`` for a party about to connect: the compiler's programs are derived and
        the files compared here, while ``check`` (interpreting every message: a fifth of
        the work) goes on in a forked child when this host has a core to spare. -> (party
        -> Module, ``finish``): ``finish()`` returns once the check passed (remembered) or
        raises its refusal; the caller runs no op before. An edited file is refused here,
        before ``start`` returns."""
        made = _Derivation(self.directory, self.label, keep_lowered=False)

        def judged():
            check(made.programs, made.policy, made.names)

        def passed():
            remember(self.directory, self.key)

        if not _spare_core():
            made.compare_files()
            judged()
            passed()
            return made.programs, lambda: None
        child = _Child(judged, then=passed)
        try:
            made.compare_files()
        except BaseException:
            child.cancel()
            raise
        child.confirm()
        return made.programs, child.finish

    def run_once_per_host(self, meanwhile, wait=600.0, checking=None):
        """``checking()`` (``run`` by default), unless another process of this user checks
        the same bundle right now (parties of one bundle started together on one host):
        then ``meanwhile()`` (what a remembered bundle needs instead: reading the party's
        file), wait for that check and, if it passed (remembered), skip this one. -> (what
        ``checking`` returned or None, what ``meanwhile`` returned or None). A lock file in
        the cache, held while checking (by a child ``start`` forks too, until it ends); a
        check that holds it beyond ``wait`` s is not waited for further."""
        import fcntl
        checking = checking or self.run
        if self.key is None:
            return checking(), None
        try:
            _cache_dir().mkdir(parents=True, exist_ok=True)
            fd = os.open(_cache_dir() / f"{self.key}.lock", os.O_CREAT | os.O_RDWR, 0o600)
        except OSError:  # an unwritable cache: check here
            return checking(), None
        with os.fdopen(fd, "rb") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                got = meanwhile()
                if _locked_within(lock, wait) and (_cache_dir() / self.key).is_file():
                    return None, got
            return checking(), None


def _spare_core():
    """Can a forked child run beside this process: another core, and no other thread
    (a fork copies only the calling thread; a lock another one holds would stay held),
    JAX's native ones included (a ``mixc run`` has not imported it by then)?"""
    import sys
    import threading
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity call on this OS
        cores = os.cpu_count() or 1
    return (cores > 1 and threading.active_count() == 1 and "jax" not in sys.modules
            and hasattr(os, "fork"))


class _Child:
    """``work()`` in a forked child, and ``then()`` after it there once the parent
    ``confirm``s (what the parent checks meanwhile passed too); ``finish`` waits for the
    child and raises what it raised (pickled back through a pipe); ``cancel`` kills it.
    The child exits without running this process's exit handlers or flushing its
    buffers."""

    def __init__(self, work, then):
        verdict_read, verdict_write = os.pipe()
        go_read, self._go = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            os.close(verdict_read)
            os.close(self._go)
            self._child(work, then, go_read, verdict_write)
        os.close(verdict_write)
        os.close(go_read)
        self._verdict = verdict_read

    @staticmethod
    def _child(work, then, go, verdict_fd):
        import pickle
        status, verdict = 0, None
        try:
            work()
            if os.read(go, 1) == b"1":
                then()
        except BaseException as e:  # noqa: BLE001 - handed to the parent, which raises it
            status, verdict = 1, e
        try:
            with os.fdopen(verdict_fd, "wb") as f:
                try:
                    pickle.dump(verdict, f)
                except Exception:  # noqa: BLE001 - an exception that does not pickle
                    pickle.dump(VerifyError(str(verdict)), f)
        finally:
            os._exit(status)

    def confirm(self):
        try:
            os.write(self._go, b"1")
        except BrokenPipeError:
            pass  # the child ended already (its work raised): ``finish`` says why
        os.close(self._go)

    def cancel(self):
        import signal
        os.kill(self.pid, signal.SIGKILL)
        os.close(self._go)
        self._wait()

    def finish(self):
        import pickle
        got, status = self._wait()
        if not got:
            raise VerifyError(f"the bundle check ended without a verdict (exit status {status})")
        verdict = pickle.loads(got)
        if verdict is not None:
            raise verdict

    def _wait(self):
        with os.fdopen(self._verdict, "rb") as f:
            got = f.read()
        return got, os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])


def _locked_within(lock, wait):
    """Take the exclusive lock on the open file ``lock`` within ``wait`` s (-> whether)."""
    import fcntl
    import time
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)


def remember(directory, key=None):
    """Note in the user's cache that the bundle in ``directory``, as its files are now,
    passed (``mixc build`` does, for the bundle it saves: the compiler's own output,
    checked by ``mixc.bundle.check_disclosure``)."""
    from pathlib import Path
    key = key or _bundle_key(Path(directory))
    if key is None:
        return
    try:
        (_cache_dir()).mkdir(parents=True, exist_ok=True)
        (_cache_dir() / key).write_text("verified\n")
    except OSError:
        pass  # an unwritable cache only costs the next run a check


def _cache_dir():
    from pathlib import Path
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "mixc" / "verified"


def _bundle_key(d):
    """sha256 over the bundle's checked texts and this mixc's sources (None if unreadable)."""
    from .bundle import _filename, _manifest
    h = hashlib.sha256()
    try:
        manifest = _manifest(d)
        files = [d / "after" / "select_protocols.mir"] + \
            [d / f"{_filename(p)}.mir" for p in sorted(manifest["parties"])]
        for f in files:
            data = f.read_bytes()
            h.update(f.name.encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
    except OSError:
        return None
    h.update(_sources_key().encode())
    return h.hexdigest()


def _sources_key():
    """This mixc's sources, by path, size and modification time."""
    from pathlib import Path
    root = Path(__file__).resolve().parent
    parts = []
    for f in sorted(root.rglob("*.py")):
        st = f.stat()
        parts.append(f"{f.relative_to(root)}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()
