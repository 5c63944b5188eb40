"""Parse the textual IR (``grammars/ir.lark``) back into a ``Module``.

    m = parse_module(text, filename="alice.mir")
    assert parse_module(print_module(m)) == m

Values keep their printed ids (``module.next_id`` is one past the largest),
nodes keep their order (a loop's body, ``{`` ... ``}`` indented under it,
comes back as its ``Node.body``: a ``Block`` of its ``^(...)`` arguments and
its nodes), attributes come back as Python values (int, float, str, bool,
None, tuples -- never lists -- and numpy arrays), devices as
``mixc.config.Device``.

Every problem is a one-line ``ParseError`` with ``line:col`` (prefixed with
the file name when one is given): syntax errors say what was found and what
was expected in words, and the parser also rejects a use of an undefined
value, a value defined twice, an unknown op (suggesting close names), an
unknown dtype or value kind, and an array whose base64 is malformed or holds
the wrong number of bytes. Scoping follows the text: a body sees the values
of the blocks around it; its own (arguments and results) go out of scope at
its ``}``; the results of the node that owns it are defined after the ``}``;
and an id is defined once in the whole module, across sibling bodies too
(which outer values a body may read is the verifier's call). Whether the
program makes sense (operand counts, attributes, types, placement) is the
verifier's job, not the parser's.

Speed: ``mixc run`` parses per-party programs of ~10k lines with multi-MB
arrays. The grammar is LALR with the contextual lexer; the callbacks are
passed to the Lark constructor, so no parse tree is built; the Lark object
is built once per process and shared by threads (per-parse state is
thread-local). Time goes per token, so the grammar lexes the most frequent
pieces (a whole type, ``%3:``, ``name=``, ``op(%1, %2)``, a flat int tuple,
``loc(...)``, an attribute block without arrays or floats) as one token each, with a token-by-token path beside it for
anything else (see the top of ``grammars/ir.lark``); types and int tuples
are converted once per distinct text. A 10k-line per-party program with a
2 MiB array parses in about 0.6 s.
"""
from __future__ import annotations

import base64
import binascii
import difflib
import functools
import json
import math
import re
import threading

import numpy as np
from lark import Lark, Token
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken
from lark.parsers.lalr_analysis import Shift

from ..errors import ParseError
from .core import DTYPES, KINDS, Block, Module, Node, TensorType, Value
from .ops import NUMPY_DTYPES, OPS

__all__ = ["parse_module", "ParseError"]


# ------------------------------------------------------------------ errors

# What each terminal is, in words, for "expected ..." messages.
_WORDS = {
    "VALUE_ID": "a '%N' value",
    "RESULT": "a '%N' value",
    "DIM": "a dimension size",
    "INT": "a number",
    "FLOAT": "a number",
    "STRING": "a string",
    "B64": "a quoted base64 string",
    "TYPE": "a type like f32[2,3]@p1",
    "DTYPE": "a type like f32[2,3]@p1",
    "KIND": "a value kind (" + ", ".join(KINDS) + ")",
    "PLACE": "a place (device or party name)",
    "QPLACE": "a place (device or party name)",
    "LOC": "'loc'",
    "CALL": "an op name",
    "_COMMA": "','",
    "_ASSIGN": "'='",
    "_LBRACE": "'{'",
    "ATTRS": "'{'",
    "_LBODY": "'{'",
    "_CARET": "a line '^(...)' with the body's arguments",
    "ARRAY_DTYPE": "a dtype like f32",
    "OPNAME": "an op name",
    "ATTR": "an attribute name",
    "ATTR_EQ": "an attribute name",
    "DEVICE": "a device name",
    "DEVICE_KW": "'device'",
    "PARTIES": "'parties'",
    "QDEVICE": "a device name",
    "DEVICE_KIND": "a device kind like PYU or MPC",
    "_NL": "end of line",
    "$END": "end of input",
}
# The tokens that can start an attribute value; when all are expected the
# message says "an attribute value" instead of listing eight of them.
_RBRACE = "RBRACE"  # lark's name for "}" (closes attribute blocks and bodies)
_VALUE_STARTERS = {"INT", "FLOAT", "STRING", "TRUE", "FALSE", "NONE", "LPAR", "INTS", "ARRAY"}


