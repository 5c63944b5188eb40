"""The textual IR round-trips: ``parse_module(print_module(m)) == m`` (SPEC §5).

- a hypothesis property over random well-formed modules: random devices and
  parties (quoted names like ``worker[1]`` too), chains of nodes over every
  op in ``OPS`` with random types, places, kinds, attributes of every kind
  (arrays of every dtype, nested tuples, special floats, unicode strings)
  and locs; printing is deterministic and the parse keeps the printed ids;
- every parse error kind, with its exact ``line:col``;
- a fuzz test: mutations of printed modules either parse or raise
  ``ParseError`` -- never any other exception.
"""
from __future__ import annotations

import math
import random
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mixc.config import DEVICE_KINDS, Device
from mixc.errors import ParseError
from mixc.ir.core import DTYPES, KINDS, Module, TensorType
from mixc.ir.ops import NUMPY_DTYPES, OPS
from mixc.ir.parser import parse_module
from mixc.ir.printer import print_module

SETTINGS = settings(max_examples=80, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# ------------------------------------------------------------------ strategies

# Identifiers, including ones that look like the text's keywords.
KEYWORDS = ["module", "parties", "device", "loc", "true", "false", "none", "nan", "inf", "array",
            "f32", "arith", "PYU", "add"]
IDENT = st.one_of(st.from_regex(r"[A-Za-z_][A-Za-z0-9_.]{0,8}", fullmatch=True),
                  st.sampled_from(KEYWORDS))
# Names that must print quoted: families, punctuation, spaces, unicode, keywords' look-alikes.
ODD_NAME = st.one_of(
    st.integers(0, 20).map(lambda i: f"worker[{i}]"),
    st.integers(0, 20).map(lambda i: f"Client[{i}]"),
    st.sampled_from(["my-dev", "a b", "1st", "x:y", "p@q", 'quo"te', "back\\slash", "tab\there",
                     "ünï", "名前", "", "#hash", "%0", "new\nline"]),
    st.text(min_size=1, max_size=8),
)
NAME = st.one_of(IDENT, ODD_NAME)

SCALAR = st.one_of(
    st.integers(-2**70, 2**70),
    st.sampled_from([0, -1, 1, 2**63, 2**64 - 1, -2**63]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1e-05, 1e300, -1.5e-300, 5e-324, float("inf"), float("-inf"),
                     float("nan"), 0.1, 1.0, -2.0]),
    st.text(max_size=12),
    st.booleans(),
    st.none(),
)


@st.composite
def arrays(draw):
    dt = draw(st.sampled_from(DTYPES))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
    return draw(hnp.arrays(NUMPY_DTYPES[dt], shape))


NP_SCALAR = st.one_of(
    st.integers(-2**31, 2**31 - 1).map(np.int64),
    st.integers(0, 2**64 - 1).map(np.uint64),
    st.floats(width=32).map(np.float32),
    st.booleans().map(np.bool_),
)

ATTR_VALUE = st.recursive(
    st.one_of(SCALAR, arrays(), NP_SCALAR),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(tuple),
        st.lists(inner, max_size=3),              # lists print as tuples
        st.tuples(inner),                         # 1-tuples print as (a,)
    ),
    max_leaves=12,
)
ATTRS = st.dictionaries(IDENT, ATTR_VALUE, max_size=4)
SHAPE = st.lists(st.integers(0, 10**6), max_size=4).map(tuple)


