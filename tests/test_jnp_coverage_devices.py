"""scripts/jnp_coverage.py on every kind of MPC device (``--devices``) and its per-device
summary (``--summary``): the rows it writes are what mixc does there, against plain JAX.

The functions swept here are the ones that were wrong only away from the default device:
``diag`` (a public mask in a select) crashed on three parties, where integer bitwise ops
and convolutions had no protocol; ``argmax`` came back with shape (1,) and ``exp`` failed
at run time on the 128-bit ring.
"""
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import jnp_coverage  # noqa: E402

ROW = "| `{}` | {} |"


def sweep(tmp_path, devices, names):
    out = tmp_path / (Path(devices).stem + ".md")
    assert jnp_coverage.main(["--devices", devices, "-o", str(out), *names]) == 0
    return out


@pytest.mark.parametrize("devices, expected", [
    ("examples/three_party.devices", {"diag": "supported", "tril": "supported",
                                      "bitwise_and": "supported", "convolve": "supported",
                                      "argwhere": "compile error"}),
    ("examples/two_party_ring128.devices", {"argmax": "supported", "exp": "supported",
                                            "count_nonzero": "supported"}),
])
def test_sweep_on_other_devices(tmp_path, devices, expected):
    text = sweep(tmp_path, devices, list(expected)).read_text()
    assert f"MPC device of `{devices}`" in text
    for name, status in expected.items():
        assert ROW.format(name, status) in text, name


def test_summary_counts_each_table(tmp_path):
    table = sweep(tmp_path, "examples/three_party.devices", ["diag", "argwhere", "arange"])
    target = tmp_path / "coverage.md"
    shutil.copy(ROOT / "docs" / "jnp_coverage.md", target)
    rows_before = jnp_coverage.TABLE_ROW.findall(target.read_text())
    jnp_coverage.write_summary([table], target)
    jnp_coverage.write_summary([table, table], target)      # replaces its own block
    text = target.read_text()
    assert text.count(jnp_coverage.SUMMARY_START) == 1
    assert text.count("| `examples/three_party.devices` | 3 | 1 | 1 | 0 | 1 |") == 2
    assert jnp_coverage.TABLE_ROW.findall(text) == rows_before


def test_summary_refuses_other_files(tmp_path):
    other = tmp_path / "notes.md"
    other.write_text("# notes\n")
    with pytest.raises(SystemExit, match="notes.md: not a table written by this script"):
        jnp_coverage.summarize([other])