def _expected_words(names, terminals) -> str:
    names = set(names or ())
    words = []
    if _VALUE_STARTERS <= names:
        names -= _VALUE_STARTERS
        words.append("an attribute value (number, string, true/false/none, tuple or array)")
    for name in sorted(names):
        if name in _WORDS:
            w = _WORDS[name]
        elif name in terminals and terminals[name].pattern.type == "str":
            w = f"'{terminals[name].pattern.value}'"
        else:
            w = name
        if w not in words:
            words.append(w)
    if not words:
        return "nothing"
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _found(token) -> str:
    if token.type == "$END":
        return "end of input"
    if token.type == "_NL":
        return "end of line"
    text = str(token).strip(" \t")
    if token.type in ("ATTR_EQ", "RESULT"):  # "p2 =", "%3:" -> the name alone
        text = text.rstrip("=: \t")
    if token.type == "ATTRS":  # a whole attribute block where none may be: its brace
        text = "{"
    if len(text) > 30:
        text = text[:27] + "..."
    return repr(text) if "'" in text else f"'{text}'"


def _acceptable(e: UnexpectedInput, names):
    """The terminals of ``names`` the parser really accepts where it stopped.

    An LALR state's lookahead set is merged across contexts (after the ``1``
    in ``{x=1`` the state also lists ``')'``, which is only right inside a
    tuple), so replay each candidate on a copy of the state stack, following
    reductions, and keep the ones that end in a shift.
    """
    ps = getattr(getattr(e, "interactive_parser", None), "parser_state", None)
    if ps is None or not names:
        return names
    try:
        return _replay(ps, names) or names
    except (KeyError, IndexError):  # pragma: no cover - a table lark would not build
        return names


def _replay(ps, names):
    states, end_state = ps.parse_conf.states, ps.parse_conf.end_state
    ok = set()
    for term in names:
        stack = list(ps.state_stack)
        while True:
            act = states[stack[-1]].get(term)
            if act is None:
                break
            action, arg = act
            if action is Shift:
                ok.add(term)
                break
            if arg.expansion:
                del stack[-len(arg.expansion):]
            stack.append(states[stack[-1]][arg.origin.name][1])
            if stack[-1] == end_state:
                ok.add(term)
                break
    return ok


def _syntax_error(e: UnexpectedInput, terminals, st=None) -> ParseError:
    """Lark's exception as one line: what was found, what was expected, in words.

    ``st`` (the parse's state) knows the open bodies: the end of the input
    inside one, or a "}" outside any, says so.
    """
    if isinstance(e, UnexpectedToken):
        tok = e.token
        line, col = tok.line, tok.column
        if tok.type == "$END" or line is None:
            line, col = e.line, e.column
        elif tok.type != "_NL":  # tokens that swallow blanks (_ASSIGN, LOC): point past them
            col += len(tok) - len(tok.lstrip(" \t"))
        found = _found(tok)
        names = _acceptable(e, e.expected)
    elif isinstance(e, UnexpectedCharacters):
        line, col = e.line, e.column
        if e.char == '"':  # even the root lexer's STRING did not match
            return ParseError("unterminated string: no closing '\"' on this line", line, col)
        found = f"character {e.char!r}"
        names = _acceptable(e, e.allowed)
    else:  # UnexpectedEOF: not raised by LALR, which feeds $END as a token
        line, col = getattr(e, "line", None), getattr(e, "column", None)
        found = "end of input"
        names = _acceptable(e, getattr(e, "expected", ()))
    if line is None or line < 0:
        line = col = None
    if st is not None and isinstance(e, UnexpectedToken):
        if st.open and e.token.type == "$END" and _RBRACE in names:
            node, opened = st.open[-1][0], st.open[-1][-1]
            return ParseError(f"unexpected end of input; expected '}}' closing the body of "
                              f"'{node.op}' opened on line {opened}", line, col)
        if not st.open and e.token.type == _RBRACE and "OPNAME" in names:  # at a line's start
            return ParseError("unexpected '}': no body is open here", line, col)
    return ParseError(f"unexpected {found}; expected {_expected_words(names, terminals)}",
                      line, col)


