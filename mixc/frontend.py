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

from .errors import InputError, TraceError
from .ir.core import Block, Module, Node, TensorType
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
    """A private input of a program, owned by a PYU device.

    ``shape`` is one array's shape, or a pytree (dict/list/tuple/namedtuple) whose
    leaves are shapes or ``jax.ShapeDtypeStruct``s (a model's parameters): the
    program then receives the same pytree of device values. A leaf's dtype is its
    ShapeDtypeStruct's, else ``dtype``. Each leaf is one input of the built program,
    named ``<parameter>/<path>`` where the path joins the leaf's dict keys, sequence
    indices and attribute names with "." (``params/w``, ``params/layers.0.b``)."""

    def __init__(self, device, shape, dtype=jnp.float32):
        if getattr(device, "kind", None) != "PYU":
            raise TraceError(f"{_where()}: an Input must live on a PYU device, not "
                             f"{getattr(device, 'name', device)!r}")
        self.device = device
        if _is_shape(shape):
            self.tree = None
            self.shape, self.dtype = _leaf_spec(shape, dtype, "")
            self.leaves = [("", self.shape, self.dtype)]
            return
        self.tree = shape
        flat, self.treedef = jax.tree_util.tree_flatten_with_path(shape, is_leaf=_is_shape)
        if not flat:
            raise TraceError(f"{_where()}: an Input's tree of shapes has no leaves: {shape!r}")
        self.leaves = []
        for path, leaf in flat:
            name = leaf_path(path)
            self.leaves.append((name,) + _leaf_spec(leaf, dtype, name))
        names = [n for n, _, _ in self.leaves]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise TraceError(f"{_where()}: two leaves of an Input's tree are both named "
                             f"{twice[0]!r}")

    def leaf_name(self, parameter, path):
        """The input name of the leaf at ``path`` of ``parameter`` (see the class doc)."""
        return f"{parameter}/{path}" if self.tree is not None else parameter

    def __repr__(self):
        if self.tree is None:
            return f"Input({self.device.name}, {self.shape}, {self.dtype})"
        leaves = ", ".join(f"{n}: {d}{list(s)}" for n, s, d in self.leaves)
        return f"Input({self.device.name}, {{{leaves}}})"


def _is_shape(x):
    """A leaf of an Input's tree: one array's shape (a tuple/list of ints: one holding
    any int is taken for a shape, and refused unless all are) or a
    ``jax.ShapeDtypeStruct``."""
    if isinstance(x, jax.ShapeDtypeStruct):
        return True
    return (isinstance(x, (tuple, list)) and not hasattr(x, "_fields")
            and (not x or any(_is_dim(d) for d in x)))


def _is_dim(d):
    return isinstance(d, (int, np.integer)) and not isinstance(d, bool)


def _leaf_spec(leaf, dtype, name):
    """(shape, dtype name) of one leaf of an Input, or a TraceError naming the leaf."""
    what = f"leaf {name!r} of an Input" if name else "an Input"
    if isinstance(leaf, jax.ShapeDtypeStruct):
        shape, dtype = leaf.shape, leaf.dtype
    elif _is_shape(leaf) and all(_is_dim(d) for d in leaf):
        shape = leaf
    else:
        raise TraceError(f"{_where()}: {what} is {leaf!r}; a shape is a tuple of ints "
                         "(or a jax.ShapeDtypeStruct)")
    if any(int(d) < 0 for d in shape):
        raise TraceError(f"{_where()}: {what} has a negative dimension: {tuple(shape)}")
    try:
        np_dtype = np.dtype(dtype)
    except TypeError:
        np_dtype = None
    if np_dtype not in _INPUT_DTYPES:
        raise TraceError(f"{_where()}: Input dtype must be float32, int32 or bool, "
                         f"not {np_dtype or dtype}" + (f" (leaf {name!r})" if name else ""))
    return tuple(int(d) for d in shape), _INPUT_DTYPES[np_dtype]


