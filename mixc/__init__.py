"""mixc: compile JAX programs placed on devices into per-party secure programs.

The author's API (``program``, ``Input``, ``device``, ``to``, ``reveal``) lives
in ``mixc.frontend`` and needs JAX; it is imported on first use, so a party
process that only runs a compiled program starts without loading JAX.
"""
import importlib

from .config import Cluster, Device, init_device
from .errors import MixcError, RangeWarning

__all__ = ["Cluster", "Device", "Input", "MixcError", "Program", "RangeWarning", "device", "dp",
           "fori_loop", "init_device", "plaintext_to", "program", "reveal", "to"]
__version__ = "0.1.0"

_FRONTEND = ("Input", "Program", "device", "fori_loop", "plaintext_to", "program", "reveal", "to")


def __getattr__(name):
    if name in _FRONTEND:
        return getattr(importlib.import_module(".frontend", __name__), name)
    if name == "dp":
        return importlib.import_module(".dp", __name__)
    raise AttributeError(f"module 'mixc' has no attribute {name!r}")