def _at(tok, message) -> ParseError:
    return ParseError(message, tok.line, tok.column)


def _close(word, choices) -> str:
    near = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.6)
    return f" (did you mean {', '.join(repr(n) for n in near)}?)" if near else ""


# ------------------------------------------------------------- conversions

def _string(tok, text=None) -> str:
    """The Python string of a JSON string (``text``, default the token's own)."""
    if text is None:
        text = tok
    if "\\" not in text:
        return text[1:-1]
    try:
        return json.loads(text, strict=False)
    except ValueError as e:
        pos = getattr(e, "pos", 0) or 0
        raise ParseError(f"bad escape in string: {getattr(e, 'msg', e)}",
                         tok.line, tok.column + pos) from None


def _name(tok) -> str:
    """A bare identifier or a quoted name (devices)."""
    return _string(tok) if tok[:1] == '"' else str(tok)


def _int(tok, text=None) -> int:
    try:
        return int(tok if text is None else text)
    except ValueError:
        raise _at(tok, "integer has too many digits") from None


def _dtype(tok) -> str:
    if tok not in NUMPY_DTYPES:
        raise _at(tok, f"unknown dtype {str(tok)!r}{_close(tok, DTYPES)}; "
                       f"dtypes are {', '.join(DTYPES)}")
    return str(tok)


def _kind(tok) -> str:
    if tok is None:
        return "plain"
    if tok not in KINDS:
        raise _at(tok, f"unknown value kind {str(tok)!r}{_close(tok, KINDS)}; "
                       f"kinds are {', '.join(KINDS)}")
    return str(tok)


_LE = {name: np.dtype(t).newbyteorder("<") for name, t in NUMPY_DTYPES.items()}
_NATIVE = {name: np.dtype(t) for name, t in NUMPY_DTYPES.items()}


def _array(dtype_tok, shape, data_tok) -> np.ndarray:
    dtype = _dtype(dtype_tok)
    try:
        data = base64.b64decode(data_tok[1:-1], validate=True)
    except (binascii.Error, ValueError) as e:
        raise _at(data_tok, f"malformed base64 in array<{dtype}>: {e}") from None
    le = _LE[dtype]
    want = math.prod(shape) * le.itemsize
    if len(data) != want:
        shape_text = ",".join(map(str, shape))
        raise _at(data_tok, f"array<{dtype}[{shape_text}]> needs {want} bytes, "
                            f"the base64 holds {len(data)}")
    a = np.frombuffer(bytearray(data), dtype=le)
    if dtype == "bool" and a.size and (a.view(np.uint8) > 1).any():
        raise _at(data_tok, "array<bool> holds bytes other than 0 and 1")
    return a.astype(_NATIVE[dtype], copy=False).reshape(shape)


# ------------------------------------------------------------------- types

_TYPE_PARTS = re.compile(r'([A-Za-z_][A-Za-z0-9_.]*)[ \t]*\[([^\]]*)\][ \t]*@[ \t]*'
                         r'([A-Za-z_][A-Za-z0-9_.]*|"[^"\\\n]*(?:\\.[^"\\\n]*)*")'
                         r'(?:[ \t]*:[ \t]*([A-Za-z_][A-Za-z0-9_.]*))?')


def _shifted(tok, offset, text=None, type=None):
    """Part of a token (default all of it) at ``offset`` characters to its right."""
    return Token(type or tok.type, tok if text is None else text,
                 line=tok.line, column=tok.column + offset)


_VALUE_ID = re.compile(r"%([0-9]+)")
_OP_TOKENS = frozenset(("OPNAME", "CALL"))


def _parse_type(tok) -> TensorType:
    """The TensorType of a one-token TYPE, with errors at the offending part."""
    m = _TYPE_PARTS.fullmatch(tok)

    def part(i):
        return None if m.group(i) is None else _shifted(tok, m.start(i), m.group(i))

    dtype = _dtype(part(1))
    dims = m.group(2).strip()
    shape = tuple(_int(part(2), d) for d in dims.split(",")) if dims else ()
    place = _name(part(3))
    return TensorType(dtype, shape, place, _kind(part(4)))


