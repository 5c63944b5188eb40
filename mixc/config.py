"""Device configs: parse the seed's YAML-like format into a :class:`Cluster`.

The format (SPEC §2, grammar in ``grammars/devices.lark``)::

    domain: ["alice", "bob"]              # the parties, in order
    device:
      - p1:
          type: PYU                       # plaintext at one party
          domain: "alice"
      - mpc:
          type: MPC                       # secret shares among 2 or 3 parties
          domain: ["alice", "bob"]
          offline: dealer                 # or: he   (where triples come from)
          fraction_bits: 18               # fixed point, 1..40 (1..48 with ring: 128)
          ring: 64                        # or: 128   (shares in Z_2^64 or Z_2^128)
      - he:
          type: HE                        # ciphertexts under key_owner's key
          domain: ["alice", "bob"]
          key_owner: "alice"              # the other party evaluates
      - tee:
          type: TEE                       # a party trusted with plaintext
          domain: "bob"

Parametric families (the seed's FL demo): ``"Client[#i, range(0,3)]"`` in the
top-level domain declares the parties ``Client[0]..Client[2]``; a device
``- worker[#i, range(0,3)]:`` with ``domain: "Client[#i]"`` declares the
devices ``worker[0]..worker[2]``, ``worker[k]`` on ``Client[k]``.
``range(n)`` means ``range(0,n)``.

Every mistake is a :class:`~mixc.errors.ConfigError` whose message is one line
``[file:]line:col: what went wrong`` (1-based), pointing at the token at fault.

Public API: :func:`init_device`, :func:`parse_config`, :class:`Cluster`,
:class:`Device`, :data:`DEVICE_KINDS`, :data:`OPTIONS`.
"""

from __future__ import annotations

import contextvars
import copy
import functools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from lark import Lark, Token, Tree
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedInput, UnexpectedToken
from lark.lark import PostLex

from mixc.errors import ConfigError

__all__ = [
    "DEVICE_KINDS", "OPTIONS", "Device", "Cluster", "init_device", "parse_config",
]

#: The device kinds, in the order error messages list them.
DEVICE_KINDS = ("PYU", "MPC", "HE", "TEE")

#: Option keys each kind accepts besides ``type`` and ``domain``.
OPTIONS: Mapping[str, tuple[str, ...]] = {
    "PYU": (),
    "MPC": ("offline", "fraction_bits", "ring"),
    "HE": ("key_owner", "fraction_bits"),
    "TEE": (),
}

OFFLINE_MODES = ("dealer", "he")
DEFAULT_OFFLINE = "dealer"
DEFAULT_FRACTION_BITS = 18
FRACTION_BITS_RANGE = (1, 40)
#: MPC share rings (bits); 128 is SPU's FM128: more range and fraction bits, ~2-3x the cost.
RINGS = (64, 128)
DEFAULT_RING = 64
#: The most fraction bits each ring takes: a product carries 2f bits before truncation,
#: which must stay below the ring's truncation bound with room for the integer part.
MAX_FRACTION_BITS = {64: FRACTION_BITS_RANGE[1], 128: 48}
MPC_PARTIES = (2, 3)
#: Upper bound on one ``range(a,b)``: a typo such as range(0,30000000) must
#: be an error, not a hang.
MAX_FAMILY = 10_000

_CONFIG_SUFFIXES = (".devices", ".yaml", ".yml", ".txt")
_INDEXED = re.compile(r"^(?P<base>.+)\[(?P<index>-?\d+)\]$")


# --------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------

@dataclass(frozen=True, repr=False)
class Device:
    """One device: where a piece of the program runs and how it is protected.

    ``options`` holds the kind's options as sorted ``(key, value)`` pairs,
    defaults filled in (an MPC device always has ``offline`` and
    ``fraction_bits``), so two configs that mean the same compare equal.
    """

    name: str
    kind: str                          # "PYU" | "MPC" | "HE" | "TEE"
    parties: tuple[str, ...]
    options: tuple[tuple[str, Any], ...] = field(default=())

    def __post_init__(self):
        object.__setattr__(self, "parties", tuple(self.parties))
        opts = self.options.items() if isinstance(self.options, Mapping) else self.options
        object.__setattr__(self, "options", tuple(sorted(((str(k), v) for k, v in opts), key=lambda kv: kv[0])))

    def option(self, key: str, default: Any = None) -> Any:
        """The value of option ``key``, or ``default`` when it is not set."""
        for k, v in self.options:
            if k == key:
                return v
        return default

    @property
    def offline(self) -> str | None:
        """MPC: where correlated randomness comes from, ``"dealer"`` or ``"he"``."""
        return self.option("offline", DEFAULT_OFFLINE) if self.kind == "MPC" else None

    @property
    def fraction_bits(self) -> int | None:
        """MPC/HE: fixed-point fraction bits (default 18); None for PYU/TEE."""
        if self.kind in ("MPC", "HE"):
            return self.option("fraction_bits", DEFAULT_FRACTION_BITS)
        return None

    @property
    def ring(self) -> int | None:
        """MPC: the bits of the share ring, 64 (default) or 128; None for other kinds."""
        return self.option("ring", DEFAULT_RING) if self.kind == "MPC" else None

    @property
    def key_owner(self) -> str | None:
        """HE: the party holding the secret key; None for other kinds."""
        return self.option("key_owner") if self.kind == "HE" else None

    @property
    def evaluator(self) -> str | None:
        """HE: the party that computes on ciphertexts (the non-key-owner)."""
        if self.kind != "HE":
            return None
        others = [p for p in self.parties if p != self.key_owner]
        return others[0] if len(others) == 1 else None

    @property
    def party(self) -> str:
        """PYU/TEE: the single party the device lives at."""
        if len(self.parties) != 1:
            raise AttributeError(
                f"{self.kind} device {self.name!r} spans {len(self.parties)} parties; use .parties")
        return self.parties[0]

    def __repr__(self) -> str:
        return f"Device({self.name}: {self.kind} on {','.join(self.parties)})"


