"""cffi build script for mixc's C kernels (API / out-of-line mode).

Used by setup.py through ``cffi_modules=["csrc/build_kernels.py:ffibuilder"]``
so ``pip install .`` / ``pip install -e .`` compile the extension module
``mixc._ckernels``.  It can also be run directly for a quick in-place build:

    python csrc/build_kernels.py      # writes mixc/_ckernels*.so

(it replaces any mixc/_ckernels*.so left by ``pip install -e .``; after
editing the C sources, rerun either this or ``pip install -e .`` -- an
editable install does not rebuild C code by itself).

The cdef declarations are read from csrc/kernels.h (the block between
``CDEF-BEGIN`` and ``CDEF-END``), so the header is the single source of truth.

Flags: -O3 -march=native (the kernels rely on AVX-512 when the build machine
has it).  No OpenMP: kernels are single-threaded because parties already run
in concurrent threads.  Set MIXC_NO_NATIVE=1 to build without -march=native
(portable binary, slower).
"""

import os
import sys

from cffi import FFI

_HERE = os.path.dirname(os.path.abspath(__file__))
_SOURCES = ["ring.c", "matmul.c", "prg.c", "bits.c", "he.c", "fused.c", "ot.c", "ring128.c"]


def _rel(path):
    """Path relative to the cwd when possible (setuptools dislikes absolute
    source paths); absolute otherwise (e.g. different drive)."""
    try:
        return os.path.relpath(path)
    except ValueError:  # pragma: no cover - Windows, different drive
        return path


def _cdef_from_header():
    with open(os.path.join(_HERE, "kernels.h"), encoding="utf-8") as f:
        text = f.read()
    start = text.index("/* CDEF-BEGIN */") + len("/* CDEF-BEGIN */")
    end = text.index("/* CDEF-END */")
    return text[start:end]


def _compile_args():
    args = ["-O3", "-std=c11", "-fno-math-errno", "-Wall"]
    if sys.platform != "win32" and not os.environ.get("MIXC_NO_NATIVE"):
        args.append("-march=native")
    return args


def _make_ffibuilder(absolute_paths):
    # setuptools wants source paths relative to the project root (the cwd of
    # a pip build); FFI.compile() chdirs into its tmpdir and needs absolute ones.
    fix = (lambda p: p) if absolute_paths else _rel
    ffi = FFI()
    ffi.cdef(_cdef_from_header())
    ffi.set_source(
        "mixc._ckernels",
        '#include "kernels.h"\n',
        sources=[fix(os.path.join(_HERE, s)) for s in _SOURCES],
        include_dirs=[fix(_HERE)],
        depends=[fix(os.path.join(_HERE, s)) for s in _SOURCES + ["kernels.h"]],
        extra_compile_args=_compile_args(),
    )
    return ffi


ffibuilder = _make_ffibuilder(absolute_paths=(__name__ == "__main__"))


if __name__ == "__main__":
    # In-place build for development: the .so lands in <repo>/mixc/.
    import shutil

    root = os.path.dirname(_HERE)
    so = ffibuilder.compile(tmpdir=os.path.join(root, "build", "cffi"), verbose=True)
    import glob

    # Remove stale builds with another ABI tag (e.g. the _ckernels.abi3.so of
    # `pip install -e .`): the interpreter would prefer one arbitrarily.
    for old in glob.glob(os.path.join(root, "mixc", "_ckernels*.so")):
        os.remove(old)
    # Same file name as setuptools gives it (the module is built against the
    # limited API by cffi), so the two build routes overwrite each other.
    name = "_ckernels.abi3.so" if so.endswith(".so") else os.path.basename(so)
    dest = os.path.join(root, "mixc", name)
    shutil.copy2(so, dest)
    print("built", dest)