# ------------------------------------------------------------ transformer

def _true(tok):
    return True


def _false(tok):
    return False


def _none(tok):
    return None


@functools.lru_cache(maxsize=4096)
def _ints_of(text):
    return tuple(int(x) for x in text[1:-1].split(",") if x and not x.isspace())


def _ints(tok):
    """A flat tuple of ints lexed as one INTS token: (1,) (1, 2) (). Shapes repeat: cached."""
    try:
        return _ints_of(str(tok))
    except ValueError:
        raise _at(tok, "integer has too many digits") from None


class _Misplaced(Exception):
    """A problem at a character offset inside a one-token attribute block."""

    def __init__(self, offset, message):
        super().__init__(message)
        self.offset, self.message = offset, message


_BLOCK_PIECES = re.compile(r'([A-Za-z_][A-Za-z0-9_.]*)[ \t]*=|"[^"\\\n]*(?:\\.[^"\\\n]*)*"'
                           r"|[+-]?[0-9]+|true|false|none|[()]")
_KEYWORDS = {"true": True, "false": False, "none": None}


@functools.lru_cache(maxsize=4096)
def _block_items(text):
    """The (name, value) pairs of a one-token attribute block (blocks repeat: cached)."""
    items, keys, open_tuples, key = [], set(), [], None
    for m in _BLOCK_PIECES.finditer(text):
        piece = m.group()
        if m.group(1) is not None:
            key = m.group(1)
            if key in keys:
                raise _Misplaced(m.start(), f"attribute {key!r} is given twice")
            keys.add(key)
            continue
        if piece == "(":
            open_tuples.append([])
            continue
        if piece == ")":
            value = tuple(open_tuples.pop())
        elif piece in _KEYWORDS:
            value = _KEYWORDS[piece]
        elif piece[0] == '"':
            try:
                value = json.loads(piece, strict=False) if "\\" in piece else piece[1:-1]
            except ValueError as e:
                raise _Misplaced(m.start() + (getattr(e, "pos", 0) or 0),
                                 f"bad escape in string: {getattr(e, 'msg', e)}") from None
        else:
            try:
                value = int(piece)
            except ValueError:
                raise _Misplaced(m.start(), "integer has too many digits") from None
        if open_tuples:
            open_tuples[-1].append(value)
        else:
            items.append((key, value))
    return tuple(items)


def _block_attrs(tok):
    """An attribute block lexed as one ATTRS token, as a fresh dict."""
    try:
        return dict(_block_items(str(tok)))
    except _Misplaced as e:
        raise _at(_shifted(tok, e.offset), e.message) from None


_SCALARS = {"INT": lambda t: _int(t), "FLOAT": float, "STRING": lambda t: _string(t),
            "TRUE": _true, "FALSE": _false, "NONE": _none, "INTS": _ints}


def _value(x):
    """An attribute value: tokens become Python scalars; tuples and arrays are built already."""
    return _SCALARS[x.type](x) if isinstance(x, Token) else x


class _State:
    """Per-parse state: values by id, and the header and nodes seen so far."""

    def __init__(self):
        self.values = {}  # value id -> Value, for the values in scope
        self.lines = {}   # value id -> line it was defined on, for every id so far
        self.types = {}   # type token text -> TensorType (types repeat a lot)
        self.top = []     # the module's nodes
        self.nodes = self.top  # where nodes go: the module's, or the open body's
        # The open bodies, innermost last: (node, the enclosing node list, the
        # enclosing scope, the line it opened on). ``scope`` lists the ids
        # defined in the innermost open body (None outside any), to drop from
        # ``values`` when it closes.
        self.open = []
        self.scope = None
        self.name = None
        self.parties = ()
        self.devices = {}
        self.parties_line = None