_INPUT_DTYPES = {np.dtype(np.float32): "f32", np.dtype(np.int32): "i32", np.dtype(np.bool_): "bool"}


def leaf_path(path):
    """A pytree key path as text: keys, indices and attribute names joined by "."."""
    parts = []
    for key in path:
        for field in ("key", "idx", "name"):
            if hasattr(key, field):
                parts.append(str(getattr(key, field)))
                break
        else:
            parts.append(str(key))
    return ".".join(parts)


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


class _Block:
    """The block being traced into: the module's top level, or a loop body.

    A body reads values of enclosing blocks only through its loop's captured
    operands: the first time an op inside uses an outer value, that value is
    captured (a new block argument stands for it), so whatever a rule looks up
    (a cached quotient, a producer's operand) never crosses a block boundary.
    ``place``: the device a loop on one device moves its captures to (None:
    they keep theirs, as in a program-level loop)."""

    def __init__(self, nodes, parent=None, place=None):
        self.nodes, self.parent, self.place = nodes, parent, place
        self.defined = set()
        self.captures = {}  # outer value -> the block argument standing for it


class _Trace:
    def __init__(self, name):
        self.module = Module(name)
        self.block = _Block(self.module.nodes)
        self.public = set()  # MPC values computed from constants only
        self.known = {}      # public value -> its numpy value, computed as it is emitted
        self.producer = {}   # value -> the node that made it
        self.frame = None    # the author's frame of the equation being translated
        self.int_quotients = {}  # (x, y) -> secret trunc(x / y): x // y needs div and rem

    def use_device(self, d):
        if d.name not in self.module.devices:
            self.module.devices[d.name] = d

    def visible(self, value, block=None):
        """``value`` as the current block (or ``block``) sees it: itself, or the
        argument capturing it."""
        block = block or self.block
        if block.parent is None or value in block.defined:
            return value
        arg = block.captures.get(value)
        if arg is None:
            outer = self.visible(value, block.parent)
            t = outer.type if block.place is None else outer.type.with_(place=block.place)
            arg = block.captures[outer] = self.module.new_value(t)
            if outer in self.public and t.place == outer.type.place:
                self.public.add(arg)
                if outer in self.known:
                    self.known[arg] = self.known[outer]
        return arg

    def emit(self, op, operands, types, attrs, loc):
        operands = tuple(self.visible(v) for v in operands)
        node = Node(op, operands, tuple(self.module.new_value(t) for t in types),
                    dict(attrs or {}), loc)
        return self._append(node)

    def _append(self, node):
        self.block.nodes.append(node)
        self.block.defined.update(node.results)
        self.producer.update((r, node) for r in node.results)
        op, operands = node.op, node.operands
        on_mpc = node.results and self.module.devices[node.results[0].type.place].kind in ("MPC", "HE")
        from_constants = op in ("constant", "loop_index") or (
            operands and all(v in self.public for v in operands))
        if on_mpc and op not in ("to", "loop") and from_constants:
            self.public.update(node.results)
            self._evaluate(node)
        return node

    def loop(self, trip_count, inits, body, loc, place=None):
        """A ``loop`` node running ``body(carried) -> next carried`` ``trip_count`` times
        (``body`` emits into the loop's block; ``loop_index`` gives the iteration).

        A carried value stays public only if every iteration keeps it public: the body
        is traced assuming so, and again without that assumption where a ``yield``
        turned out secret (the public set only shrinks, so this ends)."""
        public = [v in self.public and (place is None or v.type.place == place) for v in inits]
        while True:
            block = _Block([], self.block, place)
            args = []
            for v, is_public in zip(inits, public):
                a = self.module.new_value(v.type if place is None else v.type.with_(place=place))
                block.defined.add(a)
                if is_public:
                    self.public.add(a)
                args.append(a)
            outer, quotients = self.block, dict(self.int_quotients)
            self.block = block
            try:
                nexts = [self.visible(v) for v in body(args)]
            finally:
                self.block, self.int_quotients = outer, quotients
            kept = [p and v in self.public for p, v in zip(public, nexts)]
            if kept == public:
                break
            public = kept
        for a, v in zip(args, nexts):
            if (a.type.dtype, a.type.shape) != (v.type.dtype, v.type.shape):
                raise TraceError(f"{loc}: a loop's carried value changes from "
                                 f"{a.type.dtype}{list(a.type.shape)} to "
                                 f"{v.type.dtype}{list(v.type.shape)} in its body")
        block.nodes.append(Node("yield", tuple(nexts), ()))
        captured = list(block.captures)
        inits = [self.visible(v) for v in inits]
        results = tuple(self.module.new_value(a.type) for a in args)
        node = Node("loop", tuple(captured) + tuple(inits), results,
                    {"trip_count": int(trip_count), "captures": len(captured)}, loc,
                    Block(tuple(block.captures[v] for v in captured) + tuple(args), block.nodes))
        self._append(node)
        self.public.update(r for r, p in zip(results, public) if p)
        return list(results)

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
        for i, x in enumerate(leaves):
            if isinstance(x, LoopIndex):
                leaves[i] = DeviceValue(x.value_on(trace, self.device), self.device, "loop counter")
        dynamic = [i for i, x in enumerate(leaves) if isinstance(x, DeviceValue)]
        for i, x in enumerate(leaves):
            if not isinstance(x, DeviceValue) and not _is_static(x):
                raise TraceError(f"{_where(frame)}: argument of type {type(x).__name__} to "
                                 f"{self.name} on {self.device.name} is neither a device value "
                                 "nor a constant")

        def flat_fn(*dyn):
            _Noise.enter_function()
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
            mark = len(trace.block.nodes)
            outs, out_tree = self._trace(trace, noise, flat_fn, avals, operands, frame)
            if noise.requests:
                del trace.block.nodes[mark:]  # the noiseless first trace
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
        noise.device_kind = self.device.kind
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

    @staticmethod
    def enter_function():
        """Remember the trace of the device function itself (see ``next``)."""
        noise = getattr(_state, "noise", None)
        if noise is not None:
            from jax._src import core
            noise.top = core.trace_ctx.trace

    def next(self, x, spec):
        from jax._src import core
        if getattr(self, "top", None) is not None and core.trace_ctx.trace is not self.top:
            raise TraceError(f"{_where()}: a mixc.dp mechanism inside a lax loop, cond or jit body "
                             "would draw its noise once and add the same noise in every "
                             "iteration; call it outside the loop, or loop with "
                             "mixc.fori_loop (fresh noise per iteration)")
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


