"""Build a program into a bundle; simulate it; save and load bundles.

A bundle is what ``mixc build`` writes to a directory:

- ``global.mir``: the whole program after every pass (each node at a party);
- ``after/<pass>.mir``: the global IR after each pass (``mixc show --after``);
- ``<party>.mir``: each party's own program, which its executor runs;
- ``graph.dot``: the global IR as a Graphviz graph, coloured by device;
- ``audit.txt``: the leakage report; ``manifest.json``: inputs, outputs, hash.
"""
from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import numpy as np

from .errors import InputError, MixcError
from .ir.parser import parse_module
from .ir.printer import print_module
from .passes import PIPELINE, partition, run_pipeline

MANIFEST = "manifest.json"


class Bundle:
    def __init__(self, name, stages, programs, manifest):
        self.name = name
        self.stages = stages        # pass name -> printed global IR after it
        self.programs = programs    # party -> Module
        self.manifest = manifest

    @property
    def parties(self):
        return tuple(self.manifest["parties"])

    def text(self, party) -> str:
        if party not in self.programs:
            raise MixcError(f"no party {party!r} in this bundle (parties: {', '.join(self.parties)})")
        return print_module(self.programs[party])

    @property
    def hash(self) -> str:
        return self.manifest["hash"]

    def audit(self) -> str:
        return self.manifest["audit"]

    def save(self, directory):
        d = Path(directory)
        (d / "after").mkdir(parents=True, exist_ok=True)
        for name, text in self.stages.items():
            (d / "after" / f"{name}.mir").write_text(text)
        (d / "global.mir").write_text(self.stages[list(self.stages)[-1]])  # after the last pass run
        for party in self.programs:  # none if the partition pass did not run
            (d / f"{_filename(party)}.mir").write_text(self.text(party))
        (d / "graph.dot").write_text(self.manifest["dot"])
        (d / "audit.txt").write_text(self.audit())
        manifest = {k: v for k, v in self.manifest.items() if k not in ("dot", "audit")}
        (d / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        return d

    @classmethod
    def load(cls, directory, parties=None):
        d = Path(directory)
        path = d / MANIFEST
        if not path.is_file():
            raise MixcError(f"{d}: not a mixc bundle (no {MANIFEST}); make one with mixc build")
        manifest = json.loads(path.read_text())
        manifest["audit"] = (d / "audit.txt").read_text() if (d / "audit.txt").exists() else ""
        manifest["dot"] = ""
        programs = {}
        for party in parties or manifest["parties"]:
            if party not in manifest["parties"]:
                raise MixcError(f"bundle {d} was built for parties {', '.join(manifest['parties'])}, "
                                f"not {party!r}")
            f = d / f"{_filename(party)}.mir"
            programs[party] = parse_module(f.read_text(), filename=f.name)
        stages = {}
        for f in sorted((d / "after").glob("*.mir")):
            stages[f.stem] = f.read_text()
        return cls(manifest["program"], stages, programs, manifest)


def _filename(party):
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in party)


def program_hash(texts) -> str:
    h = hashlib.sha256()
    for party in sorted(texts):
        h.update(party.encode() + b"\0" + texts[party].encode() + b"\0")
    return h.hexdigest()


def build(program, passes=None, verify_between=False, network="lan") -> Bundle:
    from .audit import audit_text, dot_graph
    from .protocols import NETWORKS
    if network not in NETWORKS:
        raise MixcError(f"unknown network profile {network!r} (known: {', '.join(NETWORKS)})")
    module = program.trace()
    module.network = network
    stages, snapshots = {}, {}

    def keep(name, m):
        stages[name] = print_module(m)
        snapshots[name] = m
    final = run_pipeline(module, passes=passes, verify_between=verify_between, keep=keep)
    programs = partition.split(final) if "partition" in snapshots else {}
    texts = {p: print_module(m) for p, m in programs.items()}
    selected = snapshots.get("select_protocols")
    manifest = {
        "program": program.name,
        "parties": list(final.parties),
        "passes": list(stages),
        "inputs": {n.attrs["name"]: {"party": n.results[0].type.place,
                                     "dtype": n.attrs["dtype"], "shape": list(n.attrs["shape"])}
                   for n in final.nodes if n.op == "input"},
        "outputs": {n.attrs["name"]: n.operands[0].type.place
                    for n in final.nodes if n.op == "output"},
        "structure": program.output_structure,
        "hash": program_hash(texts),
        "audit": audit_text(program.name, snapshots, final) if selected is not None else "",
        "dot": dot_graph(selected or module),
    }
    bundle = Bundle(program.name, stages, programs, manifest)
    bundle.cost_report = getattr(selected, "cost_report", None)
    return bundle


def restructure(manifest, outputs):
    """Outputs by name back into the structure the program returned."""
    names = list(manifest["outputs"])
    kind = manifest["structure"]
    if kind == "dict":
        return {n: outputs[n] for n in names}
    if kind == "tuple":
        return tuple(outputs[n] for n in names)
    if kind == "single":
        return outputs[names[0]]
    return None


def inputs_by_party(manifest, inputs):
    declared = manifest["inputs"]
    missing = sorted(set(declared) - set(inputs))
    if missing:
        raise InputError(f"missing input(s) {', '.join(missing)}")
    unknown = sorted(set(inputs) - set(declared))
    if unknown:
        raise InputError(f"unknown input(s) {', '.join(unknown)} (the program takes "
                         f"{', '.join(declared)})")
    out = {p: {} for p in manifest["parties"]}
    for name, spec in declared.items():
        out[spec["party"]][name] = inputs[name]
    return out


def simulate(bundle, inputs, timeout=120.0, stats=None):
    """Run every party's program in its own thread over in-process links."""
    from .runtime.executor import PartyExecutor
    from .runtime.links import InProcessHub
    per_party = inputs_by_party(bundle.manifest, inputs)
    hub = InProcessHub(list(bundle.parties), timeout=timeout)
    links = {p: hub.link(p) for p in bundle.parties}
    executors = {p: PartyExecutor(bundle.programs[p], p, links[p], per_party[p])
                 for p in bundle.parties}
    results, errors = {}, {}

    def work(party):
        try:
            results[party] = executors[party].run()
        except BaseException as e:  # noqa: BLE001 - reported below, others are woken
            errors[party] = e
            hub.abort(party, f"{type(e).__name__}: {e}")
    threads = [threading.Thread(target=work, args=(p,), name=f"mixc-{p}") for p in bundle.parties]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if stats is not None:
        stats.update({p: links[p].stats() for p in bundle.parties})
    for link in links.values():
        link.close()
    if errors:
        # The first party to fail is the cause; the others only lost their peer.
        root = next((e for e in errors.values() if not _is_peer_loss(e)), next(iter(errors.values())))
        raise root
    merged = {}
    for party_outputs in results.values():
        merged.update(party_outputs)
    return restructure(bundle.manifest, {k: np.asarray(v) for k, v in merged.items()})


def _is_peer_loss(e):
    from .errors import PeerError
    return isinstance(e, PeerError)
