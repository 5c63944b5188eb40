"""The passes, checked on their printed IR (filecheck style) and by the verifier.

``bundle.stages[name]`` is the global IR printed after pass ``name``;
``bundle.text(party)`` is one party's program. The checks read those texts the
way an auditor would: which values move where, which protocol runs each op,
what each party's program contains, and that everything re-parses to the same
text. The verifier must also refuse hand-built modules that leak.
"""
import re

import jax.numpy as jnp
import numpy as np
import pytest

import mixc
from mixc.bundle import build, simulate
from mixc.errors import VerifyError
from mixc.ir.core import Module, TensorType
from mixc.ir.parser import parse_module
from mixc.ir.printer import print_module
from mixc.passes import PIPELINE, verify

LINE = re.compile(r"^(?:(?P<results>%\d+: \S+(?:, %\d+: \S+)*) = )?(?P<op>\w+)\((?P<operands>[^)]*)\)"
                  r"(?P<rest>.*)$")
TYPE = re.compile(r"%(?P<id>\d+): (?P<dtype>\w+)\[(?P<shape>[\d,]*)\]@(?P<place>[\w\"~.-]+)"
                  r"(?::(?P<kind>\w+))?")


class Op:
    """One printed node line, split into its parts."""

    def __init__(self, line):
        m = LINE.match(line)
        assert m, f"not a node line: {line!r}"
        self.line, self.op = line, m["op"]
        self.results = [t.groupdict() for t in TYPE.finditer(m["results"] or "")]
        self.operands = [int(x.strip()[1:]) for x in m["operands"].split(",") if x.strip()]
        self.attrs = m["rest"]

    @property
    def place(self):
        return self.results[0]["place"] if self.results else None

    @property
    def kind(self):
        return (self.results[0]["kind"] or "plain") if self.results else None

    def attr(self, name):
        m = re.search(rf'\b{name}=("[^"]*"|[^,}}]+)', self.attrs)
        return m and m.group(1).strip('"')


def node_lines(text):
    return [Op(l) for l in text.splitlines() if l.startswith("%") or re.match(r"^\w+\(", l)]


def check_lines(text, *patterns):
    """FileCheck-ish: each regex matches a line, in order; returns the matches."""
    lines, at, found = text.splitlines(), 0, []
    for pat in patterns:
        rx = re.compile(pat)
        for i in range(at, len(lines)):
            m = rx.search(lines[i])
            if m:
                found.append(m)
                at = i + 1
                break
        else:
            pytest.fail(f"no line matching {pat!r} after line {at}:\n{text}")
    return found


@pytest.fixture(scope="module")
def bundle(cluster):
    """x (p1) used by two MPC calls, y (p2), z (p1) used only at p1; public constants."""
    p1, p2, mpc = cluster.p1, cluster.p2, cluster.mpc

    @mixc.program
    def prog(x: mixc.Input(p1, (2, 3)), y: mixc.Input(p2, (3,)), z: mixc.Input(p1, (2,))):
        h = mixc.device(mpc)(lambda a, b: a @ b + jnp.ones(2) * 2.0)(x, y)
        s = mixc.device(mpc)(lambda a, h: jnp.sum(a, axis=1) - h / 4.0)(x, h)
        own = mixc.device(p1)(lambda z: jnp.tanh(z))(z)
        return {"s": mixc.reveal(s, p1), "h": mixc.reveal(h, p2), "own": own}
    return build(prog, verify_between=True)


def inputs_of(text):
    return {o.attr("name"): o.results[0]["id"] for o in node_lines(text) if o.op == "input"}


def test_pipeline_stages_in_order(bundle):
    assert list(bundle.stages) == [n for n, _ in PIPELINE]


def test_place_has_no_transfers_yet(bundle):
    text = bundle.stages["place"]
    assert not [o for o in node_lines(text) if o.op == "to"]
    # every value has a device and a kind
    for o in node_lines(text):
        for r in o.results:
            assert r["place"] in ("p1", "p2", "mpc")


def test_insert_transfers_one_to_per_input_used_on_mpc(bundle):
    text = bundle.stages["insert_transfers"]
    ids = inputs_of(text)
    tos = [o for o in node_lines(text) if o.op == "to"]
    for name in ("x", "y"):
        # CHECK: %N: ...@mpc:arith = to(%<input>)
        shared = [o for o in tos if o.operands == [int(ids[name])]]
        assert len(shared) == 1, f"input {name} should be shared once:\n{text}"
        assert shared[0].place == "mpc" and shared[0].kind == "arith"
    # z is only used at its owner: it never moves
    assert not [o for o in tos if o.operands == [int(ids["z"])]]
    check_lines(text,
                rf"^%\d+: f32\[2,3\]@p1 = input\(\) .*name=\"x\"",
                rf"^%\d+: f32\[2,3\]@mpc:arith = to\(%{ids['x']}\)",
                rf"^%\d+: f32\[3\]@mpc:arith = to\(%{ids['y']}\)",
                r"= dot_general\(")
    # after the pass every non-transfer op reads only values on its own device
    places = {r["id"]: r["place"] for o in node_lines(text) for r in o.results}
    for o in node_lines(text):
        if o.op not in ("to", "reveal", "output"):
            assert all(places[str(v)] == o.place for v in o.operands), o.line