def noise_device_kind():
    """The kind of the device whose function is being traced with mixc.dp calls."""
    return getattr(getattr(_state, "noise", None), "device_kind", None)


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
    if x.device.name == dev.name:  # already there (plaintext, if dev is a PYU): nothing to do
        return x
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


# ------------------------------------------------------------ program-level loops

class LoopIndex:
    """The iteration counter of a ``mixc.fori_loop``: pass it to a device function as
    an argument (it arrives there as an int32 scalar every party of the device knows)."""

    def __init__(self, block, lower):
        self.block, self.lower = block, lower
        self._on = {}  # device name -> the counter's value there

    def value_on(self, trace, dev):
        if dev.name not in self._on:
            inside, at = trace.block, self.block
            while inside is not None and inside is not at:
                inside = inside.parent
            if inside is None:
                raise TraceError(f"{_where()}: a mixc.fori_loop counter is used outside its loop")
            outer, trace.block = trace.block, at
            try:
                loc = _loc()
                t = TensorType("i32", (), dev.name)
                index = trace.emit("loop_index", (), [t], {}, loc).result
                if self.lower:
                    start = _constant(trace, np.int32(self.lower), dev, loc)
                    index = trace.emit("add", [index, start], [t], {}, loc).result
            finally:
                trace.block = outer
            self._on[dev.name] = index
        return self._on[dev.name]

    def __repr__(self):
        return "<mixc.fori_loop counter>"