@st.composite
def modules(draw):
    parties = tuple(draw(st.lists(NAME, max_size=4, unique=True)))
    devices = {}
    for name in draw(st.lists(NAME, max_size=4, unique=True)):
        options = draw(st.dictionaries(IDENT, SCALAR, max_size=3))
        devices[name] = Device(name, draw(st.sampled_from(DEVICE_KINDS)),
                               tuple(draw(st.lists(NAME, max_size=3))), options)
    places = list(parties) + list(devices) + ["p1", "worker[1]"]
    place = st.one_of(st.sampled_from(places), NAME)
    m = Module(draw(st.text(max_size=10)), devices, parties)
    m.next_id = draw(st.integers(0, 50))
    values = []
    for _ in range(draw(st.integers(0, 12))):
        op = OPS[draw(st.sampled_from(sorted(OPS)))]
        n_in = op.operands if op.operands is not None else draw(st.integers(0, 3))
        if n_in and not values:
            op, n_in = OPS[draw(st.sampled_from(["input", "constant", "random", "recv"]))], 0
        operands = [draw(st.sampled_from(values)) for _ in range(n_in)]
        n_out = op.results if op.results is not None else draw(st.integers(0, 3))
        types = [TensorType(draw(st.sampled_from(DTYPES)), draw(SHAPE), draw(place),
                            draw(st.sampled_from(KINDS))) for _ in range(n_out)]
        attrs = draw(ATTRS)
        loc = draw(st.one_of(st.none(), st.text(min_size=1, max_size=12),
                             st.integers(1, 999).map(lambda i: f"lr.py:{i}")))
        m.next_id += draw(st.integers(0, 3))  # ids need not be dense
        node = m.add(op.name, operands, types, attrs, loc)
        values += node.results
    return m


def _no_lists(v):
    if isinstance(v, list):
        return False
    if isinstance(v, tuple):
        return all(map(_no_lists, v))
    return True


# ---------------------------------------------------------------- round trip

@SETTINGS
@given(modules())
def test_roundtrip(m):
    text = print_module(m)
    back = parse_module(text)
    assert back == m
    assert print_module(back) == text                 # deterministic
    assert print_module(parse_module(text)) == text   # and stable
    ids = [v.id for n in m.nodes for v in n.results]
    assert back.next_id == (max(ids) + 1 if ids else 0)
    # SSA structure: operands are the very Value objects their definitions made
    defined = {}
    for n in back.nodes:
        for v in n.operands:
            assert defined[v.id] is v
        for r in n.results:
            defined[r.id] = r
        assert all(_no_lists(v) for v in n.attrs.values())
    assert list(back.devices) == list(m.devices)
    assert all(isinstance(d, Device) for d in back.devices.values())
    assert isinstance(back.parties, tuple)


def test_equality_is_structural():
    m = parse_module(_BASE)
    assert m == parse_module(_BASE)
    assert m != parse_module(_BASE.replace('"x1"', '"x2"'))
    assert m != parse_module(_BASE.replace("f32[4,2]@p1 = input", "f32[4,2]@p1:public = input"))
    assert m != parse_module(_BASE.replace(' loc("lr.py:8")', ""))
    assert m != parse_module(_BASE.replace("1e-05", "1e-06"))
    assert m != parse_module(_BASE.replace("-0.0", "0.0"))       # floats compare bitwise
    assert m != parse_module(_BASE.replace("(1,)", "(true,)"))   # a bool is not an int
    assert m != parse_module(_BASE.replace('"AQAAAAAAAAACAAAAAAAAAA=="',
                                           '"AQAAAAAAAAADAAAAAAAAAA=="'))
    nan = parse_module(_BASE)
    assert nan.nodes[-2].attrs["value"][2] != nan.nodes[-2].attrs["value"][2]  # it is NaN...
    assert nan == m                                                              # ...and equal
    assert m != "not a module"