def test_select_protocols_every_op_has_a_protocol(bundle):
    text = bundle.stages["select_protocols"]
    mpc_ops = [o for o in node_lines(text) if o.place == "mpc"]
    assert mpc_ops
    for o in node_lines(text):
        assert o.attr("protocol") in ("arith2pc", "plaintext"), o.line
    for o in mpc_ops:
        if o.kind == "public":
            assert o.attr("protocol") == "plaintext", o.line
        else:
            assert o.kind == "arith" and o.attr("protocol") == "arith2pc", o.line
    # the constants and what follows from them alone are public
    check_lines(text, r"@mpc:public = constant\(\) \{protocol=\"plaintext\"",
                r"@mpc:public = mul\(.*protocol=\"plaintext\"")
    # reveals and shares are arith2pc; the PYU call is plaintext
    assert all(o.attr("protocol") == "arith2pc" for o in node_lines(text) if o.op == "reveal")
    assert [o.attr("protocol") for o in node_lines(text) if o.op == "call"] == ["plaintext"]


def test_lower_places_every_node_at_a_party(bundle):
    text = bundle.stages["lower"]
    ops = node_lines(text)
    assert {o.place for o in ops if o.results} <= {"alice", "bob", "dealer"}
    xfers = [o for o in ops if o.op == "xfer"]
    assert xfers and all(o.attr("what") for o in xfers)
    assert not [o for o in ops if o.op in ("to", "reveal", "send", "recv")]


def test_per_party_programs_hold_only_their_party(bundle):
    assert set(bundle.parties) == {"alice", "bob", "dealer"}
    sends, recvs = set(), set()
    for party in bundle.parties:
        text = bundle.text(party)
        ops = node_lines(text)
        places = set(re.findall(r"@([\w\"~.-]+?)(?::\w+)?(?=[ ,])", "\n".join(o.line for o in ops)))
        assert places == {party}, f"{party}'s program mentions {places}"
        assert not [o for o in ops if o.op in ("to", "reveal", "xfer")]
        assert any(o.op == "send" for o in ops), party
        # the MPC parties exchange messages; the dealer only sends (corrections)
        assert any(o.op == "recv" for o in ops) == (party != "dealer"), party
        for o in ops:
            if o.op == "send":
                sends.add((party, o.attr("to"), o.attr("tag")))
            if o.op == "recv":
                recvs.add((o.attr("from"), party, o.attr("tag")))
        # what a party receives is never someone else's plaintext here (no explicit to)
        for o in ops:
            if o.op == "recv":
                assert o.kind in ("arith", "masked") or "reveal" in o.attr("what"), o.line
    assert sends == recvs


def test_inputs_and_outputs_stay_with_their_owner(bundle):
    alice, bob, dealer = (bundle.text(p) for p in ("alice", "bob", "dealer"))
    assert set(inputs_of(alice)) == {"x", "z"} and set(inputs_of(bob)) == {"y"}
    assert not inputs_of(dealer)
    outs = {p: [o.attr("name") for o in node_lines(bundle.text(p)) if o.op == "output"]
            for p in bundle.parties}
    assert outs == {"alice": ["s", "own"], "bob": ["h"], "dealer": []}
    assert "call(" in alice and "call(" not in bob


def test_party_programs_round_trip(bundle):
    for party in bundle.parties:
        text = bundle.text(party)
        m = parse_module(text, filename=f"{party}.mir")
        assert print_module(m) == text
        assert m == bundle.programs[party]
        verify.run(m)  # each party's program verifies on its own


def test_stages_round_trip(bundle):
    for name, text in bundle.stages.items():
        assert print_module(parse_module(text)) == text, name


def test_round_trip_after_save_load(bundle, tmp_path):
    from mixc.bundle import Bundle
    loaded = Bundle.load(bundle.save(tmp_path / "b"))
    for party in bundle.parties:
        assert loaded.text(party) == bundle.text(party)
    assert loaded.hash == bundle.hash


def test_bundle_simulates(bundle):
    x = np.arange(6, dtype=np.float32).reshape(2, 3) / 4
    y, z = np.array([1.0, -1.0, 0.5], np.float32), np.array([0.1, -2.0], np.float32)
    out = simulate(bundle, {"x": x, "y": y, "z": z})
    h = x @ y + 2.0
    np.testing.assert_allclose(out["h"], h, atol=1e-4)
    np.testing.assert_allclose(out["s"], x.sum(1) - h / 4.0, atol=1e-4)
    np.testing.assert_allclose(out["own"], np.tanh(z), atol=1e-6)


