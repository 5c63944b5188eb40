"""mixc.disclosure: what each party's program discloses, from its ops alone.

- 0 refusals over every example and every benchmark workload at small sizes, on a
  dealer device, an ``offline: he`` device and a ring-128 device (test programs are
  covered too: ``simulate`` checks every built bundle before it runs);
- the rules, on small hand-written party programs: a one-time pad hides, a stream
  masking two messages does not, nor one drawn outside the loop its message is sent in;
  labels and kinds change nothing; a ciphertext is opaque to all but its key's owner;
- a saved bundle's party files must be what its global program compiles to.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import mixc
from mixc.disclosure import Policy, check, check_built, check_bundle
from mixc.errors import VerifyError
from mixc.ir.parser import parse_module

from conftest import write_leaky_program

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


def _load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _programs(module):
    return [v for v in vars(module).values() if isinstance(v, mixc.Program)]


@pytest.mark.parametrize("name", sorted(p.stem for p in EXAMPLES.glob("*.py")))
def test_every_example_verifies(name):
    programs = _programs(_load(EXAMPLES / f"{name}.py", f"disclosure_example_{name}"))
    assert programs
    for program in programs:
        report = check_built(program.build())
        assert report.counts().get("opaque", 0) + report.counts().get("plain", 0) > 0


SMALL = {"matmul_512": ((6, 5), (5, 4)), "matmul_1024": ((3, 3), (3, 3)),
         "mul_1m": ((7,), (7,)), "less_1m": ((7,), (7,)), "relu_1m": ((7,),),
         "sigmoid_1m": ((7,),), "lr_train_10k": ((40, 3), (40, 2), (40,)),
         "mlp_infer_64": ((2, 12), (12, 6), (6,), (6, 3), (3,)),
         "lr_sgd_60k": ((256, 3), (256, 2), (256,)),
         "mlp_train_100": ((256, 12), (256, 10), (12, 128), (128, 10))}
DEVICES = ("two_party.devices", "two_party_he.devices", "two_party_ring128.devices")


@pytest.fixture(scope="module")
def bench():
    return _load(REPO / "benchmarks" / "run.py", "disclosure_bench_run")


@pytest.mark.parametrize("devices", DEVICES)
@pytest.mark.parametrize("workload", sorted(SMALL))
def test_benchmark_workloads_verify(bench, workload, devices):
    """Every benchmark workload (loops included), small, on each kind of MPC device."""
    cluster = mixc.init_device(str(EXAMPLES / devices))
    args = tuple(np.zeros(s, np.float32) for s in SMALL[workload])
    made = bench.make_workload(workload, cluster, args, steps=2) \
        if workload in ("lr_sgd_60k", "mlp_train_100") else bench.make_workload(workload,
                                                                                cluster, args)
    check_built(made[0].build())


# ------------------------------------------------------------------ the rules


HEADER = '''module "t:{party}"
parties "alice", "bob"
device p1 = PYU("alice")
device p2 = PYU("bob")
device mpc = MPC("alice", "bob") {{fraction_bits=18, offline="dealer"}}
'''

GLOBAL = HEADER.format(party="g").replace('module "t:g"', 'module "g"') + '''\
%0: f32[3]@p1 = input() {dtype="f32", name="a", shape=(3,)}
%1: f32[3]@p2 = input() {dtype="f32", name="b", shape=(3,)}
%2: f32[3]@mpc:arith = to(%0) {protocol="arith2pc"}
%3: f32[3]@mpc:arith = to(%1) {protocol="arith2pc"}
%4: f32[3]@mpc:arith = add(%2, %3) {protocol="arith2pc"}
%5: f32[3]@p1 = reveal(%4) {protocol="arith2pc"}
output(%5) {name="c"}
'''

# alice shares a with bob (the alice~bob stream is bob's share), bob shares b, and bob
# sends alice his share of a + b: a revealed sum
ALICE = '''%0: f32[3]@alice = input() {dtype="f32", name="a", shape=(3,)}
%1: u64[3]@alice = encode(%0) {frac_bits=18}
%2: u64[3]@alice = random() {seed="alice~bob", shape=(3,), stream=1}
%3: u64[3]@alice = sub(%1, %2)
%4: u64[3]@alice = random() {seed="alice~bob", shape=(3,), stream=2}
%5: u64[3]@alice = add(%3, %4)
%6: u64[3]@alice = recv() {dtype="u64", from="bob", shape=(3,), tag=1, what="x"}
%7: u64[3]@alice = add(%5, %6)
'''
BOB = '''%0: f32[3]@bob = input() {dtype="f32", name="b", shape=(3,)}
%1: u64[3]@bob = random() {seed="alice~bob", shape=(3,), stream=1}
%2: u64[3]@bob = encode(%0) {frac_bits=18}
%3: u64[3]@bob = random() {seed="alice~bob", shape=(3,), stream=2}
%4: u64[3]@bob = sub(%2, %3)
%5: u64[3]@bob = add(%1, %4)
send(%5) {tag=1, to="alice", what="x"}
'''


def _check(alice, bob, global_text=GLOBAL):
    programs = {"alice": parse_module(HEADER.format(party="alice") + alice),
                "bob": parse_module(HEADER.format(party="bob") + bob)}
    return check(programs, Policy.of(parse_module(global_text)))


def test_a_revealed_share_passes_and_is_reported():
    report = _check(ALICE, BOB)
    assert report.counts() == {"plain": 1}
    assert "alice learns from bob at bob.mir:12 (3 elements) a value of input(s) b" \
        in report.text()


def test_without_the_reveal_the_same_message_is_refused():
    no_reveal = GLOBAL.replace('%5: f32[3]@p1 = reveal(%4) {protocol="arith2pc"}\n'
                               'output(%5) {name="c"}\n', "")
    with pytest.raises(VerifyError, match=r"^bob\.mir:12: bob sends alice a value that "
                                          r"discloses input\(s\) b"):
        _check(ALICE, BOB, no_reveal)


def test_labels_and_kinds_are_not_trusted():
    """bob's encoded input, re-typed ':masked' and sent under a masking label, is still
    his plaintext: with his reveal share, alice could read 6 elements, not the 3 revealed;
    without the label and kind the verdict is the same."""
    extra = ('%6: u64[3]@bob:masked = neg(%2)\n'
             'send(%6) {tag=2, to="alice", what="masked operand (x - a)"}\n')
    alice = ALICE + ('%8: u64[3]@alice:masked = recv() {dtype="u64", from="bob", shape=(3,), '
                     'tag=2, what="masked operand (x - a)"}\n')
    for bob_extra, alice_text in ((extra, alice), (
            extra.replace(":masked", "").replace("masked operand (x - a)", "y"),
            alice.replace(":masked", "").replace("masked operand (x - a)", "y"))):
        with pytest.raises(VerifyError, match=r"^bob\.mir:12: bob lets alice read 6 elements "
                                              r".*\(with bob\.mir:14\)$"):
            _check(alice_text, BOB + bob_extra)


def test_a_one_time_pad_hides_and_a_two_time_pad_does_not():
    fresh = BOB.replace("%5: u64[3]@bob = add(%1, %4)",
                        '%9: u64[3]@bob = random() {seed="bob", shape=(3,), stream=1}\n'
                        "%5: u64[3]@bob = add(%2, %9)")
    no_reveal = GLOBAL.replace('%5: f32[3]@p1 = reveal(%4) {protocol="arith2pc"}\n'
                               'output(%5) {name="c"}\n', "")
    assert _check(ALICE, fresh, no_reveal).counts() == {"opaque": 1}
    twice = fresh + ('%10: u64[3]@bob = sub(%9, %4)\n'
                     'send(%10) {tag=2, to="alice", what="x"}\n')
    alice = ALICE + '%8: u64[3]@alice = recv() {dtype="u64", from="bob", shape=(3,), tag=2, ' \
                    'what="x"}\n'
    with pytest.raises(VerifyError, match=r"keystream \(seed 'bob', stream 1\) masks this "
                                          r"message to alice and another: a two-time pad"):
        _check(alice, twice, no_reveal)


def test_a_pad_drawn_outside_a_loop_masks_every_iteration():
    no_reveal = GLOBAL.replace('%5: f32[3]@p1 = reveal(%4) {protocol="arith2pc"}\n'
                               'output(%5) {name="c"}\n', "")
    bob = '''%0: f32[3]@bob = input() {dtype="f32", name="b", shape=(3,)}
%1: u64[3]@bob = encode(%0) {frac_bits=18}
%2: u64[3]@bob = random() {seed="bob", shape=(3,), stream=1}
loop(%1, %2) {captures=2, trip_count=TRIPS} {
  ^(%3: u64[3]@bob, %4: u64[3]@bob)
  %5: u64[3]@bob = add(%3, %4)
  send(%5) {tag=1, to="alice", what="x"}
  yield()
}
'''
    alice = '''loop() {captures=0, trip_count=TRIPS} {
  ^()
  %0: u64[3]@alice = recv() {dtype="u64", from="bob", shape=(3,), tag=1, what="x"}
  yield()
}
'''
    one = _check(alice.replace("TRIPS", "1"), bob.replace("TRIPS", "1"), no_reveal)
    assert one.counts() == {"opaque": 1}
    with pytest.raises(VerifyError, match=r"bob\.mir:12: keystream \(seed 'bob', stream 1\)"):
        _check(alice.replace("TRIPS", "4"), bob.replace("TRIPS", "4"), no_reveal)
    inside = bob.replace('%2: u64[3]@bob = random() {seed="bob", shape=(3,), stream=1}\n',
                         "").replace("loop(%1, %2) {captures=2", "loop(%1) {captures=1") \
        .replace("^(%3: u64[3]@bob, %4: u64[3]@bob)",
                 '^(%3: u64[3]@bob)\n  %4: u64[3]@bob = random() {seed="bob", shape=(3,), '
                 'stream=1}')
    assert _check(alice.replace("TRIPS", "4"), inside.replace("TRIPS", "4"),
                  no_reveal).counts() == {"opaque": 1}


@pytest.mark.parametrize("devices", ("two_party_he.devices", "two_party_he_ring128.devices",
                                     "two_party.devices"))
def test_an_integer_product_revealed_at_once_verifies(devices):
    """An untruncated int32 product on an ``offline: he`` device, revealed at once: its
    two shares, Enc(r.W - s) (which alice decrypts) and (x - r).W + s, share bob's mask
    s, which cancels in their sum, the revealed x.W: no two-time pad (refused before)."""
    cluster = mixc.init_device(str(EXAMPLES / devices))

    @mixc.program
    def int_product(x=mixc.Input(cluster.p1, (2, 3), np.int32),
                    w=mixc.Input(cluster.p2, (3, 4), np.int32)):
        return mixc.reveal(mixc.device(cluster.mpc)(lambda a, b: a @ b)(x, w), cluster.p1)

    bundle = int_product.build()
    report = check_built(bundle)
    assert report.counts().get("plain", 0) + report.counts().get("share", 0) >= 1
    assert "alice learns" in report.text()
    if "he" in devices:  # the same two shares where nothing is revealed: a two-time pad
        with pytest.raises(VerifyError, match=r"keystream \(seed 'bob', stream 1\) masks "
                                              r"this message to alice and another"):
            check(bundle.programs, Policy())
    rng = np.random.default_rng(1)
    x = rng.integers(-1000, 1000, (2, 3)).astype(np.int32)
    w = rng.integers(-1000, 1000, (3, 4)).astype(np.int32)
    np.testing.assert_array_equal(np.asarray(int_product.simulate(x=x, w=w)), x @ w)


def test_two_shares_under_one_pad_pass_only_as_an_he_reveal():
    """bob's own stream s in two messages to alice, x.b + s and s - b: without a
    ciphertext of alice's to carry one of them it is a two-time pad, reveal or not."""
    pair = BOB.replace("%5: u64[3]@bob = add(%1, %4)",
                       '%9: u64[3]@bob = random() {seed="bob", shape=(3,), stream=1}\n'
                       "%5: u64[3]@bob = add(%2, %9)") + \
        ('%10: u64[3]@bob = sub(%9, %2)\n'
         'send(%10) {tag=2, to="alice", what="x"}\n')
    alice = ALICE + '%8: u64[3]@alice = recv() {dtype="u64", from="bob", shape=(3,), tag=2, ' \
                    'what="x"}\n'
    with pytest.raises(VerifyError, match=r"keystream \(seed 'bob', stream 1\) masks this "
                                          r"message to alice and another: a two-time pad"):
        _check(alice, pair)