def test_values_and_arrays():
    m = parse_module(_BASE)
    assert m.name == "lr" and m.parties == ("alice", "bob", "dealer")
    assert list(m.devices) == ["p1", "worker[0]", "mpc"]
    mpc = m.devices["mpc"]
    assert (mpc.kind, mpc.parties, mpc.options) == \
        ("MPC", ("alice", "bob"), (("fraction_bits", 18), ("offline", "dealer")))
    assert m.next_id == 6
    cat = m.nodes[2]
    assert [v.id for v in cat.operands] == [0, 1] and cat.result.id == 3
    assert cat.result.type == TensorType("f32", (4, 4), "mpc", "arith")
    assert cat.loc == "lr.py:8" and cat.attrs == {"dimension": 1, "protocol": "arith2pc"}
    assert m.nodes[1].result.type.place == "worker[0]"
    arr = m.nodes[3].attrs["value"]
    assert arr.dtype == np.uint64 and arr.shape == (2,) and arr.tolist() == [1, 2]
    v = m.nodes[4].attrs["value"]
    assert v[0] == 1.0 and v[1] == -math.inf and math.isnan(v[2]) and v[3] == 1e-05
    assert v[4:] == ((), (1,), ((1, 2), "x"), True, False, None, -0.0, -7)
    assert str(v[10]) == "-0.0"
    assert m.nodes[-1].results == () and m.nodes[-1].op == "output"


def test_parsing_in_threads():
    from concurrent.futures import ThreadPoolExecutor
    texts = [_BASE, _BASE.replace('"x1"', '"y1"'), _BASE.replace("lr.py", "other.py")] * 4
    with ThreadPoolExecutor(4) as pool:
        parsed = list(pool.map(parse_module, texts))
    assert all(p == parse_module(t) for p, t in zip(parsed, texts))


def test_humans_may_write_comments_blank_lines_and_spaces():
    text = (
        "# a hand-edited module\n\n"
        'module "lr"   # the name\n'
        'parties "alice" , "bob",   "dealer"\n'
        "\n"
        'device p1 = PYU( "alice" )\n'
        'device "worker[0]" = PYU("bob")\n'
        'device mpc=MPC("alice","bob"){ fraction_bits = 18 , offline="dealer" }\n'
        "  # indented comment\n"
        '%0 : f32 [ 4 , 2 ] @ p1 = input ( ) { dtype = "f32", name = "x1", shape = ( 4 , 2 ) }\n'
        '%1:f32[4,2]@"worker[0]"=input(){dtype="f32",name="x2",shape=(4,2,)}\n'
        '%3: f32[4,4] @ mpc : arith = concatenate( %0 ,%1 ) {dimension=1, protocol="arith2pc"}'
        ' loc ( "lr.py:8" )\n'
        '%4: u64[2]@alice = constant() {value=array< u64 [ 2 ] >"AQAAAAAAAAACAAAAAAAAAA=="}\n'
        '%5: f32[]@p1 = constant() {value=(1.0, -inf, nan, 1e-05, ( ), ( 1 , ), ((1, 2), "x"),'
        ' true, false, none, -0.0, -7)}\n'
        'output(%3) {name="w"}  # trailing comment\r\n'
        "\n# the end")
    assert parse_module(text) == parse_module(_BASE)


# --------------------------------------------------------------------- errors

_BASE = """\
module "lr"
parties "alice", "bob", "dealer"
device p1 = PYU("alice")
device "worker[0]" = PYU("bob")
device mpc = MPC("alice", "bob") {fraction_bits=18, offline="dealer"}
%0: f32[4,2]@p1 = input() {dtype="f32", name="x1", shape=(4, 2)}
%1: f32[4,2]@"worker[0]" = input() {dtype="f32", name="x2", shape=(4, 2)}
%3: f32[4,4]@mpc:arith = concatenate(%0, %1) {dimension=1, protocol="arith2pc"} loc("lr.py:8")
%4: u64[2]@alice = constant() {value=array<u64[2]>"AQAAAAAAAAACAAAAAAAAAA=="}
%5: f32[]@p1 = constant() {value=(1.0, -inf, nan, 1e-05, (), (1,), ((1, 2), "x"), true, false, none, -0.0, -7)}
output(%3) {name="w"}
"""
_H = 'module "m"\nparties "a"\ndevice p1 = PYU("a")\n'   # nodes start on line 4
_X = '%0: f32[2]@p1 = input() {dtype="f32", name="x", shape=(2,)}\n'

