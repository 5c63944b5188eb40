"""The author's API: ``program``, ``Input``, ``device``, ``to``, ``reveal``.

Calling a ``@program`` function's ``trace()`` runs the author's Python once
with symbolic ``DeviceValue``s. Each ``device(d)(fn)(*args)`` call traces
``fn`` with JAX:

- on a PYU, the whole function becomes one ``call`` op carrying the function
  as a serialized ``jax.export`` module, so any jnp code runs there;
- on an MPC or HE device, the jaxpr is translated op by op into the global
  IR by ``mixc.translate`` (nested jit/custom_jvp calls are inlined) so each
  op can get a protocol.

Python loops unroll because the Python runs. The result is the global IR
with every node placed on the device that runs it; transfers are inserted
later by ``passes.insert_transfers``.
"""
from __future__ import annotations

import contextlib
import inspect
import threading

import jax
import jax.numpy as jnp
import numpy as np

from .errors import TraceError
from .ir.core import Module, TensorType
from .ir.ops import dtype_name, opdef
from .translate import _NP, _author_frame, _constant, _loc, _translate, _where

_state = threading.local()


def _tracer() -> "_Trace":
    t = getattr(_state, "trace", None)
    if t is None:
        raise TraceError(f"{_where()}: device(), to() and reveal() work only inside a "
                         "@mixc.program function")
    return t


class Input:
    """A private input of a program, owned by a PYU device."""

    def __init__(self, device, shape, dtype=jnp.float32):
        if getattr(device, "kind", None) != "PYU":
            raise TraceError(f"{_where()}: an Input must live on a PYU device, not "
                             f"{getattr(device, 'name', device)!r}")
        self.device, self.shape = device, tuple(int(d) for d in shape)
        self.dtype = dtype_name(np.dtype(dtype))
        if self.dtype not in ("f32", "i32", "bool"):
            raise TraceError(f"{_where()}: Input dtype must be float32, int32 or bool, "
                             f"not {np.dtype(dtype)}")

    def __repr__(self):
        return f"Input({self.device.name}, {self.shape}, {self.dtype})"


class DeviceValue:
    """A value of the program being traced, living on one device."""

    def __init__(self, value, device, label=None):
        self.value, self.device, self.label = value, device, label

    @property
    def shape(self):
        return self.value.type.shape

    @property
    def dtype(self):
        return np.dtype(_NP[self.value.type.dtype])

    @property
    def ndim(self):
        return len(self.shape)

    def __repr__(self):
        return f"<{self.label or 'value'} {self.value.type.dtype}{list(self.shape)} on {self.device.name}>"

    def _refuse(self, *_):
        raise TraceError(f"{_where()}: {self!r} is a device value; compute on it inside "
                         "device(d)(fn)(...), not in the program body")

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __truediv__ = _refuse
    __matmul__ = __getitem__ = __neg__ = __bool__ = __array__ = _refuse


class _Trace:
    def __init__(self, name):
        self.module = Module(name)
        self.public = set()  # MPC values computed from constants only
        self.known = {}      # public value -> its numpy value, computed as it is emitted
        self.producer = {}   # value -> the node that made it
        self.frame = None    # the author's frame of the equation being translated
        self.int_quotients = {}  # (x, y) -> secret trunc(x / y): x // y needs div and rem

    def use_device(self, d):
        if d.name not in self.module.devices:
            self.module.devices[d.name] = d

    def emit(self, op, operands, types, attrs, loc):
        node = self.module.add(op, operands, types, attrs, loc)
        self.producer.update((r, node) for r in node.results)
        on_mpc = node.results and self.module.devices[node.results[0].type.place].kind in ("MPC", "HE")
        from_constants = op == "constant" or (operands and all(v in self.public for v in operands))
        if on_mpc and op != "to" and from_constants:
            self.public.update(node.results)
            self._evaluate(node)
        return node

    def _evaluate(self, node):
        """Record a public node's value, so that indices, loop conditions and branch
        choices computed from constants are known when compiling."""
        impl = opdef(node.op).impl
        args = [self.known.get(v) for v in node.operands]
        if impl is None or len(node.results) != 1 or any(a is None for a in args):
            return
        self.known[node.result] = np.asarray(impl(node.attrs, *args))