# ------------------------------------------------------------------ saved bundles

@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    d = tmp_path_factory.mktemp("saved")
    program = _load(write_leaky_program(d), "disclosure_leaky")
    d = d / "bundle"
    program.leaky.build().save(d)
    return d


def test_a_saved_bundle_verifies_and_reports(saved):
    checked = check_bundle(saved, label="bundle")
    assert set(checked.programs) == {"alice", "bob", "dealer"}
    text = checked.audit()
    assert text.startswith((saved / "audit.txt").read_text().rstrip("\n"))
    assert "bob learns from alice at bundle/alice.mir:" in text


def test_an_edit_that_leaks_nothing_is_still_refused(saved, tmp_path):
    """A party file must be the compiler's lowering of the global program, to the byte."""
    from mixc.bundle import program_hash, text_hash
    d = tmp_path / "b"
    shutil.copytree(saved, d)
    f = d / "dealer.mir"
    lines = f.read_text().splitlines(keepends=True)
    lines.insert(6, '%999: u64[]@dealer:public = constant() {value=array<u64[]>"AAAAAAAAAAA="}\n')
    f.write_text("".join(lines))
    manifest = json.loads((d / "manifest.json").read_text())
    texts = {p: (d / f"{p}.mir").read_text() for p in manifest["parties"]}
    manifest["party_hashes"] = {p: text_hash(t) for p, t in texts.items()}
    manifest["hash"] = program_hash(texts)
    (d / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(VerifyError, match=r"^b/dealer\.mir:7: not what the global program "
                                          r"compiles to"):
        check_bundle(d, label="b")