def _split_index(name: str) -> tuple[str, int] | None:
    m = _INDEXED.match(name)
    return (m.group("base"), int(m.group("index"))) if m else None


class Cluster:
    """The parties and devices of one config.

    ``cluster.p1`` or ``cluster["worker[1]"]`` is a device;
    ``cluster.worker`` / ``cluster["worker"]`` / ``cluster.family("worker")``
    is the list ``[worker[0], worker[1], ...]`` of a family (when there is no
    device called plain ``worker``). Iterating yields the devices in
    declaration order; ``len`` counts them.
    """

    def __init__(self, parties, devices, source: str | None = None):
        self._parties = tuple(parties)
        if isinstance(devices, Mapping):
            devices = devices.values()
        self._devices = {d.name: d for d in devices}
        self.source = source

    @property
    def parties(self) -> tuple[str, ...]:
        """All parties, in declaration order (families expanded)."""
        return self._parties

    @property
    def devices(self) -> dict[str, Device]:
        """Device name -> Device, in declaration order (families expanded)."""
        return dict(self._devices)

    def family(self, name: str) -> list[Device]:
        """The devices ``name[0], name[1], ...`` in index order."""
        members = self._family(name)
        if not members:
            fams = sorted({s[0] for s in map(_split_index, self._devices) if s})
            raise KeyError(f"no device family {name!r} in this cluster "
                           f"(families: {', '.join(fams) or 'none'})")
        return members

    def _family(self, name: str) -> list[Device]:
        found = []
        for dname, dev in self._devices.items():
            split = _split_index(dname)
            if split and split[0] == name:
                found.append((split[1], dev))
        return [d for _, d in sorted(found, key=lambda t: t[0])]

    def devices_at(self, party: str) -> tuple[Device, ...]:
        """The devices whose domain includes ``party``."""
        return tuple(d for d in self._devices.values() if party in d.parties)

    def _lookup(self, name: str):
        devices = self.__dict__.get("_devices", {})
        if name in devices:
            return devices[name]
        members = self._family(name) if devices else []
        if members:
            return members
        return None

    def _known(self) -> str:
        names = list(self.__dict__.get("_devices", {}))
        return ", ".join(names[:20]) + (", ..." if len(names) > 20 else "") or "none"

    def __getattr__(self, name: str):
        if name.startswith("__") or name in ("_devices", "_parties"):
            raise AttributeError(name)
        found = self._lookup(name)
        if found is None:
            raise AttributeError(f"no device {name!r} in this cluster (devices: {self._known()})")
        return found

    def __getitem__(self, name: str):
        found = self._lookup(name) if isinstance(name, str) else None
        if found is None:
            raise KeyError(f"no device {name!r} in this cluster (devices: {self._known()})")
        return found

    def __contains__(self, item) -> bool:
        if isinstance(item, Device):
            return self._devices.get(item.name) == item
        return item in self._devices

    def __iter__(self) -> Iterator[Device]:
        return iter(self._devices.values())

    def __len__(self) -> int:
        return len(self._devices)

    def __eq__(self, other) -> bool:
        if not isinstance(other, Cluster):
            return NotImplemented
        return self._parties == other._parties and list(self._devices.items()) == list(other._devices.items())

    __hash__ = None

    def __dir__(self):
        return sorted(set(super().__dir__()) | {n for n in self._devices if n.isidentifier()})

    def __repr__(self) -> str:
        devs = ", ".join(repr(d) for d in list(self._devices.values())[:8])
        more = ", ..." if len(self._devices) > 8 else ""
        return f"Cluster(parties={list(self._parties)!r}, devices=[{devs}{more}])"


# --------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------

