"""mixc: compile JAX programs placed on devices into per-party secure programs."""
from . import dp
from .config import Cluster, Device, init_device
from .errors import MixcError
from .frontend import Input, Program, device, plaintext_to, program, reveal, to

__all__ = ["Cluster", "Device", "Input", "MixcError", "Program", "device", "dp", "init_device",
           "plaintext_to", "program", "reveal", "to"]
__version__ = "0.1.0"
