"""The party executor: runs one party's program over a link.

The same executor runs under ``simulate`` (in-process links, one thread per
party) and under ``mixc run`` (TCP links, one process per party). Before the
first message it checks every input against the program's declared name,
shape and dtype. Pairwise PRG keys are agreed at session start: for each
key ``"a~b"`` a program uses, the party whose name sorts first draws 32
bytes from ``os.urandom`` and sends them to the other (tag 0); a key named
after one party is that party's own. Values are dropped after their last
use, so memory follows the live set, not the program length.
"""
from __future__ import annotations

import os

import numpy as np

from ..errors import InputError, MixcError
from ..ir.core import collector_paused
from ..ir.ops import NUMPY_DTYPES, OPS
from . import kernels

SEED_TAG = 0
_ACCEPTED_KINDS = {"f32": "f", "i32": "iu", "bool": "b"}


def check_input(name, value, dtype, shape):
    """The input as the declared numpy dtype, or an InputError saying what is wrong."""
    try:
        arr = np.asarray(value)
    except Exception as e:  # noqa: BLE001 - anything numpy cannot read is bad input
        raise InputError(f"input {name!r} is not an array: {e}") from None
    if tuple(arr.shape) != tuple(shape):
        raise InputError(f"input {name!r} has shape {tuple(arr.shape)}, the program declares "
                         f"{tuple(shape)}")
    if arr.dtype.kind not in _ACCEPTED_KINDS[dtype]:
        raise InputError(f"input {name!r} has dtype {arr.dtype}, the program declares {dtype}")
    return arr.astype(NUMPY_DTYPES[dtype], copy=False)