def init_device(text_or_path) -> Cluster:
    """Parse a device config given as text, or as a path to a file.

    A ``str`` is a path when it has no newline and names an existing file;
    one that does not exist but looks like a path (contains ``/`` or ends in
    .devices/.yaml/.yml/.txt) is an error; any other ``str`` is config text.
    ``os.PathLike`` objects are always paths. Errors in a file are prefixed
    with the path as given: ``examples/two_party.devices:3:7: ...``.
    """
    if isinstance(text_or_path, Cluster):
        return text_or_path
    if isinstance(text_or_path, (bytes, bytearray)):
        try:
            text_or_path = bytes(text_or_path).decode("utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(f"device config is not UTF-8 text: {e.reason} at byte {e.start}") from None
    if isinstance(text_or_path, os.PathLike):
        return _load_file(os.fspath(text_or_path))
    if not isinstance(text_or_path, str):
        raise TypeError(f"init_device expects config text or a path, not {type(text_or_path).__name__}")
    s = text_or_path
    if "\n" not in s and "\r" not in s:
        if s and os.path.isfile(s):
            return _load_file(s)
        stripped = s.strip()
        if stripped and ("/" in stripped or stripped.lower().endswith(_CONFIG_SUFFIXES)):
            if os.path.isdir(stripped):
                raise ConfigError(f"not a config file: {stripped} (it is a directory)")
            raise ConfigError(f"no such config file: {stripped}")
    return parse_config(s)


def _load_file(path: str) -> Cluster:
    if os.path.isdir(path):
        raise ConfigError(f"not a config file: {path} (it is a directory)")
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"no such config file: {path}") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: config file is not UTF-8 text (bad byte at offset {e.start})") from None
    return parse_config(text, source=path)


def parse_config(text: str, source: str | None = None) -> Cluster:
    """Parse config text. ``source`` (a file name) prefixes error messages."""
    prefix = f"{source}:" if source else ""
    try:
        return _Builder(_parse(text)).build(source)
    except _Fail as f:
        raise ConfigError(f"{prefix}{f.line}:{f.col}: {f.msg}") from None


# --------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------

class _Fail(Exception):
    """Internal: an error at line:col; parse_config adds the file name."""

    def __init__(self, line: int, col: int, msg: str):
        super().__init__(msg)
        self.line, self.col, self.msg = max(1, int(line or 1)), max(1, int(col or 1)), msg


def _fail_at(tok, msg: str) -> _Fail:
    return _Fail(getattr(tok, "line", 1), getattr(tok, "column", 1), msg)


def _grammar_text() -> str:
    """The text of grammars/devices.lark (one place to change how it is found)."""
    path = Path(__file__).resolve().parent.parent / "grammars" / "devices.lark"
    try:
        from mixc.resources import grammar_path  # type: ignore
        path = Path(grammar_path("devices.lark"))
    except (ImportError, FileNotFoundError):
        pass
    return path.read_text(encoding="utf-8")


# The indentation of the config's first content line: the post-lexer's base
# level (so a config pasted from an indented Python string works).
_BASE_INDENT: contextvars.ContextVar[str] = contextvars.ContextVar("_BASE_INDENT", default="")


_EOF = "<end of file>"  # value of the _DEDENT tokens that close blocks at the end


class _Indenter(PostLex):
    """Turns line breaks into _NL/_INDENT/_DEDENT, like Python's tokenizer.

    Indentation is compared as strings: a deeper line must extend the
    enclosing indentation, a shallower one must return to an enclosing
    level exactly; anything else (including a tab/space mix-up) is an
    error. Line breaks inside [...] and (...) are dropped. Unlike lark's own
    Indenter this keeps no state on the instance, so it is thread-safe.
    """

    always_accept = ("_NL",)
    _OPEN = ("LSQB", "LPAR")
    _CLOSE = ("RSQB", "RPAR")

    def process(self, stream):
        stack = [_BASE_INDENT.get()]
        depth = 0
        last = None
        for tok in stream:
            if tok.type == "_NL" and "\n" in tok.value:
                if depth:
                    continue
                last = tok
                yield tok
                indent = tok.value.rsplit("\n", 1)[1]
                line, col = tok.end_line, tok.end_column
                if indent == stack[-1]:
                    continue
                if indent.startswith(stack[-1]):
                    stack.append(indent)
                    yield Token("_INDENT", indent, tok.end_pos, line, col, line, col, tok.end_pos)
                    continue
                if indent not in stack:
                    raise _Fail(line, col, "inconsistent indentation: this line does not line up "
                                "with any enclosing block" + (" (tabs and spaces mixed?)"
                                                              if "\t" in "".join(stack) + indent else ""))
                while stack[-1] != indent:
                    stack.pop()
                    yield Token("_DEDENT", indent, tok.end_pos, line, col, line, col, tok.end_pos)
                continue
            if tok.type in self._OPEN:
                depth += 1
            elif tok.type in self._CLOSE and depth:
                depth -= 1
            last = tok
            yield tok
        while len(stack) > 1:
            stack.pop()
            if last is not None:  # the end of the input: just after the last token
                line, col = last.end_line or last.line, last.end_column or last.column
                yield Token("_DEDENT", _EOF, last.end_pos, line, col, line, col, last.end_pos)
            else:
                yield Token("_DEDENT", _EOF, 0, 1, 1, 1, 1, 0)


@functools.lru_cache(maxsize=1)
def _parser() -> Lark:
    return Lark(_grammar_text(), parser="lalr", lexer="contextual", postlex=_Indenter(),
                start=["start", "ref"], maybe_placeholders=True, propagate_positions=True)


