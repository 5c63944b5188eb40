"""Loops stay loops in the audit and the views: what happens once per iteration is listed
once with its multiplicity, byte totals and the DP budget count every iteration, the DOT
graph draws a loop body as a cluster and graph.html as a nested box; the benchmark's
rounds/op_counts see through loops."""
import importlib.util
import re
from html.parser import HTMLParser
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import mixc
from mixc import device, reveal
from mixc.bundle import Bundle, simulate

ROOT = Path(__file__).resolve().parents[1]
C = mixc.init_device(str(ROOT / "examples" / "two_party.devices"))
STEPS, ROUNDS = 6, 5


def train(x, y):
    def step(i, w):
        xb = lax.dynamic_slice(x, (i * 4, 0), (4, 3))
        yb = lax.dynamic_slice(y, (i * 4,), (4,))
        return w - 0.5 * xb.T @ (jax.nn.sigmoid(xb @ w) - yb) / 4
    return lax.fori_loop(0, STEPS, step, jnp.zeros(3))


@mixc.program
def looped(x: mixc.Input(C.p1, (4 * STEPS, 3)), y: mixc.Input(C.p2, (4 * STEPS,))):
    return {"w": reveal(device(C.mpc)(train)(x, y), C.p1)}


@mixc.program
def reveal_each_round(x: mixc.Input(C.p1, (3,)), y: mixc.Input(C.p2, (3,))):
    def one_round(i, w):
        s = device(C.mpc)(lambda w, y: w * 0.5 + y)(w, y)
        return reveal(s, C.p1)  # LOOP-REVEAL
    return {"w": mixc.fori_loop(0, ROUNDS, one_round, x)}  # LOOP-ROUNDS


@mixc.program
def noisy_rounds(x: mixc.Input(C.p1, (3,)), y: mixc.Input(C.p2, (3,))):
    def one_round(i, w):
        return device(C.mpc)(lambda w, x, y: mixc.dp.laplace(w * 0.5 + x * y, sensitivity=1.0,
                                                             epsilon=0.25))(w, x, y)
    w0 = device(C.mpc)(lambda x: x * 0.0)(x)
    return {"w": reveal(mixc.fori_loop(0, 8, one_round, w0), C.p1)}


@pytest.fixture(scope="module")
def bundle():
    return looped.build()


def _section(audit, title):
    return audit.split(title, 1)[1].split("\n\n", 1)[0]


def _line_of(marker):
    lines = Path(__file__).read_text().splitlines()
    return next(i for i, text in enumerate(lines, 1) if marker in text and "_line_of(" not in text)


# ------------------------------------------------------------------ audit

def test_per_iteration_messages_listed_once_with_multiplicity(bundle):
    audit = bundle.audit()
    messages = _section(audit, "messages (what crosses between parties")
    lines = [ln for ln in messages.splitlines() if ln.startswith("- ")]
    assert len(lines) == len(set(lines))
    looped_lines = [ln for ln in lines if f"\u00d7{STEPS} (" in ln]
    assert looped_lines, messages
    for ln in looped_lines:
        m = re.search(r": (\d+) x .*, (\d+) elements per iteration, \u00d7(\d+) \((\d+) messages, "
                      r"(\d+) elements in all\)", ln)
        assert m, ln
        count, elems, times, total, total_elems = map(int, m.groups())
        assert times == STEPS and total == count * STEPS and total_elems == elems * STEPS
    assert any("dealer -> bob" in ln and "\u00d7" in ln for ln in lines)  # the dealer's loop too
    # the reveal after the loop: once, no multiplicity
    (share,) = [ln for ln in lines if "'share (reveal)'" in ln]
    assert "\u00d7" not in share
    disclosures = _section(audit, "disclosures (plaintext leaving its owner):")
    assert disclosures.count("\n- ") == 1 and "revealed to p1 (alice)" in disclosures
    assert "times" not in disclosures
    # the values computed in the body are listed once, marked per iteration
    assert f"(in a loop body, \u00d7{STEPS}): alice, bob each see an additive share" in audit


def test_totals_count_every_iteration(bundle):
    """The audit's totals are exactly what the links carry (pairwise keys come from an
    X25519 exchange in the handshake: no message)."""
    audit = bundle.audit()
    totals = {}
    for s, r, msgs, size in re.findall(r"^- (\S+) -> (\S+): (\d+) messages, \d+ elements, "
                                       r"(\d+) payload bytes$", audit, re.M):
        totals[(s, r)] = (int(msgs), int(size))
    assert totals
    stats = {}
    x = np.random.default_rng(0).standard_normal((4 * STEPS, 3)).astype(np.float32)
    y = (x.sum(1) > 0).astype(np.float32)
    simulate(bundle, {"x": x, "y": y}, stats=stats)
    for party, st in stats.items():
        for peer, sent in st["messages_sent"].items():
            msgs, size = totals.get((party, peer), (0, 0))
            assert sent == msgs, (party, peer, sent, msgs)
            assert st["bytes_sent"][peer] == size, (party, peer)