# --------------------------------------------------------------- device calls

class DeviceFunction:
    def __init__(self, dev, fn):
        self.device, self.fn = dev, fn
        self.name = getattr(fn, "__name__", type(fn).__name__)

    def __call__(self, *args, **kwargs):
        trace = _tracer()
        trace.use_device(self.device)
        frame = _author_frame()
        leaves, treedef = jax.tree_util.tree_flatten((args, kwargs))
        dynamic = [i for i, x in enumerate(leaves) if isinstance(x, DeviceValue)]
        for i, x in enumerate(leaves):
            if not isinstance(x, DeviceValue) and not _is_static(x):
                raise TraceError(f"{_where(frame)}: argument of type {type(x).__name__} to "
                                 f"{self.name} on {self.device.name} is neither a device value "
                                 "nor a constant")

        def flat_fn(*dyn):
            full = list(leaves)
            for i, v in zip(dynamic, dyn):
                full[i] = v
            a, k = jax.tree_util.tree_unflatten(treedef, full)
            return self.fn(*a, **k)

        avals = [jax.ShapeDtypeStruct(leaves[i].shape, leaves[i].dtype) for i in dynamic]
        operands = [leaves[i].value for i in dynamic]
        try:
            # First trace: mixc.dp calls only announce their noise. If there are any, the
            # noise becomes dp_noise ops and extra inputs of a second trace.
            noise = _Noise()
            mark = len(trace.module.nodes)
            outs, out_tree = self._trace(trace, noise, flat_fn, avals, operands, frame)
            if noise.requests:
                del trace.module.nodes[mark:]  # the noiseless first trace
                values = [trace.emit("dp_noise", [], [TensorType(dtype_name(aval.dtype),
                                                                 tuple(aval.shape),
                                                                 self.device.name)],
                                     dict(spec, shape=tuple(aval.shape)), _loc(where)).result
                          for aval, spec, where in noise.requests]
                noise.bind()

                def noisy_fn(*dyn):
                    with noise.feeding(dyn[len(dynamic):]):
                        return flat_fn(*dyn[:len(dynamic)])
                noise_avals = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a, _, _ in noise.requests]
                outs, out_tree = self._trace(trace, noise, noisy_fn, avals + noise_avals,
                                             operands + values, frame)
        except TraceError:
            raise
        except NotImplementedError as e:
            raise TraceError(f"{_where(frame)}: {e}") from e
        except Exception as e:  # JAX's own error about the author's function
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise TraceError(f"{_where(frame)}: tracing {self.name} on {self.device.name} "
                             f"failed: {type(e).__name__}: {msg}") from e
        wrapped = [DeviceValue(v, self.device, f"{self.name} result") for v in outs]
        return jax.tree_util.tree_unflatten(out_tree, wrapped)

    def _trace(self, trace, noise, fn, avals, operands, frame):
        _state.noise = noise
        try:
            if self.device.kind in ("PYU", "TEE"):  # a TEE runs plaintext JAX, like a PYU
                return _trace_pyu(trace, self, fn, avals, operands, frame)
            if self.device.kind in ("MPC", "HE"):  # HE: op by op too, linear ops only
                return _trace_mpc(trace, self, fn, avals, operands, frame)
            raise TraceError(f"{_where(frame)}: {self.device.kind} devices are not "
                             f"supported yet (device {self.device.name})")
        finally:
            _state.noise = None


class _Noise:
    """The mixc.dp calls of one device function: announced in a first trace, then fed as
    extra inputs (made by dp_noise ops) in a second."""

    def __init__(self):
        self.requests = []  # (aval, spec, author frame)
        self._feed = None

    def bind(self):
        self._feed = []

    @contextlib.contextmanager
    def feeding(self, values):
        self._feed = list(values)
        try:
            yield
        finally:
            self._feed = []

    def next(self, x, spec):
        if self._feed is None:
            aval = jax.ShapeDtypeStruct(np.shape(x), jnp.result_type(x, jnp.float32))
            self.requests.append((aval, spec, _author_frame()))
            return jnp.zeros(aval.shape, aval.dtype)
        return self._feed.pop(0)