ERRORS = [
    # semantic errors
    (_H + _X + "%1: f32[2]@p1 = add(%0, %7)\n", 5, 25, "use of undefined value %7"),
    (_H + _X + "%0: f32[2]@p1 = neg(%0)\n", 5, 1, "value %0 is defined twice (first on line 4)"),
    (_H + _X + "%1: f32[2]@p1, %1: f32[2]@p1 = neg(%0)\n", 5, 16, "value %1 is defined twice"),
    (_H + "%0: f32[2]@p1 = inptu()\n", 4, 17, "unknown op 'inptu' (did you mean 'input'?)"),
    (_H + "%0: f32[2]@p1 = inptu ( )\n", 4, 17, "unknown op 'inptu'"),
    (_H + "%0: f16[2]@p1 = input()\n", 4, 5, "unknown dtype 'f16'"),
    (_H + "%0: f16 [2] @p1 = input()\n", 4, 5, "unknown dtype 'f16'"),
    (_H + "%0: f32[2]@p1:arth = input()\n", 4, 15, "unknown value kind 'arth' (did you mean 'arith'?)"),
    (_H + "%0: f32[2] @ p1 : arth = input()\n", 4, 19, "unknown value kind 'arth'"),
    (_H + '%0: f32[2]@p1 = constant() {value=array<f32[2]>"AAAA$AA="}\n', 4, 48,
     "malformed base64 in array<f32>"),
    (_H + '%0: f32[2]@p1 = constant() {value=array<f32[2]>"AAAA"}\n', 4, 48,
     "array<f32[2]> needs 8 bytes, the base64 holds 3"),
    (_H + '%0: f32[2]@p1 = constant() {value=array<f16[2]>"AAAA"}\n', 4, 41, "unknown dtype 'f16'"),
    (_H + '%0: f32[2]@p1 = constant() {value=array<bool[1]>"Ag=="}\n', 4, 49,
     "array<bool> holds bytes other than 0 and 1"),
    (_H + "%0: f32[2]@p1 = input() {x=1, x=2}\n", 4, 31, "attribute 'x' is given twice"),
    (_H + "%0: f32[2]@p1 = input() {p=((1,), (2,)), p=1}\n", 4, 42,
     "attribute 'p' is given twice"),
    (_H + '%0: f32[2]@p1 = input() {x="a\\qb"}\n', 4, 30, "bad escape in string"),
    (_H + "device p1 = PYU(\"b\")\n", 4, 8, "device 'p1' is declared twice"),
    (_H + "device p2 = PYX(\"a\")\n", 4, 13, "unknown device kind 'PYX' (did you mean 'PYU'?)"),
    ('module "m"\nparties "a", "b", "a"\n', 2, 19, "party 'a' is listed twice"),
    (_H + "%0: f32[2]@p1 = input() {x=" + "9" * 5000 + "}\n", 4, 28, "integer has too many digits"),
    (_H + "%" + "9" * 5000 + ": f32[2]@p1 = input()\n", 4, 1, "integer has too many digits"),
    # syntax errors: what was found, what was expected, in words
    (_H + "%0 f32[2]@p1 = input()\n", 4, 4, "unexpected 'f32[2]@p1'; expected ':'"),
    (_H + "%0: = input()\n", 4, 5, "unexpected '='; expected a type like f32[2,3]@p1"),
    (_H + "%0: f32[2@p1 = input()\n", 4, 10, "unexpected '@'; expected ']' or ','"),
    (_H + "%0: f32[-1]@p1 = input()\n", 4, 9, "unexpected '-1'; expected a dimension size or ']'"),
    (_H + "%0: f32[2]@ = input()\n", 4, 13, "expected a place (device or party name)"),
    (_H + "%0: f32[2]@p1 = input() {x=}\n", 4, 28,
     "unexpected '}'; expected an attribute value (number, string, true/false/none, tuple or array)"),
    (_H + "%0: f32[2]@p1 = input() {x=(1)}\n", 4, 30, "unexpected ')'; expected ','"),
    (_H + "%0: f32[2]@p1 = input() {x=1\n", 4, 29, "unexpected end of line; expected '}' or ','"),
    (_H + "%0: f32[2]@p1 = input(\n", 4, 23, "unexpected end of line; expected ')' or a '%N' value"),
    (_H + "%0: f32[2]@p1 = input() $\n", 4, 25, "unexpected character '$'"),
    (_H + '%0: f32[2]@p1 = input() {name="x}\n', 4, 31, "unterminated string"),
    (_H + "%0 = input()\n", 4, 4, "unexpected '='; expected ':'"),
    (_H + "%0: f32[2]@p1 = 3()\n", 4, 17, "expected an op name"),
    ('parties "a"\n', 1, 1, "unexpected 'parties'; expected 'module'"),
    ("", 1, 1, "unexpected end of input; expected 'module'"),
    (_H + "%0: f32[2]@", 4, 12, "unexpected end of line; expected a place (device or party name)"),
    (_H + _X + "device p2 = PYU(\"a\")\n", 5, 1, "device lines come before the first node"),
    (_H + 'parties "b"\n', 4, 1, "parties are already listed on line 2"),
    ('module "m"\ndevice p1 = PYU("a")\nparties "a"\n', 3, 1,
     "the parties line comes right after the module line"),
    ('module "m"\ndevice p1 = PYU("a") {x=1} {y=2}\n', 2, 28, "unexpected '{'; expected end of line"),
]