def fori_loop(lower, upper, body_fun, init_val):
    """``lax.fori_loop`` at the program level: ``body_fun(i, carry)`` may call devices,
    ``to`` and ``reveal``; ``carry`` is a pytree of device values, each of which the body
    must return on the device it came from. The loop stays one ``loop`` op (its trip
    count, ``upper - lower``, is an int known when compiling) unless a device in its body
    does not keep loops (``_keeps_loops``): then the body is traced once per step."""
    trace = _tracer()
    frame = _author_frame()
    where = _where(frame)
    if not all(isinstance(b, (int, np.integer)) and not isinstance(b, bool)
               for b in (lower, upper)):
        raise TraceError(f"{where}: mixc.fori_loop bounds must be ints known when compiling, "
                         f"not {lower!r} and {upper!r}")
    is_value = lambda v: isinstance(v, DeviceValue)  # noqa: E731
    leaves, treedef = jax.tree_util.tree_flatten(init_val, is_leaf=is_value)
    if not all(is_value(v) for v in leaves):
        raise TraceError(f"{where}: the carry of mixc.fori_loop is a pytree of device values")
    count = max(int(upper) - int(lower), 0)

    def step(index, values):
        carry = jax.tree_util.tree_unflatten(
            treedef, [DeviceValue(v, leaf.device, leaf.label) for v, leaf in zip(values, leaves)])
        out = body_fun(index, carry)
        out_leaves, out_tree = jax.tree_util.tree_flatten(out, is_leaf=is_value)
        if out_tree != treedef or not all(is_value(v) for v in out_leaves):
            raise TraceError(f"{where}: the body of mixc.fori_loop returns {out_tree}, "
                             f"its carry is {treedef}")
        for new, old in zip(out_leaves, leaves):
            if new.device.name != old.device.name or new.shape != old.shape \
                    or new.dtype != old.dtype:
                raise TraceError(f"{where}: the body of mixc.fori_loop turns {old!r} into "
                                 f"{new!r}: a carried value keeps its device, shape and dtype")
        return [v.value for v in out_leaves]

    mark = len(trace.block.nodes)
    values = [v.value for v in leaves]
    if count > 1:
        results = trace.loop(count, values,
                             lambda args: step(LoopIndex(trace.block, int(lower)), args),
                             _loc(frame))
        loop = trace.block.nodes[-1]
        if all(_keeps_loops(d) for d in _devices_in(trace.module, loop.body.nodes)):
            return jax.tree_util.tree_unflatten(
                treedef, [DeviceValue(r, leaf.device, leaf.label) for r, leaf in zip(results, leaves)])
        del trace.block.nodes[mark:]
    for i in range(int(lower), int(upper)):
        values = step(i, values)
    return jax.tree_util.tree_unflatten(
        treedef, [DeviceValue(v, leaf.device, leaf.label) for v, leaf in zip(values, leaves)])


def _keeps_loops(device):
    """Whether a ``mixc.fori_loop`` whose body uses ``device`` stays a loop: on PYU, TEE,
    MPC (with a dealer or dealer-free) and HE devices (``translate_control.keeps_loops``)."""
    from .translate import keeps_loops
    return device.kind in ("PYU", "TEE") or keeps_loops(device)


def _devices_in(module, nodes):
    from .ir.core import walk
    return {module.devices[v.type.place] for n in walk(nodes)
            for v in list(n.results) + list(n.operands)}


# --------------------------------------------------------------------- program

