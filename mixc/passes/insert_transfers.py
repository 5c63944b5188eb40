"""Insert transfers: every op reads only values on its own device.

Invariant established: for every node other than ``to``/``reveal``, each
operand lives on the node's device. A value used on another device gets one
``to`` node per (value, device): plaintext into an MPC device is secret
shared; a PYU's plaintext used on a TEE device is sent to the TEE party (the
party everyone trusts with plaintext; the audit lists each such transfer).
What would leak is refused here, naming the author's line: a secret (or a
TEE's value) used on a PYU without ``reveal``, one party's plaintext used on
another party's PYU without an explicit ``to``, and a ``to`` that would open
a value (out of an MPC or TEE device into plaintext) instead of ``reveal``.
"""
from ..errors import TraceError
from ..ir.core import Node


def _place(node):
    if node.results:
        return node.results[0].type.place
    return node.operands[0].type.place if node.operands else None


def _check_explicit_to(module, node):
    """``to`` may not open a value: out of a TEE or a secret device into plaintext is reveal's job."""
    src = module.devices[node.operands[0].type.place]
    dst = module.devices[node.results[0].type.place]
    if src.kind != "PYU" and dst.kind in ("PYU", "TEE") and src.name != dst.name:
        raise TraceError(f"{node.loc or node.op}: to() cannot move a value out of {src.kind} "
                         f"device {src.name} into {dst.name}; use reveal(value, {dst.name})")


def _moved(module, node, v, dest, moved, emit):
    """``v`` on device ``dest``: itself, or the result of a (cached) ``to``."""
    src = v.type.place
    if src == dest:
        return v
    key = (v, dest)
    if key not in moved:
        src_dev, dst_dev = module.devices[src], module.devices[dest]
        where = node.loc or node.op
        if dst_dev.kind == "PYU" and src_dev.kind != "PYU":
            raise TraceError(f"{where}: a secret value from {src} is used on {dest}; "
                             f"reveal(value, {dest}) first")
        if dst_dev.kind == "PYU":
            raise TraceError(f"{where}: plaintext of {src} ({', '.join(src_dev.parties)}) "
                             f"is used on {dest}; move it with an explicit to(value, {dest})")
        if dst_dev.kind == "TEE" and src_dev.kind == "MPC":
            raise TraceError(f"{where}: a secret value from {src} is used on TEE {dest}; "
                             f"reveal(value, {dest}) first")
        he_to_mpc = (src_dev.kind == "HE" and dst_dev.kind == "MPC"
                     and set(src_dev.parties) == set(dst_dev.parties))
        if he_to_mpc:  # ciphertexts become shares (protocols.he)
            pass
        elif src_dev.kind not in ("PYU", "TEE") or dst_dev.kind == src_dev.kind == "TEE":
            raise TraceError(f"{where}: moving values between {src_dev.kind} devices "
                             f"({src} to {dest}) is not supported yet")
        if dst_dev.kind == "HE" and (len(src_dev.parties) != 1
                                     or src_dev.parties[0] not in dst_dev.parties):
            raise TraceError(f"{where}: plaintext of {src} ({', '.join(src_dev.parties)}) "
                             f"is used on HE device {dest}; only its parties' "
                             f"({', '.join(dst_dev.parties)}) data can enter it")
        # into HE a party's plaintext stays its own until an op mixes it (protocols.he)
        kind = {"MPC": "arith", "HE": "private"}.get(dst_dev.kind, "plain")
        t = v.type.with_(place=dest, kind=kind)
        moved[key] = emit("to", [v], [t], node.loc)
    return moved[key]


def _insert(module, nodes, out):
    """``nodes`` with transfers, appended to the list ``out``."""
    moved = {}  # (value, device) -> value on device

    def emit(op, operands, types, loc):
        node = Node(op, tuple(operands), tuple(module.new_value(t) for t in types), {}, loc)
        out.append(node)
        return node.result

    for node in nodes:
        if node.op in ("to", "reveal", "output", "yield"):
            if node.op == "to":
                _check_explicit_to(module, node)
            out.append(node)
            continue
        if node.body is not None:  # a loop: each operand moves where its argument lives
            node.operands = tuple(_moved(module, node, v, a.type.place, moved, emit)
                                  for v, a in zip(node.operands, node.body.args))
            body = []
            _insert(module, node.body.nodes, body)
            node.body.nodes = body
            out.append(node)
            continue
        dest = _place(node)
        node.operands = tuple(_moved(module, node, v, dest, moved, emit) for v in node.operands)
        out.append(node)


def run(module):
    out = module.fresh()
    _insert(module, module.nodes, out.nodes)
    out.next_id = module.next_id
    return out.renumbered()
