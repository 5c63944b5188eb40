"""The TEE device and the seed's FL demo (examples/fl.py), both variants.

- both variants simulate to what the same algorithm gives in plain JAX;
- every pass's output verifies, and so does every party's program;
- the TEE variant runs as 4 real processes under ``mixc run --local``;
- the audit states the TEE trust assumption (and the dealer, for MPC), every
  disclosure with the author's line, and what crosses between parties;
- ``graph.html`` is well-formed, self-contained, and shows every party;
- TEE placement rules: what needs reveal is refused at the author's line.
"""
import importlib.util
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

import mixc
from mixc import device, reveal, to
from mixc.bundle import build, simulate
from mixc.errors import TraceError
from mixc.ir.parser import parse_module
from mixc.passes import verify

REPO = Path(__file__).resolve().parent.parent


def _load_fl():
    spec = importlib.util.spec_from_file_location("mixc_example_fl", REPO / "examples" / "fl.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fl = _load_fl()


@pytest.fixture(scope="module")
def data():
    return fl.make_data()


@pytest.fixture(scope="module")
def bundles():
    return {name: build(prog, verify_between=True) for name, prog in fl.PROGRAMS.items()}


# ------------------------------------------------------------ the FL demo

@pytest.mark.parametrize("variant", ["mpc", "tee"])
def test_fl_matches_plain_jax(variant, bundles, data):
    out = simulate(bundles[variant], data)
    ref = fl.reference(data)
    assert set(out) == {"w0", "w1", "w2"}
    tol = fl.TOLERANCE if variant == "mpc" else 1e-5
    for k in ref:
        np.testing.assert_allclose(out[k], ref[k], atol=tol)
    # every worker ends with the same (revealed) mean, and training moved it
    np.testing.assert_array_equal(out["w0"], out["w1"])
    assert np.abs(out["w0"]).max() > 0.05


def test_fl_parties(bundles):
    assert bundles["mpc"].parties == ("Client[0]", "Client[1]", "Client[2]", "Server[0]",
                                      "Server[1]", "dealer")
    assert bundles["tee"].parties == ("Client[0]", "Client[1]", "Client[2]", "Server")


@pytest.mark.parametrize("variant", ["mpc", "tee"])
def test_fl_party_programs_verify(variant, bundles):
    b = bundles[variant]
    for party in b.parties:
        verify.run(parse_module(b.text(party)))


def test_fl_tee_messages_are_labelled(bundles):
    b = bundles["tee"]
    client = b.text("Client[0]")
    # the rounds are one loop in every party's program: one message of each kind in it
    assert f"trip_count={fl.ROUNDS}" in client
    assert client.count('what="plaintext to trusted TEE"') == 1
    assert client.count('what="plaintext revealed by TEE"') == 1
    # the client's program names the TEE it trusts, so it can be checked on its own
    assert 'device aggregator = TEE("Server")' in client
    server = b.text("Server")
    assert server.count("call(") == 1 and "input(" not in server


def test_fl_mpc_clients_share_outside_the_mpc_device(bundles):
    b = bundles["mpc"]
    client = b.text("Client[0]")
    # one share goes to Server[1]; Server[0]'s share comes from their common PRG key
    assert client.count('to="Server[1]", what="share"') == 1
    assert 'seed="Client[0]~Server[0]"' in client
    assert 'what="plaintext' not in client  # no plaintext leaves a client in this variant
    assert b.text("Server[0]").count('what="share (reveal)"') == fl.WORKERS


def test_fl_tee_mixc_run_local(tmp_path, data):
    """The TEE variant as 4 processes on loopback, compared with plain JAX."""
    out_dir = fl.fl_tee.build().save(tmp_path / "bundle")
    inputs = []
    for name, value in data.items():
        np.save(tmp_path / f"{name}.npy", value)
        inputs += ["--input", f"{name}={tmp_path / f'{name}.npy'}"]
    res = subprocess.run([sys.executable, "-m", "mixc", "run", str(out_dir), "--local", *inputs,
                          "--output", str(tmp_path / "out"), "--timeout", "60"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    ref = fl.reference(data)
    for i in range(fl.WORKERS):
        got = np.load(tmp_path / "out" / f"Client[{i}]" / f"w{i}.npy")
        np.testing.assert_allclose(got, ref[f"w{i}"], atol=1e-5)
    assert not (tmp_path / "out" / "Server").exists() or not any((tmp_path / "out" / "Server").iterdir())
    # and the example's own checker agrees
    assert fl.main(["--check", str(tmp_path), str(tmp_path / "out")]) == 0


# ------------------------------------------------------------ audit

def test_audit_states_tee_trust(bundles):
    audit = bundles["tee"].audit()
    trust = audit.split("trust assumptions:")[1].split("\ndisclosures")[0]
    assert "simulated TEE: party Server (device aggregator) sees these plaintexts" in trust
    assert "in deployment this must be an attested enclave" in trust
    # the rounds are one loop: each plaintext the TEE sees is listed once, with its count
    assert trust.count("plaintext of worker[0] (Client[0])") == 1
    assert re.search(r"plaintext of worker\[0\] \(Client\[0\]\).* at fl\.py:\d+, "
                     f"{fl.ROUNDS} times", trust)
    assert "no DP mechanism used" in trust
    assert "dealer" not in trust
    disclosures = audit.split("disclosures (plaintext leaving its owner):")[1].split("\n\n")[0]
    assert re.search(r"plaintext of worker\[1\] \(Client\[1\]\) sent to TEE aggregator \(Server\) "
                     r"by explicit to at fl\.py:\d+", disclosures)
    assert re.search(r"on aggregator revealed to worker\[2\] \(Client\[2\]\) by reveal at fl\.py:\d+",
                     disclosures)
    assert disclosures.count("\n- ") == 2 * fl.WORKERS
    assert f"{fl.ROUNDS} times" in disclosures
    assert "Server sees plaintext (inside the simulated TEE)" in audit
    assert ("- Client[0] -> Server: 1 x 'plaintext to trusted TEE' as plaintext, 5 elements "
            f"per iteration, ×{fl.ROUNDS}") in audit


def test_audit_states_dealer_for_mpc(bundles):
    audit = bundles["mpc"].audit()
    trust = audit.split("trust assumptions:")[1].split("\ndisclosures")[0]
    assert "dealer: party 'dealer' deals Beaver triples" in trust
    assert "it receives nothing" in trust and "must not collude" in trust
    assert "Server[0] and Server[1] do not collude" in trust
    assert "TEE" not in trust
    assert "Server[0], Server[1] each see an additive share" in audit
    assert ("- Client[0] -> Server[1]: 1 x 'share' as additive share, 5 elements per "
            f"iteration, ×{fl.ROUNDS}") in audit
    assert "- dealer -> Server[1]:" in audit


def test_audit_command(tmp_path, bundles):
    d = bundles["tee"].save(tmp_path / "b")
    res = subprocess.run([sys.executable, "-m", "mixc", "audit", str(d)], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "attested enclave" in res.stdout


# ------------------------------------------------------------ graph.html

class _Checker(HTMLParser):
    """Tags must nest and close; collects ids, text, and any external reference."""

    VOID = {"meta", "br", "img", "hr", "input", "link", "source", "wbr"}

    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.ids, self.text, self.external = [], [], [], [], []

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.stack.append(tag)
        self._attrs(tag, attrs)

    def handle_startendtag(self, tag, attrs):
        self._attrs(tag, attrs)

    def _attrs(self, tag, attrs):
        for k, v in attrs:
            if k == "id":
                self.ids.append(v)
            if k in ("src", "href") and v and not v.startswith("#") or tag in ("script", "link"):
                self.external.append((tag, k, v))

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> at {self.getpos()} closes {self.stack[-1:]}")
        else:
            self.stack.pop()

    def handle_data(self, d):
        self.text.append(d)


@pytest.mark.parametrize("variant", ["mpc", "tee"])
def test_graph_html(variant, bundles, tmp_path):
    b = bundles[variant]
    d = b.save(tmp_path / variant)
    assert (d / "graph.dot").read_text().startswith("digraph")
    page = (d / "graph.html").read_text(encoding="utf-8")
    checker = _Checker()
    checker.feed(page)
    checker.close()
    assert not checker.errors, checker.errors[:3]
    assert checker.stack == [], checker.stack
    assert checker.external == []  # self-contained: no scripts, stylesheets or remote images
    assert page.startswith("<!DOCTYPE html>")
    text = "".join(checker.text)
    for party in b.parties:
        assert f"party {party}" in text, party
    assert "global" in checker.ids and len(set(checker.ids)) == len(checker.ids)
    assert page.count("<svg") >= 1 + len(b.parties)
    # coloured by device and share kind, with a legend naming them
    legend = text.split("legend", 1)[1]
    for word in ("PYU device", "MPC device", "TEE device", "additive share", "plaintext"):
        assert word in legend
    device_fill = "#dda0dd" if variant == "tee" else "#ffc680"
    assert f'fill="{device_fill}"' in page
    if variant == "mpc":
        assert 'stroke="#d62728"' in page  # arithmetic shares
    assert "attested enclave" in text if variant == "tee" else "dealer" in text


# ------------------------------------------------------------ TEE placement rules

TEE3 = """\
domain: ["alice", "bob", "carol"]
device:
  - p1:
      type: PYU
      domain: "alice"
  - p2:
      type: PYU
      domain: "bob"
  - mpc:
      type: MPC
      domain: ["alice", "bob"]
  - tee:
      type: TEE
      domain: "carol"
"""


@pytest.fixture(scope="module")
def c3():
    return mixc.init_device(TEE3)


def test_tee_implicit_to_and_round_trips(c3):
    """PYU -> TEE implicitly, MPC -> TEE by reveal, TEE -> MPC by sharing, TEE -> PYU by reveal."""
    @mixc.program
    def prog(x: mixc.Input(c3.p1, (3,)), y: mixc.Input(c3.p2, (3,))):
        s = device(c3.mpc)(lambda a, b: a * b)(x, y)
        t = device(c3.tee)(lambda s, y: s + jnp.tanh(y))(reveal(s, c3.tee), y)
        v = device(c3.mpc)(lambda t: t * 2)(t)
        return {"t": reveal(t, c3.p1), "v": reveal(v, c3.p2)}

    b = build(prog, verify_between=True)
    for party in b.parties:
        verify.run(parse_module(b.text(party)))
    x, y = np.array([1, 2, 3], np.float32), np.array([4, -5, 6], np.float32)
    out = simulate(b, {"x": x, "y": y})
    np.testing.assert_allclose(out["t"], x * y + np.tanh(y), atol=1e-4)
    np.testing.assert_allclose(out["v"], 2 * (x * y + np.tanh(y)), atol=1e-3)
    carol = b.text("carol")
    assert 'what="plaintext to trusted TEE"' in carol and 'what="share (reveal)"' in carol
    assert 'protocol="tee_open"' in b.stages["select_protocols"]
    assert re.search(r"- %\d+ f32\[3\] plaintext of p2 \(bob\) sent to TEE tee \(carol\) by "
                     r"implicit to", b.audit())


def _line(marker):
    text = Path(__file__).read_text().splitlines()
    return next(i for i, l in enumerate(text, 1) if marker in l and "_line(" not in l)


def test_pyu_reading_tee_value_needs_reveal(c3):
    @mixc.program
    def prog(x: mixc.Input(c3.p1, (3,))):
        t = device(c3.tee)(lambda a: a + 1)(x)
        return device(c3.p1)(lambda a: a * 2)(t)  # TEE-NO-REVEAL

    with pytest.raises(TraceError, match=rf"test_tee_fl\.py:{_line('TEE-NO-REVEAL')}: .*reveal"):
        build(prog)


def test_to_out_of_tee_is_refused(c3):
    @mixc.program
    def prog(x: mixc.Input(c3.p1, (3,))):
        t = device(c3.tee)(lambda a: a + 1)(x)
        return to(t, c3.p2)  # TO-OUT-OF-TEE

    with pytest.raises(TraceError, match=rf"test_tee_fl\.py:{_line('TO-OUT-OF-TEE')}: to\(\) cannot "
                                         r"move a value out of TEE device tee into p2; use reveal"):
        build(prog)


def test_secret_into_tee_needs_reveal(c3):
    @mixc.program
    def prog(x: mixc.Input(c3.p1, (3,)), y: mixc.Input(c3.p2, (3,))):
        s = device(c3.mpc)(lambda a, b: a * b)(x, y)
        t = device(c3.tee)(lambda a: a + 1)(s)  # SECRET-INTO-TEE
        return reveal(t, c3.p1)

    with pytest.raises(TraceError, match=rf"test_tee_fl\.py:{_line('SECRET-INTO-TEE')}: a secret "
                                         r"value from mpc is used on TEE tee; reveal"):
        build(prog)