def _normalize(text: str) -> tuple[str, str]:
    """Unify line endings; return (text ready to lex, base indentation)."""
    if text.startswith("\ufeff"):
        text = text[1:]
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    base = ""
    for line in text.split("\n"):
        body = line.lstrip(" \t")
        if body and not body.startswith("#"):
            base = line[: len(line) - len(body)]
            break
    # End with exactly one line break back to the base level, so the last
    # line's block closes cleanly (positions of real content do not move).
    return text.rstrip(" \t\n") + "\n" + base, base


def _parse(text: str) -> Tree:
    body, base = _normalize(text)
    token = _BASE_INDENT.set(base)
    try:
        return _parser().parse(body, start="start")
    except _Fail as f:
        raise _clamp(f, body) from None
    except UnexpectedInput as e:
        raise _clamp(_syntax_error(e), body) from None
    except RecursionError:
        raise _Fail(1, 1, "config nested too deeply") from None
    except LarkError as e:  # pragma: no cover - defensive: never leak lark's errors
        raise _Fail(1, 1, f"cannot parse device config: {str(e).splitlines()[0] if str(e) else e}") from None
    finally:
        _BASE_INDENT.reset(token)


def _clamp(f: _Fail, body: str) -> _Fail:
    """Point errors found after the last line at the end of the last line."""
    lines = body.rstrip(" \t\n").split("\n")
    if f.line > len(lines):
        f.line, f.col = len(lines), len(lines[-1]) + 1
        f.msg = re.sub(r"^unexpected (end of line|end of the indented block|indentation)",
                       "unexpected end of file", f.msg)
    return f


def _parse_ref_text(inner: str):
    token = _BASE_INDENT.set("")
    try:
        return _parser().parse(inner, start="ref")
    finally:
        _BASE_INDENT.reset(token)


# ---- syntax errors in words ------------------------------------------------

_PUNCT = {"COLON": ":", "MINUS": "-", "LSQB": "[", "RSQB": "]", "COMMA": ",",
          "LPAR": "(", "RPAR": ")", "RANGE": "range"}
_VALUE_START = {"STRING", "NAME", "INT", "LSQB"}


def _found_words(tok, in_string: bool = False) -> str:
    t, v = tok.type, str(tok.value)
    if t == "$END":
        return "end of the name" if in_string else "end of file"
    if t == "_NL":
        return "comment" if v.lstrip().startswith("#") else "end of line"
    if t == "_INDENT":
        return "indentation"
    if t == "_DEDENT":
        return "end of file" if v == _EOF else "end of the indented block"
    if t == "NAME":
        return f"name '{v}'"
    if t == "STRING":
        return f"string {v}"
    if t == "INT":
        return f"number {v}"
    if t == "VAR":
        return f"family variable '{v}'"
    if t in _PUNCT:
        return f"'{_PUNCT[t]}'"
    return f"'{v}'" if v else t


def _stack_of(e) -> list:
    ip = getattr(e, "interactive_parser", None)
    ps = getattr(ip, "parser_state", None) if ip is not None else None
    if ps is None:
        ps = getattr(e, "state", None)
    return list(getattr(ps, "value_stack", None) or [])


def _expected_of(e) -> set[str]:
    """The terminals the parser would have accepted where it stopped."""
    ip = getattr(e, "interactive_parser", None)
    if ip is not None:
        try:
            return _accepts(ip.parser_state)
        except Exception:  # pragma: no cover - fall back to what lark reported
            pass
    exp = getattr(e, "accepts", None) or getattr(e, "expected", None) or getattr(e, "allowed", None) or ()
    return {x for x in exp if x.isupper() and not x.startswith("__")}


def _accepts(state) -> set[str]:
    """Terminals that would be shifted next (like InteractiveParser.accepts,
    but also trying end of input properly)."""
    if state.position == state.parse_conf.end_state:
        return {"$END"}  # everything has been reduced to the start symbol
    conf = copy.copy(state.parse_conf)
    conf.callbacks = {}
    found = set()
    for t in state.parse_conf.parse_table.states[state.position]:
        if not t.isupper():
            continue
        trial = state.copy(deepcopy_values=False)
        trial.parse_conf = conf
        try:
            trial.feed_token(Token(t, ""), is_end=(t == "$END"))
        except UnexpectedInput:
            continue
        except Exception:  # pragma: no cover - e.g. a callback failing on fake tokens
            continue
        found.add(t)
    return found


def _kind(x) -> str:
    if isinstance(x, Token):
        return x.type
    if isinstance(x, Tree):
        return "tree:" + str(x.data)
    return ""