def _define(st, ch, k, end):
    """The values of the "(RESULT|VALUE_ID) (TYPE|TensorType)" pairs ``ch[k:end]``
    (``end`` None: up to the op), new: each id is checked against every id
    defined so far, in any block. The caller puts them in scope. Returns the
    values and the index after them."""
    lines, types = st.lines, st.types
    results = []
    while (ch[k].type not in _OP_TOKENS) if end is None else k < end:
        tok, t = ch[k], ch[k + 1]
        i = _int(tok, tok.rstrip(": \t")[1:])
        if i in lines or (results and any(i == r.id for r in results)):
            first = lines.get(i, tok.line)
            raise _at(tok, f"value %{i} is defined twice (first on line {first})")
        if type(t) is Token:
            tt = types.get(t)
            if tt is None:
                tt = types[str(t)] = _parse_type(t)
            t = tt
        results.append(Value(i, t))
        k += 2
    return results, k


def _node(st, ch):
    """The Node of a node line's children; its results are not in scope yet."""
    values = st.values
    results, k = _define(st, ch, 0, None)
    head = ch[k]
    args, attrs, loc = [], {}, None
    if head.type == "CALL":  # "op(%1, %2)" as one token
        paren = head.index("(")
        opname = head[:paren].rstrip()
        if opname not in OPS:
            raise _at(head, f"unknown op {opname!r}{_close(opname, OPS)}")
        for m in _VALUE_ID.finditer(head, paren):
            v = values.get(_int(head, m.group(1)))
            if v is None:
                raise _at(_shifted(head, m.start()), f"use of undefined value {m.group()}")
            args.append(v)
    else:
        opname = str(head)
        if opname not in OPS:
            raise _at(head, f"unknown op {opname!r}{_close(opname, OPS)}")
    for x in ch[k + 1:]:
        if type(x) is dict:
            attrs = x
        elif x.type == "VALUE_ID":
            v = values.get(_int(x, x[1:]))
            if v is None:
                raise _at(x, f"use of undefined value {x}")
            args.append(v)
        elif x.type == "LOC":
            q = x.index('"')
            loc = _string(_shifted(x, q), x[q:x.rindex('"') + 1])
        else:
            loc = _string(x)
    return Node(opname, tuple(args), tuple(results), attrs, loc)


