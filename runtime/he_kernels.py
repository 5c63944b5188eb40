"""The C kernels of ``csrc/he.c`` (cffi), for the ``runtime.he`` modules."""

try:
    from mixc._ckernels import ffi, lib
except ImportError as exc:  # pragma: no cover - only without a build
    raise ImportError(
        "mixc's C kernels (mixc._ckernels) are not built; run `pip install -e .` "
        "or `python csrc/build_kernels.py` from the repository root"
    ) from exc