def noise_for(x, spec):
    """The noise term a mixc.dp mechanism adds to ``x`` (see mixc/dp.py)."""
    noise = getattr(_state, "noise", None)
    if noise is None:
        raise TraceError(f"{_where()}: mixc.dp mechanisms work inside a device function "
                         "of a @mixc.program")
    return noise.next(x, spec)


def _is_static(x):
    return isinstance(x, (int, float, bool, np.ndarray, np.generic, jax.Array)) or x is None


def _trace_pyu(trace, dfn, flat_fn, avals, operands, frame):
    out_tree_box = []

    def fn_flat_out(*dyn):
        out = flat_fn(*dyn)
        leaves, tree = jax.tree_util.tree_flatten(out)
        out_tree_box.append(tree)
        return leaves

    from jax._src import config as jax_config
    # Keep only file basenames in the module's debug locations, so a bundle
    # does not depend on (or disclose) where the author's checkout lives.
    with jax_config.hlo_source_file_canonicalization_regex(".*/"):
        exported = jax.export.export(jax.jit(fn_flat_out), platforms=("cpu",))(*avals)
    result_types = tuple((dtype_name(a.dtype), tuple(a.shape)) for a in exported.out_avals)
    types = [TensorType(d, s, dfn.device.name) for d, s in result_types]
    node = trace.emit("call", operands, types,
                      {"fn": dfn.name,
                       "code": np.frombuffer(bytes(exported.serialize()), dtype=np.uint8),
                       "result_types": result_types}, _loc(frame))
    return list(node.results), out_tree_box[0]


def _trace_mpc(trace, dfn, flat_fn, avals, operands, frame):
    closed, out_shapes = jax.make_jaxpr(flat_fn, return_shape=True)(*avals)
    out_tree = jax.tree_util.tree_structure(out_shapes)
    env = {}
    jaxpr = closed.jaxpr
    for var, val in zip(jaxpr.invars, operands):
        env[var] = val
    for var, c in zip(jaxpr.constvars, closed.consts):
        env[var] = _constant(trace, np.asarray(c), dfn.device, _loc(frame))
    outs = _translate(trace, jaxpr, env, dfn.device, frame)
    # An argument returned as it came still lives where it came from: move it in.
    outs = [v if v.type.place == dfn.device.name else
            trace.emit("to", [v], [v.type.with_(place=dfn.device.name)], {}, _loc(frame)).result
            for v in outs]
    return outs, out_tree


# ------------------------------------------------------- transfers, reveal

def device(dev):
    """``device(d)(fn)`` runs ``fn`` on device ``d``."""
    if not hasattr(dev, "kind"):
        raise TraceError(f"{_where()}: device() takes a device from mixc.init_device, "
                         f"not {dev!r}")

    def place(fn):
        return DeviceFunction(dev, fn)
    return place


def _move(op, x, dev, explicit_label):
    trace = _tracer()
    frame = _author_frame()
    if not isinstance(x, DeviceValue):
        raise TraceError(f"{_where(frame)}: {op}() takes a device value, not {type(x).__name__}")
    trace.use_device(dev)
    t = x.value.type.with_(place=dev.name)
    node = trace.emit(op, [x.value], [t], {"explicit": True}, _loc(frame))
    return DeviceValue(node.result, dev, explicit_label)


def to(x, dev):
    """Move ``x`` to device ``dev`` (shares it when ``dev`` is an MPC device)."""
    return jax.tree_util.tree_map(lambda v: _move("to", v, dev, v.label), x,
                                  is_leaf=lambda v: isinstance(v, DeviceValue))


def reveal(x, dev):
    """Open the secret ``x`` to the PYU (or TEE) device ``dev``: the one way secrets become plaintext."""
    if getattr(dev, "kind", None) not in ("PYU", "TEE"):
        raise TraceError(f"{_where()}: reveal() opens a value to a PYU or TEE device, not "
                         f"{getattr(dev, 'name', dev)!r}")
    return jax.tree_util.tree_map(lambda v: _move("reveal", v, dev, v.label), x,
                                  is_leaf=lambda v: isinstance(v, DeviceValue))