class _Build:
    """The callbacks LALR runs as it reduces each rule, in text order.

    Each gets the rule's children as a list (anonymous tokens filtered out,
    ``_rules`` inlined). Nodes resolve their operands against the values
    defined so far, so semantic errors come in line order, interleaved
    correctly with syntax errors. The per-parse state lives in a
    thread-local, so one Lark object serves every thread.
    """

    def __init__(self):
        self._local = threading.local()

    # header
    def module_decl(self, ch):
        self._local.state.name = _string(ch[0])

    def parties_decl(self, ch):
        st = self._local.state
        if st.parties_line is not None:
            raise _at(ch[0], f"parties are already listed on line {st.parties_line}")
        if st.devices or st.top:
            raise _at(ch[0], "the parties line comes right after the module line")
        st.parties_line = ch[0].line
        parties = []
        for tok in ch[1:]:
            p = _string(tok)
            if p in parties:
                raise _at(tok, f"party {p!r} is listed twice")
            parties.append(p)
        st.parties = tuple(parties)

    def device_decl(self, ch):
        from ..config import DEVICE_KINDS, Device
        st = self._local.state
        if st.top:
            raise _at(ch[0], "device lines come before the first node")
        name, kind = ch[1], ch[2]
        dname = _name(name)
        if dname in st.devices:
            raise _at(name, f"device {dname!r} is declared twice")
        if kind not in DEVICE_KINDS:
            raise _at(kind, f"unknown device kind {str(kind)!r}{_close(kind, DEVICE_KINDS)}; "
                            f"kinds are {', '.join(DEVICE_KINDS)}")
        options, parties = {}, []
        for x in ch[3:]:
            if type(x) is dict:
                options = x
            else:
                parties.append(_string(x))
        st.devices[dname] = Device(dname, str(kind), tuple(parties),
                                   tuple(sorted(options.items())))

    # nodes: (RESULT|VALUE_ID) (TYPE|TensorType) ... (CALL | OPNAME VALUE_ID*) [attrs] [LOC|STRING]
    def node(self, ch):
        st = self._local.state
        n = _node(st, ch)
        if n.results:
            values, lines, line = st.values, st.lines, ch[0].line
            for v in n.results:
                values[v.id] = v
                lines[v.id] = line
            if st.scope is not None:
                st.scope.extend([v.id for v in n.results])
        st.nodes.append(n)

    # a node with a body: its line, then ^(args), the body's nodes, "}"
    def body_open(self, ch):
        """The line that opens a body: the node goes in now (its body fills in as
        the body's lines come), its results stay out of scope until the "}"."""
        st = self._local.state
        n = _node(st, ch)
        lines, line = st.lines, ch[0].line
        for v in n.results:  # reserved: no value in the body may reuse the id
            lines[v.id] = line
        n.body = Block(())
        st.nodes.append(n)
        st.open.append((n, st.nodes, st.scope, line))
        st.nodes, st.scope = n.body.nodes, []

    def block_args(self, ch):
        st = self._local.state
        args, _ = _define(st, ch, 0, len(ch))
        values, lines = st.values, st.lines
        for v in args:
            values[v.id] = v
            lines[v.id] = ch[0].line
            st.scope.append(v.id)
        st.open[-1][0].body.args = tuple(args)

    def body(self, ch):
        """The "}" closing a body: its values go out of scope, the node's results come in."""
        st = self._local.state
        n, st.nodes, outer, _ = st.open.pop()
        values = st.values
        for i in st.scope:
            del values[i]
        for v in n.results:
            values[v.id] = v
        if outer is not None:
            outer.extend([v.id for v in n.results])
        st.scope = outer

    def type(self, ch):
        """A type spelled token by token (when the one-token TYPE did not match)."""
        kind = None
        if ch[-1].type == "KIND":
            kind, ch = ch[-1], ch[:-1]
        dtype, dims, place = ch[0], ch[1:-1], ch[-1]
        return TensorType(_dtype(dtype), tuple(_int(x) for x in dims), _name(place), _kind(kind))

    # attributes
    def attrs(self, ch):
        if type(ch[0]) is Token and ch[0].type == "ATTRS":
            return _block_attrs(ch[0])
        out = {}
        for j in range(0, len(ch), 2):
            tok = ch[j]
            key = tok.rstrip("= \t") if tok.type == "ATTR_EQ" else str(tok)
            if key in out:
                raise _at(tok, f"attribute {key!r} is given twice")
            out[key] = _value(ch[j + 1])
        return out

    def tuple(self, ch):  # the rule's name; the body's `tuple` is the builtin
        return tuple(map(_value, ch))

    def array(self, ch):
        return _array(ch[0], tuple(_int(d) for d in ch[1:-1]), ch[-1])

    def start(self, ch):
        return None


_lock = threading.Lock()
_parser = None


def _get_parser():
    global _parser
    if _parser is None:
        with _lock:
            if _parser is None:
                from ..resources import grammar_text
                builder = _Build()
                lark = Lark(grammar_text("ir.lark"), parser="lalr", lexer="contextual",
                            transformer=builder, maybe_placeholders=False)
                terminals = {t.name: t for t in lark.terminals}
                _parser = (lark, builder, terminals)
    return _parser


# ------------------------------------------------------------------- entry

def parse_module(text: str, filename: str | None = None) -> Module:
    """Parse IR text into a ``Module``; raises ``ParseError`` on any problem."""
    lark, builder, terminals = _get_parser()
    if not text.endswith("\n"):
        text += "\n"
    st = _State()
    builder._local.state = st
    try:
        try:
            lark.parse(text)
        except UnexpectedInput as e:
            raise _syntax_error(e, terminals, st) from None
    except ParseError as e:
        if filename is None:
            raise
        raise ParseError(e.message, e.line, e.column, filename=filename) from None
    finally:
        builder._local.state = None
    m = Module(st.name, st.devices, st.parties, st.top)
    m.next_id = max(st.lines, default=-1) + 1
    return m
