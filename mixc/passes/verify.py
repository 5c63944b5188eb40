"""Verify: the module is well typed, well placed, and leaks nothing unrevealed.

Checked, for every node: the op exists and its operand count, attributes and
result dtypes/shapes agree with its declaration's type rule. Global IR
(values on devices): every kind suits its device; once transfers are in
(``module.stage`` past ``place``), every op reads only values on its own
device, except ``to``/``reveal``, so a secret reaches a PYU only through
``reveal`` and one PYU's plaintext reaches another only through ``to``; a chosen protocol's rule exists and
produced the result kinds. Lowered IR (values at parties): every op reads
only its own party's values; plaintext crosses to another party only as an
explicit ``to`` or a revealed/public value; ``send``/``recv`` pair up.
"""
from ..errors import VerifyError
from ..ir.ops import infer
from ..protocols import rule

DEVICE_KINDS = {"PYU": {"plain"}, "MPC": {"public", "arith", "bool"}, "HE": {"he"},
                "TEE": {"plain"}}
PLAINTEXT_DISCLOSURES = ("plaintext (explicit to)", "public value")


def _fail(node, message):
    where = f"{node.loc}: " if node.loc else ""
    raise VerifyError(f"{where}{node.op}: {message}")


def _check_types(node):
    if node.op == "call":
        expected = [(d, tuple(s)) for d, s in node.attrs.get("result_types", ())]
    else:
        try:
            expected = infer(node.op, [v.type for v in node.operands], node.attrs)
        except VerifyError as e:
            _fail(node, str(e))
    got = [(r.type.dtype, tuple(r.type.shape)) for r in node.results]
    # Lowered shares are ring words whatever the logical dtype was.
    if len(got) != len(expected) or any(
            g != e and not (g[0] == "u64" or e[0] == "u64") or g[1] != e[1]
            for g, e in zip(got, expected)):
        _fail(node, f"results {got} do not match the type rule's {expected}")


def _is_lowered(module):
    places = {r.type.place for n in module.nodes for r in n.results}
    return bool(places) and places <= set(module.parties) and not places & set(module.devices)


def _verify_global(module):
    # Before insert_transfers, ops may still read other devices' values.
    transfers_in = module.stage not in ("trace", "place")
    defined = set()
    for node in module.nodes:
        for v in node.operands:
            if v not in defined:
                _fail(node, f"reads %{v.id} before it is defined")
        _check_types(node)
        for r in node.results:
            device = module.devices.get(r.type.place)
            if device is None:
                _fail(node, f"%{r.id} is on unknown device {r.type.place!r}")
            if r.type.kind not in DEVICE_KINDS[device.kind]:
                _fail(node, f"%{r.id} of kind {r.type.kind} cannot live on {device.kind} {device.name}")
            defined.add(r)
        if not node.results:
            continue
        dest = module.devices[node.results[0].type.place]
        for v in node.operands:
            src = module.devices[v.type.place]
            if src.name == dest.name:
                continue
            if node.op == "reveal" or (node.op == "to" and dest.kind != "PYU"):
                continue
            if node.op == "to" and node.attrs.get("explicit") and src.kind == "PYU":
                continue
            if transfers_in:
                _fail(node, f"{dest.name} reads %{v.id}, which lives on {src.name}, with no "
                            "transfer (reveal or explicit to)")
        if "protocol" in node.attrs:
            try:
                r = rule(node.attrs["protocol"], node.op)
            except KeyError as e:
                _fail(node, str(e))
            for res in node.results:
                if res.type.kind != r.result_kind:
                    _fail(node, f"%{res.id} has kind {res.type.kind}, protocol {r.protocol} makes "
                                f"{r.result_kind}")


def _verify_lowered(module):
    defined, seen = set(), set()
    sends, recvs = {}, {}
    for node in module.nodes:
        _check_types(node)
        party = (node.operands[0].type.place if node.op in ("send", "output", "xfer")
                 else node.results[0].type.place)
        seen.add(party)
        for v in node.operands:
            if v not in defined:
                _fail(node, f"reads %{v.id} before it is defined")
            if v.type.place != party:
                _fail(node, f"{party} reads %{v.id}, which lives at {v.type.place}")
        if node.op in ("xfer", "send"):
            (v,) = node.operands
            dst = node.result.type.place if node.op == "xfer" else node.attrs["to"]
            if v.type.kind in ("plain", "public") and node.attrs["what"] not in PLAINTEXT_DISCLOSURES:
                _fail(node, f"{party}'s plaintext %{v.id} would reach {dst} "
                            f"(sent as {node.attrs['what']!r}) without reveal")
            if node.op == "send":
                sends[(party, dst, node.attrs["tag"])] = node
        if node.op == "recv":
            recvs[(node.attrs["from"], party, node.attrs["tag"])] = node
        defined.update(node.results)
    # A single party's program pairs with its peers' programs, not with itself.
    if len(seen) > 1 and set(sends) != set(recvs):
        missing = sorted(set(sends) ^ set(recvs))[0]
        raise VerifyError(f"send/recv do not pair up: (from, to, tag) = {missing}")


def run(module):
    if _is_lowered(module):
        _verify_lowered(module)
    else:
        _verify_global(module)
    return module
