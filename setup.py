"""Only here for cffi: builds the C kernels (csrc/) into mixc._ckernels.

All project metadata lives in pyproject.toml.
"""
from setuptools import setup

setup(cffi_modules=["csrc/build_kernels.py:ffibuilder"])
