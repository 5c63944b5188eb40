"""Run ../shared/peer/spu_peer.py unchanged, except that SPU's in-memory link waits up to
1 h per message instead of 30 s: on a loaded 2-core machine a cheetah step can exceed the
30 s default and the run aborts with "Get data timeout".

    /tmp/spu-venv/bin/python benchmarks/spu_peer_timeout.py matmul_512 mlp_infer_64 --protocol cheetah
"""
import os
import runpy
import sys

import spu.libspu as libspu

PEER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared",
                    "peer", "spu_peer.py")

_Desc = libspu.link.Desc


def _desc(*a, **k):
    d = _Desc(*a, **k)
    d.recv_timeout_ms = 3600 * 1000
    return d


libspu.link.Desc = _desc
sys.argv = [PEER] + sys.argv[1:]
runpy.run_path(PEER, run_name="__main__")