plaintext_to = reveal


# --------------------------------------------------------------------- program

class Program:
    """A ``@mixc.program`` function: trace it, build it, or simulate it."""

    def __init__(self, fn):
        self.fn = fn
        self.name = fn.__name__
        try:
            sig = inspect.signature(fn, eval_str=True)
        except Exception:  # noqa: BLE001 - string annotations that do not evaluate
            sig = inspect.signature(fn)
        self.inputs = {}
        for pname, p in sig.parameters.items():
            spec = p.annotation if isinstance(p.annotation, Input) else p.default
            if not isinstance(spec, Input):
                hint = (" (its annotation is a string that did not evaluate; write "
                        f"{pname}=mixc.Input(...) as a default instead)"
                        if isinstance(p.annotation, str) else "")
                raise TraceError(f"{self._where()}: parameter {pname!r} of {self.name} needs a "
                                 f"mixc.Input(device, shape) annotation{hint}")
            self.inputs[pname] = spec

    def _where(self):
        code = self.fn.__code__
        return f"{code.co_filename}:{code.co_firstlineno}"

    def trace(self) -> Module:
        if getattr(_state, "trace", None) is not None:
            raise TraceError(f"{self._where()}: programs cannot be traced inside programs")
        trace = _Trace(self.name)
        trace.module.stage = "trace"
        _state.trace = trace
        try:
            args = {}
            for pname, spec in self.inputs.items():
                trace.use_device(spec.device)
                t = TensorType(spec.dtype, spec.shape, spec.device.name)
                node = trace.emit("input", (), [t], {"name": pname, "dtype": spec.dtype,
                                                     "shape": spec.shape}, None)
                args[pname] = DeviceValue(node.result, spec.device, pname)
            result = self.fn(**args)
            self._outputs(trace, result)
        finally:
            _state.trace = None
        m = trace.module
        m.parties = tuple(sorted({p for d in m.devices.values() for p in d.parties}))
        return m

    def _outputs(self, trace, result):
        if isinstance(result, dict):
            named, self.output_structure = list(result.items()), "dict"
        elif isinstance(result, (tuple, list)):
            named, self.output_structure = [(f"out{i}", v) for i, v in enumerate(result)], "tuple"
        elif result is None:
            named, self.output_structure = [], "none"
        else:
            named, self.output_structure = [("out0", result)], "single"
        for name, v in named:
            leaves = jax.tree_util.tree_leaves(v, is_leaf=lambda x: isinstance(x, DeviceValue))
            if len(leaves) != 1 or not isinstance(leaves[0], DeviceValue):
                raise TraceError(f"{self._where()}: output {name!r} must be one device value "
                                 f"returned by reveal() or computed on a PYU, got {v!r}")
            dv = leaves[0]
            if dv.device.kind != "PYU":
                made_by = trace.producer.get(dv.value)
                made_at = f", computed at {made_by.loc}" if made_by is not None and made_by.loc \
                    else ""
                raise TraceError(f"{self._where()}: output {name!r} ({dv!r}{made_at}) is an unrevealed "
                                 f"secret on {dv.device.name}; return reveal(value, party_device)")
            trace.emit("output", [dv.value], [], {"name": str(name)}, None)

    def build(self, passes=None, network="lan", verify_between=False, prefer=None):
        """``prefer``: protocols chosen wherever they apply (default: the program's own)."""
        from .bundle import build
        return build(self, passes=passes, network=network, verify_between=verify_between,
                     prefer=prefer)

    def simulate(self, **inputs):
        from .bundle import simulate
        return simulate(self.build(), inputs)


def program(fn=None, *, prefer=()):
    """``@mixc.program`` or ``@mixc.program(prefer=("masking",))``: ``prefer`` names
    protocols the selection pass picks wherever they apply (see passes.select_protocols)."""
    def make(f):
        p = Program(f)
        p.prefer = tuple(prefer)
        return p
    return make if fn is None else make(fn)