def _expected_words(expected: set[str], stack: list, in_string: bool = False) -> str:
    exp = set(expected)
    prev = _kind(stack[-1]) if stack else ""
    in_entry = any(_kind(x) == "MINUS" for x in stack)
    words: list[str] = []
    if "STRING" in exp:
        words.append('a value (a "string", a name, a number or a [list])')
        exp -= _VALUE_START
    if {"INT", "VAR"} <= exp:
        words.append("an index (a number or a family variable like #i)")
        exp -= {"INT", "VAR"}
    if "NAME" in exp:
        if prev == "MINUS":
            words.append("a device name")
        elif in_string or prev in ("LSQB", "COMMA"):
            words.append("a name")
        elif in_entry:
            words.append("a property (key: value)")
        elif "$END" in exp or not stack:
            words.append("a top-level key ('domain:' or 'device:')")
        else:
            words.append("a name")
        exp.discard("NAME")
    if "_INDENT" in exp:
        if in_entry:
            words.append("the device's properties, indented under it")
        else:
            words.append("an indented block")
        exp.discard("_INDENT")
    if "MINUS" in exp:
        words.append("'- name:' (a device entry)")
        exp.discard("MINUS")
    if "LSQB" in exp and prev == "NAME" and not in_string and len(exp) > 1:
        exp.discard("LSQB")  # "name[index]" is possible, but rarely what was meant
    if "_DEDENT" in exp:
        words.append("the end of the indented block")
        exp.discard("_DEDENT")
    order = ["COLON", "COMMA", "RSQB", "LSQB", "LPAR", "RPAR", "RANGE", "INT", "VAR", "STRING", "_NL", "$END"]
    names = {"INT": "a number", "VAR": "a family variable like #i", "STRING": 'a "string"',
             "_NL": "end of line", "$END": "end of the name" if in_string else "end of file"}
    for t in order:
        if t in exp:
            words.append(names.get(t) or f"'{_PUNCT[t]}'")
            exp.discard(t)
    words += sorted(x for x in exp if not x.startswith("__"))
    if not words:
        return "something else"
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " or " + words[-1]


def _unclosed_hint(stack: list, line: int) -> str:
    for x in reversed(stack):
        if isinstance(x, Token) and x.type in ("LSQB", "LPAR"):
            if x.line != line:
                return f" (the '{x.value}' at {x.line}:{x.column} is never closed)"
            return ""
    return ""


def _syntax_error(e: UnexpectedInput, in_string: bool = False) -> _Fail:
    stack = _stack_of(e)
    expected = _expected_of(e)
    top = stack[-3:]
    if (len(stack) == len(top) + sum(1 for x in stack[:-3] if _kind(x).startswith("tree:"))
            and [_kind(x) for x in top] == ["NAME", "COLON", "_NL"] and top[0] != "device"):
        # "domain:" with its value missing: the parser took it for a block key.
        nl = top[2]
        return _Fail(nl.line, nl.column, f"unexpected end of line — expected a value for '{top[0]}' "
                                         'on the same line (e.g. ["alice", "bob"])')
    if isinstance(e, UnexpectedToken):
        tok = e.token
        line, col = tok.line, tok.column
        if tok.type == "$END":  # just after the last token (clamped to the last line later)
            line = getattr(tok, "end_line", None) or line
            col = getattr(tok, "end_column", None) or col
        found = _found_words(e.token, in_string)
        if e.token.type == "_INDENT":
            msg = "unexpected indentation"
        else:
            msg = f"unexpected {found}"
        msg += f" — expected {_expected_words(expected, stack, in_string)}"
        return _Fail(line, col, msg + _unclosed_hint(stack, line or 1))
    if isinstance(e, UnexpectedCharacters):
        ch = e.char
        hist = getattr(e, "token_history", None) or []
        if ch in "\"'" and not in_string:
            return _Fail(e.line, e.column, f"unterminated string (missing closing {ch})")
        shown = repr(ch) if not ch.isprintable() or ch.isspace() else f"'{ch}'"
        msg = (f"unexpected character {shown} — expected "
               f"{_expected_words(expected, stack or hist[-1:], in_string)}")
        return _Fail(e.line, e.column, msg + _unclosed_hint(stack, e.line))
    line = getattr(e, "line", 1)
    col = getattr(e, "column", 1)
    return _Fail(line if isinstance(line, int) and line > 0 else 1,
                 col if isinstance(col, int) and col > 0 else 1, "syntax error")


# --------------------------------------------------------------------------
# From tree to Cluster
# --------------------------------------------------------------------------

@dataclass
class _Ref:
    """A party or device reference: name, name[k], name[#v], name[#v, range(a,b)]."""

    name: str
    tok: Any                     # where to point for errors about the whole ref
    index: int | None = None
    var: str | None = None
    var_tok: Any = None
    lo: int | None = None
    hi: int | None = None

    @property
    def is_family(self) -> bool:
        return self.lo is not None

    def text(self) -> str:
        if self.is_family:
            return f"{self.name}[{self.var}, range({self.lo},{self.hi})]"
        if self.var is not None:
            return f"{self.name}[{self.var}]"
        if self.index is not None:
            return f"{self.name}[{self.index}]"
        return self.name


class _Pos:
    """A position that is not a real token (inside a quoted string)."""

    def __init__(self, line, column):
        self.line, self.column = line, column


def _first_token(node):
    if isinstance(node, Token):
        return node
    if isinstance(node, Tree):
        for c in node.children:
            t = _first_token(c)
            if t is not None:
                return t
    return None


def _where(node):
    """Where a token or a subtree starts (for a list: its '[')."""
    if isinstance(node, Token):
        return node
    meta = getattr(node, "meta", None)
    if meta is not None and not getattr(meta, "empty", True):
        return _Pos(meta.line, meta.column)
    return _first_token(node) or _Pos(1, 1)


