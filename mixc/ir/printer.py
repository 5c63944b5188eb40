"""The textual IR: one op per line, deterministic, reads like the math.

    module "lr"
    parties "alice", "bob", "dealer"
    device p1 = PYU("alice")
    device mpc = MPC("alice", "bob") {fraction_bits=18, offline="dealer"}
    %0: f32[4,2]@p1 = input() {dtype="f32", name="x1", shape=(4, 2)}
    %3: f32[4,4]@mpc:arith = concatenate(%1, %2) {dimension=1, protocol="arith2pc"} loc("lr.py:8")
    output(%9) {name="w"}

A loop's body prints indented under it (see ``print_node``).

A type is ``dtype[shape]@place:kind`` (``:plain`` is left out). Attributes
are sorted by name. Arrays print as ``array<dtype[shape]>"base64 of the
little-endian bytes"``. ``grammars/ir.lark`` is the grammar of this text.
"""
from __future__ import annotations

import base64
import json
import re

import numpy as np

from .ops import dtype_name

_BARE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


def print_name(name: str) -> str:
    """Device and party names print bare when they are identifiers, else quoted."""
    return name if _BARE.match(name) else json.dumps(name)


# A large program has 10^5 values of a few hundred distinct types and repeats the same
# attribute strings: their texts are made once (bounded, so a long-lived process
# printing many programs does not grow without end).
_CACHE_LIMIT = 1 << 16
_type_texts = {}
_string_texts = {}


def print_type(t) -> str:
    try:
        return _type_texts[t]
    except KeyError:
        pass
    except TypeError:  # an unhashable shape (a list): printed, not remembered
        return _type_text(t)
    text = _type_text(t)
    if len(_type_texts) >= _CACHE_LIMIT:
        _type_texts.clear()
    _type_texts[t] = text
    return text


def _type_text(t) -> str:
    kind = "" if t.kind == "plain" else f":{t.kind}"
    return f"{t.dtype}[{','.join(map(str, t.shape))}]@{print_name(t.place)}{kind}"


def _string(v) -> str:
    text = _string_texts.get(v)
    if text is None:
        text = json.dumps(v)
        if len(_string_texts) >= _CACHE_LIMIT:
            _string_texts.clear()
        _string_texts[v] = text
    return text


def print_attr(v) -> str:
    kind = type(v)  # the common exact types first; subclasses take the general path
    if kind is int:
        return str(v)
    if kind is str:
        return _string(v)
    if isinstance(v, bool) or isinstance(v, np.bool_):
        return "true" if v else "false"
    if v is None:
        return "none"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, np.ndarray):
        data = np.ascontiguousarray(v).astype(v.dtype.newbyteorder("<"), copy=False).tobytes()
        shape = ",".join(map(str, v.shape))
        return f'array<{dtype_name(v.dtype)}[{shape}]>"{base64.b64encode(data).decode()}"'
    if kind is tuple and all(type(x) is int for x in v):  # a shape: the commonest tuple
        return "(" + ", ".join(map(str, v)) + ("," if len(v) == 1 else "") + ")"
    if isinstance(v, (tuple, list)):
        items = [print_attr(x) for x in v]
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    raise TypeError(f"cannot print attribute value {v!r}")


def print_attrs(attrs: dict) -> str:
    if not attrs:
        return ""
    if len(attrs) == 1:  # most lowered ops carry one attribute: nothing to sort
        (k, v), = attrs.items()
        return f" {{{k}={print_attr(v)}}}"
    return " {" + ", ".join([f"{k}={print_attr(attrs[k])}" for k in sorted(attrs)]) + "}"


def _typed(values) -> str:
    if len(values) == 1:  # most nodes: one result
        v = values[0]
        return f"%{v.id}: {print_type(v.type)}"
    return ", ".join([f"%{v.id}: {print_type(v.type)}" for v in values])


def print_node(n, indent="") -> str:
    """One node's text; a node with a body prints it indented, between ``{`` and ``}``:

        %7: f32[2]@mpc:arith = loop(%3, %5) {captures=1, trip_count=100} {
          ^(%8: f32[2,2]@mpc:arith, %9: f32[2]@mpc:arith)
          %10: f32[2]@mpc:arith = add(%9, %8)
          yield(%10)
        }
    """
    lhs = _typed(n.results)
    rhs = f"{n.op}({', '.join([f'%{v.id}' for v in n.operands])}){print_attrs(n.attrs)}"
    loc = f" loc({_string(n.loc)})" if n.loc else ""
    line = indent + (f"{lhs} = {rhs}" if lhs else rhs) + loc
    if n.body is None:
        return line
    inner = indent + "  "
    lines = [line + " {", f"{inner}^({_typed(n.body.args)})"]
    lines += [print_node(m, inner) for m in n.body.nodes]
    lines.append(indent + "}")
    return "\n".join(lines)


def print_device(d) -> str:
    parties = ", ".join(json.dumps(p) for p in d.parties)
    return f"device {print_name(d.name)} = {d.kind}({parties}){print_attrs(dict(d.options))}"


def print_module(m) -> str:
    lines = [f"module {json.dumps(m.name)}"]
    if m.parties:
        lines.append("parties " + ", ".join(json.dumps(p) for p in m.parties))
    lines += [print_device(d) for d in m.devices.values()]
    lines += [print_node(n) for n in m.nodes]
    return "\n".join(lines) + "\n"