@pytest.mark.parametrize("text,line,col,message", ERRORS, ids=[e[3][:40] for e in ERRORS])
def test_errors(text, line, col, message):
    with pytest.raises(ParseError) as info:
        parse_module(text)
    e = info.value
    assert (e.line, e.column) == (line, col), str(e)
    assert str(e).startswith(f"{line}:{col}: ")
    assert message in str(e)
    assert "\n" not in str(e)


def test_filename_prefix():
    with pytest.raises(ParseError) as info:
        parse_module(_H + "%0: f32[2]@p1 = inptu()\n", filename="alice.mir")
    assert str(info.value) == "alice.mir:4:17: unknown op 'inptu' (did you mean 'input'?)"
    assert (info.value.filename, info.value.line, info.value.column) == ("alice.mir", 4, 17)
    with pytest.raises(ParseError) as info:
        parse_module("module", filename="f.mir")
    assert str(info.value).startswith("f.mir:1:7: unexpected end of line")


def test_long_tokens_are_shortened_in_messages():
    big = "A" * 100_000
    with pytest.raises(ParseError) as info:
        parse_module(_H + f'%0: f32[2]@p1 = input() "{big}"\n')
    assert len(str(info.value)) < 200


# ----------------------------------------------------------------------- fuzz

_PIECES = ["%", ":", "[", "]", "@", '"', "(", ")", "{", "}", "=", ",", "\n", "#", "\\", " ",
           "0", "9", "-", ".", "e", "x", "f32", "array<", ">", "loc(", "nan", "inf", ":arith",
           "%1", "%99", "u64", "(1,)", "true", "\t", "\r", "é", "\x00", '"AAAA"', "==", "+"]