class PartyExecutor:
    def __init__(self, program, party, link, inputs, progress=None):
        self.program, self.party, self.link = program, party, link
        self.progress = progress
        self.inputs = self._check_inputs(inputs)
        self.keys = {}
        self._noise_prg = None
        self._calls = {}

    def _check_inputs(self, inputs):
        declared = {n.attrs["name"]: n for n in self.program.nodes if n.op == "input"}
        missing = sorted(set(declared) - set(inputs))
        if missing:
            raise InputError(f"party {self.party!r} is missing input(s) {', '.join(missing)}")
        unknown = sorted(set(inputs) - set(declared))
        if unknown:
            raise InputError(f"party {self.party!r} has no input(s) named {', '.join(unknown)} "
                             f"(its inputs: {', '.join(sorted(declared)) or 'none'})")
        return {k: check_input(k, inputs[k], n.attrs["dtype"], n.attrs["shape"])
                for k, n in declared.items()}

    def _agree_keys(self):
        seeds = sorted({n.attrs["seed"] for n in self.program.nodes if n.op == "random"})
        for seed in seeds:
            members = seed.split("~")
            if members == [self.party]:
                self.keys[seed] = os.urandom(32)
                continue
            if self.party not in members:
                raise MixcError(f"party {self.party!r} uses key {seed!r} it is not part of")
            (peer,) = [p for p in members if p != self.party]
            if self.party < peer:
                key = os.urandom(32)
                self.link.send(peer, SEED_TAG, np.frombuffer(key, dtype=np.uint8),
                               op="key agreement")
            else:
                key = bytes(np.asarray(self.link.recv(peer, SEED_TAG, op="key agreement")))
            self.keys[seed] = key

    @collector_paused()
    def run(self, checkpoint=None):
        """Run the program; its outputs by name. ``checkpoint``: (index, fn), fn() is
        called before node ``index`` runs (or at the end): the benchmarks time a program
        whose input-independent part was moved first (``runtime.phases``) this way."""
        self._agree_keys()
        nodes = self.program.nodes
        last_use = {}
        for i, n in enumerate(nodes):
            for v in n.operands:
                last_use[v] = i
        env, outputs = {}, {}
        total = len(nodes)
        for i, node in enumerate(nodes):
            if checkpoint is not None and i == checkpoint[0]:
                checkpoint[1]()
            args = [env[v] for v in node.operands]
            if node.op == "output":
                outputs[node.attrs["name"]] = np.asarray(args[0])
            else:
                results = self._eval(node, i, args)
                for r, val in zip(node.results, results):
                    env[r] = val
            for v in node.operands:
                if last_use[v] == i:
                    env.pop(v, None)
            if self.progress is not None and (i % 256 == 0 or i == total - 1):
                self.progress(i + 1, total)
        if checkpoint is not None and checkpoint[0] >= total:
            checkpoint[1]()
        return outputs

    def _eval(self, node, index, args):
        op, a = node.op, node.attrs
        if op == "input":
            return [self.inputs[a["name"]]]
        if op == "dp_noise":
            return [self._dp_noise(a)]
        if op == "random":
            prg = kernels.Prg(self.keys[a["seed"]], a["stream"])
            return [prg.random_u64(tuple(a["shape"]))]
        if op == "send":
            # np.ascontiguousarray makes 0-d arrays 1-d; keep the declared shape.
            data = np.asarray(args[0])
            what = f"send #{a['tag']} ({a.get('what', '')})" + (f" at {node.loc}" if node.loc else "")
            self.link.send(a["to"], a["tag"], np.ascontiguousarray(data).reshape(data.shape),
                           op=what)
            return []
        if op == "recv":
            what = f"recv #{a['tag']} ({a['what']})" + (f" at {node.loc}" if node.loc else "")
            return [np.asarray(self.link.recv(a["from"], a["tag"], op=what))]
        if op == "encode":
            return [kernels.encode_fixed(np.asarray(args[0], dtype=np.float64), a["frac_bits"])]
        if op == "decode":
            if a["dtype"] == "f32":
                return [kernels.decode_fixed(args[0], a["frac_bits"]).astype(np.float32)]
            return [args[0].view(np.int64).astype(NUMPY_DTYPES[a["dtype"]])]
        if op == "call":
            return self._call(a, args)
        if op.startswith("he."):  # RLWE key generation, encryption and evaluation
            from . import he_ops
            return he_ops.run(op, a, args)
        if op.startswith("he_mm."):  # HE matrix products by packing plan (matrix triples)
            from . import he_mm_ops
            return he_mm_ops.run(op, a, args)
        if op.startswith("ot."):  # two-party OT subprotocols: dealer-free correlations
            from . import ot_ops
            return ot_ops.run(self, op, a, args)
        if op == "bits_pack":
            return [kernels.bits_pack(np.ascontiguousarray(args[0]).reshape(-1))]
        if op == "bits_unpack":
            n = int(np.prod(a["shape"], dtype=np.int64))
            return [kernels.bits_unpack(args[0], n).reshape(a["shape"])]
        if op == "bits_unzip":
            return list(kernels.bits_unzip(np.ascontiguousarray(args[0])))
        out = OPS[op].impl(a, *args)
        return [np.asarray(out)]

    def _dp_noise(self, attrs):
        """Laplace (inverse CDF) or Gaussian (Box-Muller) noise from ChaCha20 uniforms."""
        shape = tuple(attrs["shape"])
        n = int(np.prod(shape, dtype=np.int64))
        if self._noise_prg is None:
            self._noise_prg = kernels.Prg(os.urandom(32), 0)
        words = self._noise_prg.random_u64((2, n))
        u = ((words >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0 ** -53  # in (0, 1)
        if attrs["mechanism"] == "laplace":
            centred = u[0] - 0.5
            noise = -attrs["scale"] * np.sign(centred) * np.log1p(-2 * np.abs(centred))
        else:
            noise = attrs["scale"] * np.sqrt(-2 * np.log(u[0])) * np.cos(2 * np.pi * u[1])
        return noise.reshape(shape).astype(np.float32)

    def _call(self, attrs, args):
        import jax
        code = attrs["code"].tobytes()
        fn = self._calls.get(code)
        if fn is None:
            fn = self._calls[code] = jax.export.deserialize(bytearray(code))
        outs = fn.call(*args)
        return [np.asarray(o) for o in outs]