class Program:
    """A ``@mixc.program`` function: trace it, build it, or simulate it."""

    def __init__(self, fn):
        self.fn = fn
        self.name = fn.__name__
        self.prefer = ()
        self._simulated = None  # (build options, bundle) of the last simulate
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
            args = {pname: self._input_values(trace, pname, spec)
                    for pname, spec in self.inputs.items()}
            result = self.fn(**args)
            self._outputs(trace, result)
        finally:
            _state.trace = None
        m = trace.module
        m.parties = tuple(sorted({p for d in m.devices.values() for p in d.parties}))
        return m

    @staticmethod
    def _input_values(trace, pname, spec):
        """One ``input`` op per leaf of ``spec``; the parameter's value (a device
        value, or the tree of them)."""
        trace.use_device(spec.device)
        values = []
        for path, shape, dtype in spec.leaves:
            name = spec.leaf_name(pname, path)
            node = trace.emit("input", (), [TensorType(dtype, shape, spec.device.name)],
                              {"name": name, "dtype": dtype, "shape": shape}, None)
            values.append(DeviceValue(node.result, spec.device, name))
        if spec.tree is None:
            return values[0]
        return jax.tree_util.tree_unflatten(spec.treedef, values)

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

    BUILD_OPTIONS = ("passes", "network", "verify_between", "prefer")

    def simulate(self, inputs=None, /, **kwargs):
        """Run every party's program in this process; the outputs in the structure the
        program returned.

        Inputs are keywords named after the program's parameters (a tree input takes
        the pytree of arrays its ``mixc.Input`` declared), or one dict given as the
        only positional argument. Every other keyword is an option: ``passes``,
        ``network``, ``verify_between`` and ``prefer`` for the build, the rest
        (``timeout``, ...) for ``mixc.bundle.simulate``. A parameter named like an
        option is an input when given by keyword; to pass that option as well, give
        the inputs as the dict (then every keyword is an option).

        The build is cached on this Program, keyed by the build options: a second call
        with new inputs neither retraces nor rebuilds, and any other options rebuild.
        As with ``jax.jit``, what the program's Python reads when traced (a global, a
        closed-over list) is read at the first call with those options."""
        from . import bundle as bundles
        if inputs is None:
            inputs = {k: kwargs.pop(k) for k in list(kwargs) if k in self.inputs}
        elif not isinstance(inputs, dict):
            raise InputError(f"{self.name}.simulate takes its inputs as keywords or as one "
                             f"dict, not a {type(inputs).__name__}")
        build_options = {k: kwargs.pop(k) for k in self.BUILD_OPTIONS if k in kwargs}
        run_options = set(inspect.signature(bundles.simulate).parameters) - {"bundle", "inputs"}
        unknown = sorted(set(kwargs) - run_options)
        if unknown:
            options = ", ".join(self.BUILD_OPTIONS + tuple(sorted(run_options)))
            raise InputError(f"unknown input(s) or option(s) {', '.join(unknown)} to "
                             f"{self.name}.simulate (its inputs: {', '.join(self.inputs)}; "
                             f"options: {options})")
        return bundles.simulate(self._simulated_build(**build_options), inputs, **kwargs)

    def _simulated_build(self, passes=None, network="lan", verify_between=False, prefer=None):
        """The bundle ``simulate`` runs: the last one built, if built with these options."""
        key = (None if passes is None else tuple(passes), network, bool(verify_between),
               tuple(self.prefer if prefer is None else prefer))
        if self._simulated is None or self._simulated[0] != key:
            self._simulated = (key, self.build(passes=passes, network=network,
                                               verify_between=verify_between, prefer=prefer))
        return self._simulated[1]


def program(fn=None, *, prefer=()):
    """``@mixc.program`` or ``@mixc.program(prefer=("masking",))``: ``prefer`` names
    protocols the selection pass picks wherever they apply (see passes.select_protocols)."""
    def make(f):
        p = Program(f)
        p.prefer = tuple(prefer)
        return p
    return make if fn is None else make(fn)
