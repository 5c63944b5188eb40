"""conv_general_dilated on the 128-bit ring (``ring: 128``): the u128 evaluation
(runtime.ringops: im2col of each word plane, one u128 GEMM) against Python ints, and
convolutions in 2-party programs with a dealer against plain JAX.

Error model as tests/test_ring128.py (f = 40): encoding and TruncPr are off by a few
2^-40, so results agree with float32 JAX to float32 rounding of the sums."""
import os

import jax
import numpy as np
import pytest

import mixc
from mixc import device, reveal
from mixc.bundle import build, simulate
from mixc.ir import ops
from mixc.runtime import kernels as K
from mixc.runtime import kernels_ref as R
from mixc.runtime import ringops

from conftest import make_program

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
C = mixc.init_device(os.path.join(ROOT, "examples", "two_party_ring128.devices"))
RNG = np.random.default_rng(7)

# (dimension numbers, input shape, kernel shape, strides, padding, lhs dilation, rhs dilation)
CASES = [
    (("NCHW", "OIHW", "NCHW"), (1, 1, 6, 6), (2, 1, 3, 3), (1, 1), "VALID", (1, 1), (1, 1)),
    (("NHWC", "HWIO", "NHWC"), (2, 5, 5, 3), (3, 3, 3, 4), (2, 2), "SAME", (1, 1), (1, 1)),
    (("NCHW", "OIHW", "NCHW"), (1, 2, 7, 6), (3, 2, 2, 3), (1, 2), ((2, 0), (1, -1)),
     (1, 1), (2, 1)),
    (("NCHW", "OIHW", "NCHW"), (1, 2, 3, 3), (2, 2, 3, 3), (1, 1), ((1, 1), (2, 2)),
     (2, 2), (1, 1)),  # lhs dilation: a transposed convolution
    (("NWC", "WIO", "NWC"), (2, 9, 2), (3, 2, 3), (2,), ((1, 1),), (1,), (2,)),
]


def _attrs(xs, ks, dn, strides, padding, lhs_dil, rhs_dil):
    """The IR attributes lax gives this convolution (read from a traced jaxpr)."""
    def f(x, k):
        return jax.lax.conv_general_dilated(x, k, strides, padding, lhs_dil, rhs_dil,
                                            dimension_numbers=dn)
    (eqn,) = jax.make_jaxpr(f)(np.zeros(xs, np.float32), np.zeros(ks, np.float32)).eqns
    p = eqn.params
    spec = p["dimension_numbers"]
    return {"window_strides": p["window_strides"], "padding": p["padding"],
            "lhs_dilation": p["lhs_dilation"], "rhs_dilation": p["rhs_dilation"],
            "dimension_numbers": (spec.lhs_spec, spec.rhs_spec, spec.out_spec),
            "feature_group_count": 1, "batch_group_count": 1}


def _random_u128(shape):
    return K.r128_from_words(RNG.integers(0, 2**64, shape + (2,), dtype=np.uint64))


@pytest.mark.parametrize("dn,xs,ks,strides,padding,lhs_dil,rhs_dil", CASES)
def test_u128_conv_vs_python_ints(dn, xs, ks, strides, padding, lhs_dil, rhs_dil):
    """Exact mod 2^128 against object-array im2col products, and its low words equal to
    the 64-bit ring's convolution of the low words (an independent layout check)."""
    a = _attrs(xs, ks, dn, strides, padding, lhs_dil, rhs_dil)
    x, w = _random_u128(xs), _random_u128(ks)
    got = ringops.U128_OPS["conv_general_dilated"](a, x, w)
    xi, wi = K.r128_to_int(x), K.r128_to_int(w)
    window = tuple(ks[i] for i in a["dimension_numbers"][1][2:])
    patches, out_sp = ops.conv_patches(xi, a, window)
    km = ops.conv_kernel_matrix(wi, a)
    want = R.r128_matmul(km, patches).reshape((km.shape[0], xs[a["dimension_numbers"][0][0]])
                                              + out_sp)
    want = np.transpose(want, ops.conv_output_perm(a, len(out_sp)))
    np.testing.assert_array_equal(K.r128_to_int(got), want)
    low = ops.OPS["conv_general_dilated"].impl(a, np.ascontiguousarray(x["lo"]),
                                               np.ascontiguousarray(w["lo"]))
    np.testing.assert_array_equal(got["lo"], low)