# ------------------------------------------------------------ verifier rejects leaks

def _lowered_module(cluster, what, kind="plain"):
    """alice's plaintext input x, sent to bob by an ``xfer`` marked ``what``."""
    m = Module("leak", devices={"p1": cluster.p1, "p2": cluster.p2}, parties=("alice", "bob"))
    x = m.add("input", (), [TensorType("f32", (3,), "alice", "plain")],
              {"name": "x", "dtype": "f32", "shape": (3,)}).result
    if kind != "plain":
        x = m.add("random", (), [TensorType("u64", (3,), "alice", kind)],
                  {"shape": (3,), "seed": "alice~bob", "stream": 1}).result
    m.add("xfer", [x], [x.type.with_(place="bob")], {"tag": 1, "what": what}, "leak.py:3")
    return m


def test_verifier_rejects_plain_input_sent_as_share(cluster):
    with pytest.raises(VerifyError, match=r"leak\.py:3: xfer: alice's plaintext %0 would reach bob"):
        verify.run(_lowered_module(cluster, "share"))


def test_verifier_accepts_the_same_xfer_when_allowed(cluster):
    verify.run(_lowered_module(cluster, "plaintext (explicit to)"))
    verify.run(_lowered_module(cluster, "share", kind="arith"))


def test_verifier_rejects_edited_party_text(cluster):
    """A real per-party program, edited so alice's explicit-to plaintext claims to be a share."""
    p1, p2 = cluster.p1, cluster.p2

    @mixc.program
    def moved(x: mixc.Input(p1, (3,)), y: mixc.Input(p2, (3,))):
        return mixc.device(p2)(lambda a, b: a * b)(mixc.to(x, p2), y)
    b = build(moved, verify_between=True)
    text = b.stages["lower"]
    assert text.count('what="plaintext (explicit to)"') == 1
    verify.run(parse_module(text))
    leaky = text.replace('what="plaintext (explicit to)"', 'what="share"')
    with pytest.raises(VerifyError, match="plaintext .* would reach bob"):
        verify.run(parse_module(leaky))
    alice = b.text("alice").replace('what="plaintext (explicit to)"', 'what="share"')
    with pytest.raises(VerifyError, match="would reach bob"):
        verify.run(parse_module(alice))


def _global_module(cluster, revealed):
    """x at p1, shared to mpc; a p1 op reads the shared value (through a reveal or not)."""
    m = Module("leak", devices={"p1": cluster.p1, "mpc": cluster.mpc}, parties=("alice", "bob"))
    t = TensorType("f32", (3,), "p1", "plain")
    x = m.add("input", (), [t], {"name": "x", "dtype": "f32", "shape": (3,)}).result
    s = m.add("to", [x], [t.with_(place="mpc", kind="arith")], {}, "leak.py:2").result
    if revealed:
        s = m.add("reveal", [s], [t], {"explicit": True}, "leak.py:3").result
    y = m.add("neg", [s], [t], {}, "leak.py:4").result
    m.add("output", [y], [], {"name": "y"})
    return m


def test_verifier_rejects_pyu_reading_mpc_without_reveal(cluster):
    with pytest.raises(VerifyError, match=r"leak\.py:4: neg: p1 reads %1, which lives on mpc, with no transfer"):
        verify.run(_global_module(cluster, revealed=False))
    verify.run(_global_module(cluster, revealed=True))


def test_verifier_rejects_edited_global_text(bundle):
    """The select_protocols stage with the reveal to bob replaced by a plain op."""
    text = bundle.stages["select_protocols"]
    verify.run(parse_module(text))
    (line,) = [l for l in text.splitlines() if "@p2 = reveal(" in l]
    leaky = text.replace(line, line.replace("reveal(", "neg(").replace(', protocol="arith2pc"', ""))
    with pytest.raises(VerifyError, match="p2 reads %\\d+, which lives on mpc, with no transfer"):
        verify.run(parse_module(leaky))


def test_verifier_rejects_missing_transfer(bundle):
    """An MPC op with a protocol that reads p1's plaintext directly (the `to` removed)."""
    text = bundle.stages["select_protocols"]
    ids = inputs_of(text)
    (to_line,) = [l for l in text.splitlines() if re.search(rf"= to\(%{ids['y']}\)", l)]
    shared = to_line.split(":")[0]
    rest = text.replace(to_line + "\n", "")
    leaky = re.sub(rf"{shared}(?=[,)])", f"%{ids['y']}", rest)
    with pytest.raises(VerifyError, match="transfer missing|reads %"):
        verify.run(parse_module(leaky))