def _a(kind: str) -> str:
    return f"an {kind}" if kind in ("MPC", "HE") else f"a {kind}"


def _int(where, tok) -> int:
    text = str(tok)
    if len(text.lstrip("-")) > 18:
        raise _fail_at(where, f"number {text[:12]}... is too large")
    return int(text)


def _describe_value(v) -> str:
    if isinstance(v, Tree):
        if v.data == "int":
            return f"number {v.children[0]}"
        if v.data == "list":
            return "a list"
        if v.data == "string":
            return f"string {v.children[0]}"
        if v.data == "ref":
            return f"'{v.children[0]}'"
    return "this value"


class _Builder:
    def __init__(self, tree: Tree):
        self.tree = tree

    # ---- references -----------------------------------------------------
    def ref(self, node: Tree, what: str) -> _Ref:
        """A ref from a bare ``ref`` tree or a quoted ``string`` tree."""
        if node.data == "ref":
            return self._ref_tree(node, 0, 0, node.children[0])
        if node.data == "string":
            tok = node.children[0]
            raw = tok.value[1:-1]
            if not raw.strip():
                raise _fail_at(tok, f"empty {what}")
            if "\\" in raw:
                raise _fail_at(tok, f"{what} {tok.value} must not contain backslashes")
            try:
                sub = _parse_ref_text(raw)
            except _Fail as f:  # pragma: no cover - no line breaks in a string
                raise _Fail(tok.line, tok.column + f.col, f.msg) from None
            except UnexpectedInput as e:
                f = _syntax_error(e, in_string=True)
                col = tok.column + f.col if f.line == 1 else tok.column
                if isinstance(e, UnexpectedToken) and e.token.type == "$END":
                    col = tok.column + len(tok.value) - 1
                raise _Fail(tok.line, col, f"in {what} {tok.value}: {f.msg}") from None
            except LarkError:  # pragma: no cover - defensive
                raise _fail_at(tok, f"bad {what} {tok.value}") from None
            return self._ref_tree(sub, tok.line, tok.column, tok)
        raise _fail_at(_where(node), f"expected a {what}, got {_describe_value(node)}")

    def _ref_tree(self, node: Tree, line0: int, col0: int, anchor) -> _Ref:
        def pos(t):
            if line0:  # inside a quoted string starting at (line0, col0)
                return _Pos(line0, col0 + t.column)
            return t

        name_tok = node.children[0]
        r = _Ref(str(name_tok), anchor)
        idx = node.children[1] if len(node.children) > 1 else None
        if idx is None:
            return r
        if idx.data == "at":
            r.index = _int(pos(idx.children[0]), idx.children[0])
            if r.index < 0:
                raise _fail_at(pos(idx.children[0]), f"index {r.index} of '{r.name}' must not be negative")
        elif idx.data == "var":
            r.var, r.var_tok = str(idx.children[0]), pos(idx.children[0])
        else:  # family
            var, a, b = idx.children
            r.var, r.var_tok = str(var), pos(var)
            if b is None:
                a, b = None, a
            lo = _int(pos(a), a) if a is not None else 0
            hi = _int(pos(b), b)
            at = pos(a if a is not None else b)
            if lo < 0:
                raise _fail_at(at, f"bad range({lo},{hi}): the start must not be negative")
            if lo >= hi:
                raise _fail_at(at, f"bad range({lo},{hi}): empty, the start must be less than the end")
            if hi - lo > MAX_FAMILY:
                raise _fail_at(at, f"bad range({lo},{hi}): a family may have at most {MAX_FAMILY} members")
            r.lo, r.hi = lo, hi
        return r

    # ---- the whole config -------------------------------------------------
    def build(self, source):
        top: dict[str, Tree] = {}
        for item in self.tree.children:
            if not isinstance(item, Tree):
                continue
            key = item.children[0]
            if key in top:
                first = top[key].children[0]
                raise _fail_at(key, f"duplicate top-level key '{key}' (first at {first.line}:{first.column})")
            if key not in ("domain", "device"):
                raise _fail_at(key, f"unknown top-level key '{key}' (expected 'domain' or 'device')")
            if key == "domain" and item.data != "top_value":
                raise _fail_at(key, "'domain' takes the list of parties on the same line, "
                                    'e.g. domain: ["alice", "bob"]')
            if key == "device" and item.data != "top_block":
                raise _fail_at(_where(item.children[1]),
                               "'device' takes an indented list of '- name:' entries on the following lines")
            top[key] = item
        if not top:
            raise _Fail(1, 1, "empty device config: expected 'domain:' and 'device:'")
        if "domain" not in top:
            raise _Fail(1, 1, "missing top-level 'domain:' (the list of parties, "
                              'e.g. domain: ["alice", "bob"])')
        parties, _ = self.parties(top["domain"].children[1])
        if "device" not in top:
            k = top["domain"].children[0]
            raise _fail_at(k, "no devices: add a 'device:' section listing them")
        self.parties_list = parties
        self.party_set = set(parties)
        devices: dict[str, Device] = {}
        where: dict[str, Any] = {}
        for entry in top["device"].children[1].children:
            for dev, tok in self.entry(entry):
                if dev.name in devices:
                    f = where[dev.name]
                    raise _fail_at(tok, f"duplicate device '{dev.name}' (first defined at {f.line}:{f.column})")
                devices[dev.name] = dev
                where[dev.name] = tok
        return Cluster(parties, devices.values(), source=source)

    def parties(self, value: Tree):
        items = value.children if value.data == "list" else [value]
        items = [x for x in items if x is not None]
        if not items:
            raise _fail_at(_where(value), "'domain' lists no parties")
        parties: list[str] = []
        seen: dict[str, Any] = {}
        for it in items:
            if isinstance(it, Tree) and it.data == "list":
                raise _fail_at(_where(it), "a party must be a name, not a nested list")
            r = self.ref(it, "party name")
            if r.var is not None and not r.is_family:
                raise _fail_at(r.var_tok, f"family variable '{r.var}' is not bound here: declare the family "
                                          f"as \"{r.name}[{r.var}, range(0,N)]\"")
            names = ([f"{r.name}[{i}]" for i in range(r.lo, r.hi)] if r.is_family
                     else [r.text()])
            for n in names:
                if n in seen:
                    f = seen[n]
                    raise _fail_at(r.tok, f"duplicate party '{n}' (already listed at {f.line}:{f.column})")
                seen[n] = r.tok
                parties.append(n)
        return parties, seen

    def _known_parties(self) -> str:
        ps = self.parties_list
        return ", ".join(ps[:12]) + (", ..." if len(ps) > 12 else "")

    def entry(self, entry: Tree):
        key_node, *props = entry.children
        name_tok = key_node.children[0]
        key = self._ref_tree(key_node, 0, 0, name_tok)
        if key.var is not None and not key.is_family:
            raise _fail_at(key.var_tok, f"family variable '{key.var}' needs a range: "
                                        f"write {key.name}[{key.var}, range(0,N)]")
        label = key.text()

        fields: dict[str, tuple[Token, Tree]] = {}
        for p in props:
            k, v = p.children
            if str(k) in fields:
                first = fields[str(k)][0]
                raise _fail_at(k, f"duplicate key '{k}' in device '{label}' (first at {first.line}:{first.column})")
            fields[str(k)] = (k, v)

        if "type" not in fields:
            raise _fail_at(name_tok, f"device '{label}' has no 'type' (one of {', '.join(DEVICE_KINDS)})")
        ttok, tval = fields["type"]
        kind = self.kind(tval)
        allowed = ("type", "domain") + OPTIONS[kind]
        for k, (ktok, _) in fields.items():
            if k not in allowed:
                raise _fail_at(ktok, f"unknown option '{k}' for {_a(kind)} device "
                                     f"(allowed: {', '.join(allowed)})")
        if "domain" not in fields:
            raise _fail_at(name_tok, f"device '{label}' has no 'domain' (the part{'ies' if kind in ('MPC', 'HE') else 'y'} it runs at)")
        if kind == "HE" and "key_owner" not in fields:
            raise _fail_at(name_tok, f"HE device '{label}' needs 'key_owner' (the party holding the secret key)")

        bindings = [(None, None)] if not key.is_family else [(key.var, i) for i in range(key.lo, key.hi)]
        out = []
        for var, i in bindings:
            name = key.name if var is None else f"{key.name}[{i}]"
            if var is None and key.index is not None:
                name = key.text()
            dtok, dval = fields["domain"]
            parties = self.domain(dval, kind, key, var, i, name)
            opts = self.options(kind, fields, key, var, i, name, parties)
            out.append((Device(name, kind, tuple(parties), tuple(opts)), name_tok))
        return out

    def kind(self, tval: Tree) -> str:
        if isinstance(tval, Tree) and tval.data in ("ref", "string"):
            r = self.ref(tval, "device type")
            word = r.text()
            if word.upper() in DEVICE_KINDS and r.index is None and r.var is None:
                return word.upper()
            raise _fail_at(r.tok, f"unknown device type '{word}' (valid: {', '.join(DEVICE_KINDS)})")
        shown = "a list" if tval.data == "list" else str(_first_token(tval))
        raise _fail_at(_where(tval),
                       f"unknown device type {shown} (valid: {', '.join(DEVICE_KINDS)})")

    def resolve(self, r: _Ref, key: _Ref, var, i) -> list[str]:
        """Party names a reference in a device's fields stands for."""
        if r.is_family:
            return [f"{r.name}[{j}]" for j in range(r.lo, r.hi)]
        if r.var is not None:
            if var is None:
                raise _fail_at(r.var_tok, f"unbound family variable '{r.var}': device '{key.text()}' "
                                          f"is not a family (write {key.name}[{r.var}, range(0,N)])")
            if r.var != var:
                raise _fail_at(r.var_tok, f"unbound family variable '{r.var}' (device '{key.text()}' "
                                          f"binds '{var}')")
            return [f"{r.name}[{i}]"]
        return [r.text()]

    def party_names(self, r: _Ref, key: _Ref, var, i, name) -> list[str]:
        names = self.resolve(r, key, var, i)
        for n in names:
            if n not in self.party_set:
                ctx = f" in the domain of {name}" if (var is not None or r.is_family) and n != r.text() else ""
                raise _fail_at(r.tok, f"unknown party '{n}'{ctx} (parties: {self._known_parties()})")
        return names

    def domain(self, dval: Tree, kind: str, key: _Ref, var, i, name) -> list[str]:
        is_list = isinstance(dval, Tree) and dval.data == "list"
        items = [x for x in (dval.children if is_list else [dval]) if x is not None]
        where = _where(dval) if is_list else _where(dval)
        if is_list and not items:
            raise _fail_at(where, f"the domain of {kind} device '{name}' lists no parties")
        parties: list[str] = []
        for it in items:
            if isinstance(it, Tree) and it.data == "list":
                raise _fail_at(_where(it), "a party must be a name, not a nested list")
            r = self.ref(it, "party name")
            for n in self.party_names(r, key, var, i, name):
                if n in parties:
                    raise _fail_at(r.tok, f"party '{n}' appears twice in the domain of '{name}'")
                parties.append(n)
        n = len(parties)
        if kind == "PYU":
            if is_list:
                raise _fail_at(where, f"a PYU device runs at exactly one party: write domain: "
                                      f"\"{parties[0]}\", not a list" if n == 1 else
                               f"a PYU device runs at exactly one party, but this domain names {n}")
            if n != 1:
                raise _fail_at(where, f"a PYU device runs at exactly one party, but this domain names {n}")
        elif kind == "TEE":
            if n != 1:
                raise _fail_at(where, f"a TEE device is exactly one party, but this domain names {n}")
        elif kind == "MPC":
            if n < MPC_PARTIES[0]:
                raise _fail_at(where, f"an MPC device needs at least 2 parties, but this domain names {n}")
            if n > MPC_PARTIES[-1]:
                raise _fail_at(where, f"MPC over {n} parties is not supported (2 or 3)")
        elif kind == "HE":
            if n != 2:
                raise _fail_at(where, f"an HE device needs exactly 2 parties (the key owner and the "
                                      f"evaluator), but this domain names {n}")
        return parties

    def options(self, kind, fields, key, var, i, name, parties):
        opts: dict[str, Any] = {}
        if kind == "MPC":
            opts["offline"] = DEFAULT_OFFLINE
        if kind in ("MPC", "HE"):
            opts["fraction_bits"] = DEFAULT_FRACTION_BITS
        for k, (ktok, v) in fields.items():
            if k in ("type", "domain"):
                continue
            if k == "offline":
                word = None
                if isinstance(v, Tree) and v.data in ("ref", "string"):
                    r = self.ref(v, "offline mode")
                    word = r.text().lower() if r.index is None and r.var is None else None
                if word not in OFFLINE_MODES:
                    raise _fail_at(_where(v),
                                   f"offline must be 'dealer' or 'he', got {_describe_value(v)}")
                opts[k] = word
            elif k == "fraction_bits":
                lo, hi = FRACTION_BITS_RANGE[0], MAX_FRACTION_BITS[self.ring_option(fields)]
                if not (isinstance(v, Tree) and v.data == "int"):
                    raise _fail_at(_where(v),
                                   f"fraction_bits must be an integer in {lo}..{hi}, got {_describe_value(v)}")
                bits = _int(v.children[0], v.children[0])
                if not lo <= bits <= hi:
                    raise _fail_at(v.children[0], f"fraction_bits must be an integer in {lo}..{hi}, "
                                                  f"got {bits}{self.ring_note(fields, bits)}")
                opts[k] = bits
            elif k == "ring":
                if self.ring_option(fields) != DEFAULT_RING:  # the default is left out: equal configs
                    opts[k] = self.ring_option(fields)
            elif k == "key_owner":
                if isinstance(v, Tree) and v.data == "list":
                    raise _fail_at(_where(v), "key_owner must be one party, not a list")
                r = self.ref(v, "party name")
                owners = self.party_names(r, key, var, i, name)
                if len(owners) != 1 or owners[0] not in parties:
                    raise _fail_at(r.tok, f"key_owner '{owners[0] if len(owners) == 1 else r.text()}' is not "
                                          f"one of the parties of HE device '{name}' ({', '.join(parties)})")
                opts[k] = owners[0]
        return sorted(opts.items())

    def ring_option(self, fields):
        """The ``ring`` an MPC device's fields ask for (checked: 64 or 128)."""
        if "ring" not in fields:
            return DEFAULT_RING
        v = fields["ring"][1]
        bits = _int(v.children[0], v.children[0]) if isinstance(v, Tree) and v.data == "int" else None
        if bits not in RINGS:
            raise _fail_at(_where(v), f"ring must be 64 or 128, got {_describe_value(v)}")
        return bits

    def ring_note(self, fields, bits):
        """Why ``bits`` fraction bits are refused on a 64-bit ring when a 128-bit one takes them."""
        ring = self.ring_option(fields)
        if ring == 64 and bits <= MAX_FRACTION_BITS[128]:
            return " (up to 48 with ring: 128)"
        return f" (on a {ring}-bit ring)" if ring != DEFAULT_RING else ""