def test_reveal_inside_a_loop_listed_once_with_its_count():
    audit = reveal_each_round.build().audit()
    disclosures = _section(audit, "disclosures (plaintext leaving its owner):")
    assert disclosures.count("\n- ") == 1, disclosures
    assert (f"revealed to p1 (alice) by reveal at test_loop_audit.py:{_line_of('LOOP-REVEAL')}, "
            f"{ROUNDS} times (once per iteration of the loop at "
            f"test_loop_audit.py:{_line_of('LOOP-ROUNDS')})") in disclosures
    messages = _section(audit, "messages (what crosses between parties")
    assert re.search(rf"- bob -> alice: 1 x 'share \(reveal\)' as additive share, 3 elements "
                     rf"per iteration, \u00d7{ROUNDS} \({ROUNDS} messages, {3 * ROUNDS} elements "
                     r"in all\)", messages), messages


def test_dp_noise_in_a_loop_composes():
    audit = noisy_rounds.build().audit()
    trust = audit.split("trust assumptions:")[1].split("\ndisclosures")[0]
    assert "total budget epsilon = 2, delta = 0" in trust  # 8 x 0.25
    assert "basic composition of 8 application(s) of 1 mechanism(s)" in trust
    assert re.search(r"laplace scale 4 \(sensitivity 1, epsilon 0.25, delta 0\) on mpc at "
                     r"test_loop_audit\.py:\d+: each party adds its own, in its share; applied "
                     r"8 times \(once per iteration of the loop at test_loop_audit\.py:\d+\), "
                     r"composing to epsilon 2, delta 0", trust), trust


# ------------------------------------------------------------------ views

def test_dot_draws_the_loop_body_as_a_cluster(bundle):
    dot = bundle.manifest["dot"]
    assert dot.startswith("digraph") and dot.count("{") == dot.count("}")
    m = re.search(r"subgraph (cluster_\w+) \{\n\s*label=\"loop \u00d7" + str(STEPS) + r" at "
                  r"test_loop_audit\.py:\d+\";", dot)
    assert m, dot[:2000]
    body = dot[m.end():]
    body = body[:body.index("\n  }\n")]
    assert "dot_general" in body and "captured" in body and "carried" in body
    assert 'label="yield"' in body
    assert "dot_general" not in dot[:m.start()]  # every product is in the body
    assert re.search(r'-> v\d+ \[style=dashed, label="after the last iteration"\]', dot)


class _Checker(HTMLParser):
    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.loops_open, self.in_loop_nodes = [], [], 0, 0

    def handle_starttag(self, tag, attrs):
        if tag in ("meta",):
            return
        cls = dict(attrs).get("class", "")
        self.stack.append((tag, cls))
        if tag == "g" and cls == "loop":
            self.loops_open += 1
        elif tag == "g" and cls.startswith("node") and self.loops_open:
            self.in_loop_nodes += 1

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1][0] != tag:
            self.errors.append((tag, self.getpos()))
            return
        _, cls = self.stack.pop()
        if tag == "g" and cls == "loop":
            self.loops_open -= 1


def test_html_draws_the_loop_as_a_nested_box(bundle, tmp_path):
    d = bundle.save(tmp_path / "b")
    for page in (bundle.html(), Bundle.load(d).html()):  # built, and loaded from disk
        checker = _Checker()
        checker.feed(page)
        checker.close()
        assert not checker.errors and not checker.stack
        assert checker.in_loop_nodes > 0
        assert f"loop \u00d7{STEPS}" in page
        assert "every loop iteration counted, executes" in page
    assert "loop(" in (d / "alice.mir").read_text() and "  yield(" in (d / "global.mir").read_text()


# ------------------------------------------------------------ benchmarks

def _bench():
    spec = importlib.util.spec_from_file_location("mixc_bench_run", ROOT / "benchmarks" / "run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_rounds_and_op_counts_see_through_loops(bundle, monkeypatch):
    run = _bench()
    for in_order in (False, True):
        exact = run.rounds(bundle.programs, in_order=in_order)  # few iterations: unrolled
        monkeypatch.setattr(run, "_EXACT_ITERATIONS", 0)
        assert run.rounds(bundle.programs, in_order=in_order) == exact  # extrapolated
        monkeypatch.setattr(run, "_EXACT_ITERATIONS", 64)
        assert exact > 3 * STEPS  # each step waits on the last through w
    (loop,) = [n for n in bundle.programs["dealer"].nodes if n.op == "loop"]
    sends = sum(1 for n in loop.body.nodes if n.op == "send")
    counts = run.op_counts(bundle.programs)
    static = run.op_counts(bundle.programs, static=True)
    assert static["dealer"]["send"] == sends and counts["dealer"]["send"] == STEPS * sends
    assert counts["dealer"]["loop"] == 1 and counts["dealer"]["yield"] == STEPS
