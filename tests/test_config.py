"""Device configs (SPEC §2): parsing, families, options, errors with line:col."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mixc.config import Cluster, Device, init_device, parse_config
from mixc.errors import ConfigError, MixcError

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

SPEC = """\
domain: ["alice", "bob"]
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
"""

# The seed's MPC demo, as laid out on the slide: entries at the key's own
# indentation, properties two spaces under the '-'.
SEED_MPC = """\
domain: ["Alice", "Bob"]
device:
- p1:
  type: PYU
  domain: "Alice"
- p2:
  type: PYU
  domain: "Bob"
- mpc:
  type: MPC
  domain: ["Alice", "Bob"]
"""

SEED_FL_MPC = """\
domain: ["Client[#i, range(0,3)]", "Server[#j, range(0,2)]"]
device:
- worker[#i, range(0,3)]:
  type: PYU
  domain: "Client[#i]"
- aggregator:
  type: MPC
  domain: ["Server[0]", "Server[1]"]
"""

SEED_FL_TEE = """\
domain: ["Client[#i, range(0,3)]", "Server"]
device:
- worker[#i, range(0,3)]:
  type: PYU
  domain: "Client[#i]"
- aggregator:
  type: TEE
  domain: ["Server"]
"""

FULL = """\
domain: ["alice", "bob"]
device:
  - p1:
      type: PYU
      domain: "alice"
  - mpc:
      type: MPC
      domain: ["alice", "bob"]
      offline: dealer
      fraction_bits: 18
  - he:
      type: HE
      domain: ["alice", "bob"]
      key_owner: "alice"
"""


def err(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        init_device(text)
    msg = str(info.value)
    assert "\n" not in msg, msg
    assert isinstance(info.value, MixcError)
    return msg


def cfg(devices: str, domain: str = '["alice", "bob", "carol", "dave"]') -> str:
    """A config whose device section starts on line 3 (entries at 2 spaces)."""
    return f"domain: {domain}\ndevice:\n" + textwrap.indent(textwrap.dedent(devices).strip("\n"), "  ") + "\n"


# ---------------------------------------------------------------- valid configs

def test_spec_example():
    c = init_device(SPEC)
    assert isinstance(c, Cluster)
    assert c.parties == ("alice", "bob")
    assert list(c.devices) == ["p1", "p2", "mpc"]
    assert c.p1 == Device("p1", "PYU", ("alice",))
    assert c.p2.parties == ("bob",) and c.p2.party == "bob"
    assert c.mpc.kind == "MPC" and c.mpc.parties == ("alice", "bob")
    assert c["mpc"] is c.mpc
    assert [d.name for d in c] == ["p1", "p2", "mpc"]
    assert len(c) == 3
    assert "mpc" in c and c.mpc in c and "nope" not in c
    assert repr(c.mpc) == "Device(mpc: MPC on alice,bob)"
    assert repr(c.p1) == "Device(p1: PYU on alice)"


def test_seed_mpc_demo_capitalised_parties():
    c = init_device(SEED_MPC)
    assert c.parties == ("Alice", "Bob")
    assert c.p1.parties == ("Alice",)
    assert c.p2.parties == ("Bob",)
    assert c.mpc.parties == ("Alice", "Bob")
    # the slide layout and the SPEC layout mean the same thing
    assert init_device(SEED_MPC.replace("Alice", "alice").replace("Bob", "bob")) == init_device(SPEC)


def test_seed_fl_mpc_demo():
    c = init_device(SEED_FL_MPC)
    assert c.parties == ("Client[0]", "Client[1]", "Client[2]", "Server[0]", "Server[1]")
    assert list(c.devices) == ["worker[0]", "worker[1]", "worker[2]", "aggregator"]
    for i, w in enumerate(c.family("worker")):
        assert w.name == f"worker[{i}]" and w.kind == "PYU" and w.parties == (f"Client[{i}]",)
    assert c["worker[1]"].parties == ("Client[1]",)
    assert c.aggregator.kind == "MPC"
    assert c.aggregator.parties == ("Server[0]", "Server[1]")
    # `worker` alone is the family, as in the seed's `for i in range(len(worker))`
    assert c.worker == c.family("worker") and len(c.worker) == 3
    assert c["worker"] == c.family("worker")


def test_seed_fl_tee_demo():
    c = init_device(SEED_FL_TEE)
    assert c.parties == ("Client[0]", "Client[1]", "Client[2]", "Server")
    assert c.aggregator == Device("aggregator", "TEE", ("Server",))
    assert c.aggregator.party == "Server"
    assert [w.parties for w in c.family("worker")] == [("Client[0]",), ("Client[1]",), ("Client[2]",)]


def test_options_and_defaults():
    c = init_device(FULL)
    assert c.mpc.offline == "dealer" and c.mpc.fraction_bits == 18
    assert c.mpc.options == (("fraction_bits", 18), ("offline", "dealer"))
    assert c.mpc.option("offline") == "dealer"
    assert c.mpc.option("nope", 7) == 7
    assert c.he.key_owner == "alice" and c.he.evaluator == "bob"
    assert c.he.fraction_bits == 18
    assert c.p1.offline is None and c.p1.fraction_bits is None and c.p1.key_owner is None
    assert c.mpc.key_owner is None and c.he.offline is None
    # defaults are filled in: spelling them out changes nothing
    plain = init_device(cfg("""
      - mpc:
          type: MPC
          domain: [alice, bob]
    """))
    explicit = init_device(cfg("""
      - mpc:
          type: MPC
          domain: [alice, bob]
          offline: dealer
          fraction_bits: 18
    """))
    assert plain.mpc == explicit.mpc
    he = init_device(cfg("""
      - m:
          type: MPC
          domain: [alice, bob, carol]
          offline: he
          fraction_bits: 24
      - h:
          type: HE
          domain: ["alice", "bob"]
          key_owner: bob
    """))
    assert he.m.offline == "he" and he.m.fraction_bits == 24 and len(he.m.parties) == 3
    assert he.h.key_owner == "bob" and he.h.evaluator == "alice"


def test_device_is_frozen_and_hashable():
    d = Device("x", "MPC", ["a", "b"], {"offline": "he"})
    assert d.parties == ("a", "b") and d.options == (("offline", "he"),)
    assert hash(d) == hash(Device("x", "MPC", ("a", "b"), (("offline", "he"),)))
    with pytest.raises(Exception):
        d.name = "y"  # type: ignore[misc]


def test_lenient_syntax():
    text = (
        "\ufeff# leading comment\n"
        "\n"
        "domain: [alice, 'bob',]   # bare, single-quoted, trailing comma\n"
        "device:\n"
        "    # comment inside a block\n"
        "    - p1:   # comment after a key\n"
        "            type: pyu\n"
        "\n"
        "            domain: alice\n"
        "    - m:\n"
        "            type: MPC\n"
        "            domain: [\n"
        "                alice,   # comments and line breaks inside brackets\n"
        "                bob,\n"
        "            ]\n"
        "# trailing comment"
    )
    c = init_device(text)
    assert c.parties == ("alice", "bob")
    assert c.p1.kind == "PYU" and c.m.parties == ("alice", "bob")
    assert init_device(text.replace("\n", "\r\n")) == c
    assert init_device(SPEC.replace("\n", "\r\n")) == init_device(SPEC)


def test_tabs_and_indented_docstrings():
    tabbed = SPEC.replace("      ", "\t\t").replace("  ", "\t")
    assert init_device(tabbed) == init_device(SPEC)
    indented = textwrap.indent(SPEC, "        ")
    assert init_device("\n" + indented + "    ") == init_device(SPEC)
    assert init_device(textwrap.indent(SPEC, "   ")) == init_device(SPEC)


def test_family_variants():
    c = init_device(cfg("""
      - w[#k, range(1,3)]:
          type: HE
          domain: ["C[#k]", S]
          key_owner: "C[#k]"
      - all:
          type: MPC
          domain: ["C[#j, range(1,4)]"]
      - one[0]:
          type: PYU
          domain: C[0]
    """, domain='["C[#i, range(4)]", S]'))
    assert c.parties == ("C[0]", "C[1]", "C[2]", "C[3]", "S")
    assert [d.name for d in c.family("w")] == ["w[1]", "w[2]"]
    assert c["w[2]"].parties == ("C[2]", "S") and c["w[2]"].key_owner == "C[2]"
    assert c.all.parties == ("C[1]", "C[2]", "C[3]")
    assert c["one[0]"].parties == ("C[0]",)
    assert c.devices_at("C[2]") == (c["w[2]"], c.all)


def test_unknown_attribute_and_key():
    c = init_device(SPEC)
    with pytest.raises(AttributeError, match=r"no device 'p3'.*p1, p2, mpc"):
        c.p3
    with pytest.raises(KeyError, match="p3"):
        c["p3"]
    with pytest.raises(KeyError, match="no device family 'worker'"):
        c.family("worker")
    assert "p1" in dir(c)


# ------------------------------------------------------------------ file vs text

def test_examples_load():
    two = init_device(EXAMPLES / "two_party.devices")
    assert two.parties == ("alice", "bob")
    assert two.p1.parties == ("alice",) and two.p2.parties == ("bob",)
    assert two.mpc.parties == ("alice", "bob") and two.mpc.offline == "dealer"
    assert init_device(str(EXAMPLES / "fl_mpc.devices")) == init_device(SEED_FL_MPC)
    assert init_device(EXAMPLES / "fl_tee.devices") == init_device(SEED_FL_TEE)


def test_path_forms(tmp_path, monkeypatch):
    f = tmp_path / "two_party.devices"
    f.write_text(SPEC)
    assert init_device(f) == init_device(SPEC)
    assert init_device(str(f)) == init_device(SPEC)
    monkeypatch.chdir(tmp_path)
    assert init_device("two_party.devices") == init_device(SPEC)
    # a file with any name is a path when it exists
    (tmp_path / "cfg").write_text(SPEC)
    assert init_device("cfg") == init_device(SPEC)
    assert init_device(SPEC.encode()) == init_device(SPEC)


def test_missing_files(tmp_path):
    for name in ["nothere.devices", "x.yaml", "x.yml", "x.txt", "some/dir/x"]:
        with pytest.raises(ConfigError, match=f"^no such config file: {name}$"):
            init_device(name)
    with pytest.raises(ConfigError, match="no such config file"):
        init_device(tmp_path / "gone.devices")
    with pytest.raises(ConfigError, match="not a config file"):
        init_device(tmp_path)
    with pytest.raises(TypeError):
        init_device(42)


def test_file_errors_are_prefixed_with_the_file_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("two_party.devices").write_text(SPEC.replace("  - p1:", "  - :"))
    with pytest.raises(ConfigError) as info:
        init_device("two_party.devices")
    assert str(info.value) == "two_party.devices:3:5: unexpected ':' — expected a device name"
    with pytest.raises(ConfigError, match=r"^two_party\.devices:3:5: "):
        init_device(Path("two_party.devices"))
    # text input has no prefix
    assert err(SPEC.replace("  - p1:", "  - :")).startswith("3:5: ")
    with pytest.raises(ConfigError, match=r"^my\.cfg:1:1: "):
        parse_config("", source="my.cfg")


# ---------------------------------------------------------------- syntax errors

@pytest.mark.parametrize("text, where, phrase", [
    # missing device name after '-'
    ("domain: [a, b]\ndevice:\n  - :\n", "3:5", "unexpected ':' — expected a device name"),
    # missing value
    ("domain:\ndevice:\n", "1:8", "unexpected end of line — expected a value"),
    # a list that is never closed
    ("domain: [a, b\ndevice:\n  - p1:\n", "2:1", "the '[' at 1:9 is never closed"),
    ("domain: [a, b", "1:14", "unexpected end of file — expected ',' or ']'"),
    # missing ':' after a device name
    ("domain: [a]\ndevice:\n  - p1\n      type: PYU\n", "3:7", "expected ':'"),
    # an entry without properties
    ("domain: [a]\ndevice:\n  - p1:\n  - p2:\n", "4:3",
     "unexpected '-' — expected the device's properties, indented under it"),
    ("domain: [a]\ndevice:\n  - p1:\n", "3:8", "unexpected end of file"),
    # stray characters, unterminated strings
    ("domain: [a]\ndevice:\n  - p1:\n      type: PYU $\n", "4:17", "unexpected character '$'"),
    ('domain: ["a]\n', "1:10", "unterminated string"),
    ('domain: ["a" "b"]\n', "1:14", 'unexpected string "b" — expected \',\' or \']\''),
    # indentation
    ("domain: [a]\ndevice:\n  - p1:\n      type: PYU\n        domain: a\n", "5:9", "unexpected indentation"),
    ("domain: [a]\ndevice:\n  - p1:\n      type: PYU\n    domain: a\n", "5:5", "inconsistent indentation"),
    ("domain: [a]\ndevice:\n  - p1:\n\ttype: PYU\n        domain: a\n", "4:2", "tabs and spaces mixed"),
    # bad names inside quoted references point into the string
    ('domain: ["a b"]\n', "1:13", "in party name \"a b\": unexpected name 'b'"),
    ('domain: ["C[#i, range(0,x)]"]\n', "1:25", "unexpected name 'x' — expected a number"),
    ('domain: ["C["]\n', "1:13", "expected an index"),
])
def test_syntax_errors(text, where, phrase):
    msg = err(text)
    assert msg.startswith(where + ": "), msg
    assert phrase in msg, msg


# -------------------------------------------------------------- semantic errors

@pytest.mark.parametrize("devices, where, phrase", [
    # unknown device type, listing the valid ones
    ("""
      - p1:
          type: PYX
          domain: alice
    """, "4:13", "unknown device type 'PYX' (valid: PYU, MPC, HE, TEE)"),
    ("""
      - p1:
          type: 5
          domain: alice
    """, "4:13", "unknown device type 5"),
    # missing type / domain
    ("""
      - p1:
          domain: alice
    """, "3:5", "device 'p1' has no 'type'"),
    ("""
      - p1:
          type: PYU
    """, "3:5", "device 'p1' has no 'domain'"),
    # unknown party
    ("""
      - p1:
          type: PYU
          domain: "erin"
    """, "5:15", "unknown party 'erin' (parties: alice, bob, carol, dave)"),
    # duplicate device names
    ("""
      - p1:
          type: PYU
          domain: alice
      - p1:
          type: PYU
          domain: bob
    """, "6:5", "duplicate device 'p1' (first defined at 3:5)"),
    # duplicate keys
    ("""
      - p1:
          type: PYU
          domain: alice
          type: TEE
    """, "6:7", "duplicate key 'type'"),
    # PYU / TEE need exactly one party
    ("""
      - p1:
          type: PYU
          domain: [alice, bob]
    """, "5:15", "a PYU device runs at exactly one party"),
    ("""
      - p1:
          type: PYU
          domain: [alice]
    """, "5:15", "a PYU device runs at exactly one party: write domain: \"alice\", not a list"),
    ("""
      - t:
          type: TEE
          domain: ["alice", "bob"]
    """, "5:15", "a TEE device is exactly one party, but this domain names 2"),
    # MPC party counts
    ("""
      - m:
          type: MPC
          domain: alice
    """, "5:15", "an MPC device needs at least 2 parties"),
    ("""
      - m:
          type: MPC
          domain: [alice]
    """, "5:15", "an MPC device needs at least 2 parties"),
    ("""
      - m:
          type: MPC
          domain: [alice, bob, carol, dave]
    """, "5:15", "MPC over 4 parties is not supported (2 or 3)"),
    ("""
      - m:
          type: MPC
          domain: [alice, bob, alice]
    """, "5:28", "party 'alice' appears twice"),
    # unknown option keys, listing the allowed ones
    ("""
      - p1:
          type: PYU
          domain: alice
          offline: dealer
    """, "6:7", "unknown option 'offline' for a PYU device (allowed: type, domain)"),
    ("""
      - m:
          type: MPC
          domain: [alice, bob]
          key_owner: alice
    """, "6:7", "unknown option 'key_owner' for an MPC device (allowed: type, domain, offline, fraction_bits, ring)"),
    # bad option values
    ("""
      - m:
          type: MPC
          domain: [alice, bob]
          offline: trusted
    """, "6:16", "offline must be 'dealer' or 'he', got 'trusted'"),
    ("""
      - m:
          type: MPC
          domain: [alice, bob]
          fraction_bits: 41
    """, "6:22", "fraction_bits must be an integer in 1..40, got 41"),
    ("""
      - m:
          type: MPC
          domain: [alice, bob]
          fraction_bits: 0
    """, "6:22", "fraction_bits must be an integer in 1..40, got 0"),
    ("""
      - m:
          type: MPC
          domain: [alice, bob]
          fraction_bits: "18"
    """, "6:22", "fraction_bits must be an integer in 1..40"),
    # HE: exactly two parties, key_owner required and among them
    ("""
      - h:
          type: HE
          domain: [alice, bob]
    """, "3:5", "HE device 'h' needs 'key_owner'"),
    ("""
      - h:
          type: HE
          domain: [alice, bob]
          key_owner: carol
    """, "6:18", "key_owner 'carol' is not one of the parties of HE device 'h' (alice, bob)"),
    ("""
      - h:
          type: HE
          domain: [alice, bob, carol]
          key_owner: alice
    """, "5:15", "an HE device needs exactly 2 parties"),
])
def test_device_errors(devices, where, phrase):
    msg = err(cfg(devices))
    assert msg.startswith(where + ": "), msg
    assert phrase in msg, msg


@pytest.mark.parametrize("text, where, phrase", [
    ("", "1:1", "empty device config"),
    ("device:\n  - p1:\n      type: PYU\n      domain: a\n", "1:1", "missing top-level 'domain:'"),
    ('domain: ["a"]\n', "1:1", "no devices"),
    ('domain: ["a", "b", "a"]\n', "1:20", "duplicate party 'a' (already listed at 1:10)"),
    ('domain: ["C[#i, range(0,2)]", "C[1]"]\n', "1:31", "duplicate party 'C[1]'"),
    ('domain: []\n', "1:9", "'domain' lists no parties"),
    ('domain: [a]\ndomain: [b]\n', "2:1", "duplicate top-level key 'domain' (first at 1:1)"),
    ('domain: [a]\ndevices:\n  - p1:\n      type: PYU\n', "2:1", "unknown top-level key 'devices'"),
    ('domain: [a]\ndevice: p1\n', "2:9", "'device' takes an indented list"),
    # bad ranges
    ('domain: ["C[#i, range(3,1)]"]\n', "1:23", "bad range(3,1)"),
    ('domain: ["C[#i, range(2,2)]"]\n', "1:23", "bad range(2,2)"),
    ('domain: ["C[#i, range(-1,2)]"]\n', "1:23", "bad range(-1,2)"),
    ("domain: [C[#i, range(0,99999999)]]\n", "1:22", "at most 10000"),
    # a family variable that nothing binds
    ('domain: ["C[#i]"]\n', "1:13", "family variable '#i' is not bound here"),
])
def test_top_level_errors(text, where, phrase):
    msg = err(text)
    assert msg.startswith(where + ": "), msg
    assert phrase in msg, msg


@pytest.mark.parametrize("devices, where, phrase", [
    # Client[#k] where the device binds #i
    ("""
      - worker[#i, range(0,3)]:
          type: PYU
          domain: "Client[#k]"
    """, "5:23", "unbound family variable '#k' (device 'worker[#i, range(0,3)]' binds '#i')"),
    # a variable in a device that is not a family
    ("""
      - agg:
          type: PYU
          domain: Client[#i]
    """, "5:22", "unbound family variable '#i': device 'agg' is not a family"),
    # a family without a range
    ("""
      - worker[#i]:
          type: PYU
          domain: "Client[#i]"
    """, "3:12", "family variable '#i' needs a range"),
    ("""
      - worker[#i, range(5,1)]:
          type: PYU
          domain: "Client[#i]"
    """, "3:22", "bad range(5,1)"),
    # expansion runs past the declared parties
    ("""
      - worker[#i, range(0,4)]:
          type: PYU
          domain: "Client[#i]"
    """, "5:15", "unknown party 'Client[3]' in the domain of worker[3]"),
    # duplicates after expansion
    ("""
      - worker[#i, range(0,3)]:
          type: PYU
          domain: "Client[#i]"
      - worker[2]:
          type: PYU
          domain: "Client[0]"
    """, "6:5", "duplicate device 'worker[2]' (first defined at 3:5)"),
])
def test_family_errors(devices, where, phrase):
    msg = err(cfg(devices, domain='["Client[#i, range(0,3)]", "Server"]'))
    assert msg.startswith(where + ": "), msg
    assert phrase in msg, msg


# ------------------------------------------------------------------------ fuzz

_ALPHABET = st.sampled_from(list(" \t\n\r:-[]#,\"'()0123456789abPYUMCHE_$\\") + ["range", "#i", "  ", "\n  "])
_BASES = [SPEC, FULL, SEED_MPC, SEED_FL_MPC, SEED_FL_TEE]


@st.composite
def _mutated(draw):
    text = draw(st.sampled_from(_BASES))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        i = draw(st.integers(0, len(text)))
        if op == "insert":
            text = text[:i] + draw(_ALPHABET) + text[i:]
        elif op == "delete":
            j = draw(st.integers(i, min(len(text), i + 8)))
            text = text[:i] + text[j:]
        else:
            text = text[:i] + draw(_ALPHABET) + text[i + 1:]
    return text


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutated())
def test_fuzz_mutations_parse_or_raise_config_error(text):
    try:
        cluster = init_device(text)
    except ConfigError as e:
        msg = str(e)
        assert "\n" not in msg
        # text input: the message starts with line:col
        assert msg.split(":", 2)[0].isdigit() and msg.split(":", 2)[1].isdigit(), msg
    else:
        assert isinstance(cluster, Cluster)
        assert len(cluster) >= 1


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=60))
def test_fuzz_arbitrary_text(text):
    if "\n" not in text and "\r" not in text and os.path.exists(text.strip() or "\0"):
        return  # would be read as a path
    try:
        init_device(text + "\n")
    except ConfigError:
        pass