def test_u128_grouped_conv_is_refused():
    a = {**_attrs((1, 2, 4, 4), (2, 2, 3, 3), ("NCHW", "OIHW", "NCHW"), (1, 1), "VALID",
                  (1, 1), (1, 1)), "feature_group_count": 2}
    with pytest.raises(NotImplementedError, match="grouped convolution"):
        ringops.U128_OPS["conv_general_dilated"](a, _random_u128((1, 2, 4, 4)),
                                                 _random_u128((1, 1, 3, 3)))


def _run(fn, inputs, prefer=()):
    names = list(inputs)
    specs = {n: mixc.Input(d, a.shape) for n, (d, a) in inputs.items()}
    prog = make_program(lambda **kw: reveal(device(C.mpc)(fn)(*[kw[n] for n in names]), C.p1),
                        specs)
    prog.prefer = prefer
    bundle = build(prog, verify_between=True)
    values = {n: a for n, (_, a) in inputs.items()}
    out = simulate(bundle, values)
    return bundle, out, np.asarray(fn(*[jax.numpy.asarray(v) for v in values.values()]))


def _protocols(bundle):
    return [row[2] for row in bundle.cost_report.rows if row[1] == "conv_general_dilated"]


@pytest.mark.parametrize("dn,xs,ks,strides,padding,lhs_dil,rhs_dil", CASES)
def test_cnn_layer_vs_jax(dn, xs, ks, strides, padding, lhs_dil, rhs_dil):
    """A CNN layer, image and kernel secret (owned by different parties): Beaver conv
    triples from the dealer on Z_2^128, then bias and ReLU."""
    def layer(x, k, b):
        y = jax.lax.conv_general_dilated(x, k, strides, padding, lhs_dil, rhs_dil,
                                         dimension_numbers=dn)
        return jax.nn.relu(y + b)
    x = RNG.standard_normal(xs).astype(np.float32)
    k = (RNG.standard_normal(ks) * 0.3).astype(np.float32)
    b = np.float32(0.1)
    bundle, out, ref = _run(layer, {"x": (C.p1, x), "k": (C.p2, k), "b": (C.p2, b)})
    np.testing.assert_allclose(out, ref, atol=1e-4)
    assert "arith2pc" in _protocols(bundle)


def test_conv_of_large_values_right_on_128():
    """Pixel values around 2e3 and kernel weights around 30: products summed to ~1e6,
    squared by the next layer's x * x to ~1e12 -- beyond the 64-bit ring at 18 fraction
    bits, within 128 bits at 40."""
    def f(x, k):
        y = jax.lax.conv_general_dilated(x, k, (1, 1), "SAME")
        return y * y
    x = (RNG.uniform(1e3, 3e3, (1, 2, 5, 5))).astype(np.float32)
    k = (RNG.uniform(-30, 30, (2, 2, 3, 3))).astype(np.float32)
    _, out, ref = _run(f, {"x": (C.p1, x), "k": (C.p2, k)})
    np.testing.assert_allclose(out, ref, rtol=1e-5)


def test_conv_with_the_masking_protocol():
    """The kernel owned by one party: with ``masking`` preferred the conv runs as its
    owner's local product of the opened masked image."""
    def f(x, k):
        return jax.lax.conv_general_dilated(x, k, (2, 2), "SAME",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))
    x = RNG.standard_normal((2, 7, 7, 3)).astype(np.float32)
    k = (RNG.standard_normal((3, 3, 3, 5)) * 0.3).astype(np.float32)
    bundle, out, ref = _run(f, {"x": (C.p1, x), "k": (C.p2, k)}, prefer=("masking",))
    np.testing.assert_allclose(out, ref, atol=1e-4)
    assert _protocols(bundle) == ["masking"]