def _mutate(text: str, rng: random.Random) -> str:
    s = list(text)
    for _ in range(rng.randint(1, 4)):
        k = rng.randrange(6)
        i = rng.randrange(len(s) + 1)
        if k == 0 and s:                        # delete a run
            del s[i:i + rng.randint(1, 3)]
        elif k == 1:                            # insert a significant piece
            s[i:i] = rng.choice(_PIECES)
        elif k == 2 and s:                      # replace a character
            s[min(i, len(s) - 1)] = rng.choice(_PIECES)
        elif k == 3:                            # truncate
            s = s[:i]
        elif k == 4:                            # swap or duplicate lines
            lines = "".join(s).split("\n")
            a, b = rng.randrange(len(lines)), rng.randrange(len(lines))
            if rng.random() < 0.5:
                lines[a], lines[b] = lines[b], lines[a]
            else:
                lines.insert(a, lines[b])
            s = list("\n".join(lines))
        elif s:                                 # duplicate a run
            j = rng.randrange(len(s))
            s[i:i] = s[j:j + rng.randint(1, 8)]
    return "".join(s)


@settings(max_examples=15, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(modules(), st.integers(0, 2**32 - 1))
def test_fuzz_mutations_parse_or_raise_parse_error(m, seed):
    rng = random.Random(seed)
    base = [print_module(m), _BASE]
    for _ in range(20):
        text = _mutate(rng.choice(base), rng)
        try:
            parsed = parse_module(text, filename="fuzz.mir")
        except ParseError as e:
            msg = str(e)
            assert msg.startswith("fuzz.mir:") and "\n" not in msg, msg
            continue
        # whatever parses prints and parses back to the same module
        assert parse_module(print_module(parsed)) == parsed


# ---------------------------------------------------------------------- speed

def _big_module(lines=10_000):
    m = Module("bench", {"alice": Device("alice", "PYU", ("alice",)),
                         "mpc": Device("mpc", "MPC", ("alice", "bob"),
                                       {"fraction_bits": 18, "offline": "dealer"})},
               ("alice", "bob"))
    t = TensorType("u64", (64, 64), "alice", "arith")
    rng = np.random.default_rng(0)
    x = m.add("constant", (), [t], {"value": rng.integers(0, 2**63, size=(512, 512),
                                                          dtype=np.uint64)}).result  # 2 MiB
    n = 1
    while n < lines:
        r = m.add("random", (), [t], {"shape": (64, 64), "seed": 12345, "stream": n},
                  loc="lr.py:12").result
        y = m.add("add", (x, r), [t], {"protocol": "arith2pc"}, loc="lr.py:13").result
        m.add("send", (y,), [], {"to": "bob", "tag": n, "what": "arith share"})
        z = m.add("recv", (), [t], {"from": "bob", "tag": n, "what": "arith share",
                                    "dtype": "u64", "shape": (64, 64)}).result
        x = m.add("dot_general", (y, z), [t], {"contract": ((1,), (0,)),
                                               "batch": ((), ())}).result
        n += 5
    return m


def test_parse_speed_10k_lines():
    m = _big_module()
    text = print_module(m)
    assert text.count("\n") > 10_000 and len(text) > 3_000_000
    parse_module(_BASE)  # builds the parser
    t0 = time.perf_counter()
    back = parse_module(text)
    took = time.perf_counter() - t0
    # < 1 s on an idle machine (about 0.6 s measured); generous here so
    # that a loaded CI machine does not flake.
    assert took < 3.0, f"parsing 10k lines took {took:.2f} s"
    assert back == m


def test_attribute_block_fast_and_slow_paths_agree():
    """A block of ints, strings, keywords and int tuples lexes as one token; an array
    sends the same block token by token: both give the same attributes."""
    block = 'p=((1,), (2, 3), ()), s="a\\"b", t=true, n=none, i=-4, e=()'
    want = {"p": ((1,), (2, 3), ()), "s": 'a"b', "t": True, "n": None, "i": -4, "e": ()}
    fast = parse_module(_H + "%0: f32[2]@p1 = input() {" + block + "}\n")
    slow = parse_module(_H + "%0: f32[2]@p1 = input() {" + block
                        + ', z=array<i32[1]>"AQAAAA=="}\n')
    assert fast.nodes[0].attrs == want
    z = slow.nodes[0].attrs.pop("z")
    assert slow.nodes[0].attrs == want and z.tolist() == [1]
