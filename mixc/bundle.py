"""Build a program into a bundle; simulate it; save and load bundles.

A bundle is what ``mixc build`` writes to a directory:

- ``global.mir``: the whole program after every pass (each node at a party);
- ``after/<pass>.mir``: the global IR after each pass (``mixc show --after``);
- ``<party>.mir``: each party's own program, which its executor runs;
- ``graph.dot``: the global IR as a Graphviz graph, coloured by device;
- ``graph.html``: a self-contained page (inline SVG) of the global graph and
  each party's graph, coloured by device and share kind, with the audit;
- ``audit.txt``: the leakage report; ``manifest.json``: inputs, outputs, hash.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping
import json
import threading
from pathlib import Path

import numpy as np

from .errors import InputError, MixcError
from .ir.core import collector_paused
from .ir.parser import parse_module
from .ir.printer import print_module
from .passes import partition, run_pipeline

MANIFEST = "manifest.json"


class PrintedStages(Mapping):
    """Pass name -> printed global IR after it, printed on first use: the lowered
    program of a long training loop has 10^5 lines, which simulate never reads."""

    def __init__(self, modules):
        self._modules = dict(modules)  # name -> Module or already printed text
        self._texts = {}

    def __getitem__(self, name):
        if name not in self._texts:
            m = self._modules[name]
            self._texts[name] = m if isinstance(m, str) else print_module(m)
        return self._texts[name]

    def __iter__(self):
        return iter(self._modules)

    def __len__(self):
        return len(self._modules)

    def module(self, name):
        """The Module after pass ``name`` if this build kept it (None if only its text)."""
        m = self._modules.get(name)
        return None if m is None or isinstance(m, str) else m


class Bundle:
    def __init__(self, name, stages, programs, manifest):
        self.name = name
        self.stages = stages        # pass name -> printed global IR after it
        self.programs = programs    # party -> Module
        self.manifest = manifest
        self._texts = {}

    @property
    def parties(self):
        return tuple(self.manifest["parties"])

    def text(self, party) -> str:
        if party not in self.programs:
            raise MixcError(f"no party {party!r} in this bundle (parties: {', '.join(self.parties)})")
        if party not in self._texts:
            self._texts[party] = print_module(self.programs[party])
        return self._texts[party]

    @property
    def hash(self) -> str:
        """sha256 over every party's program text; also filled in the manifest."""
        if "hash" not in self.manifest:
            texts = {p: self.text(p) for p in self.programs}
            self.manifest["hash"] = program_hash(texts)
            self.manifest["party_hashes"] = {p: text_hash(t) for p, t in texts.items()}
        return self.manifest["hash"]

    def audit(self) -> str:
        return self.manifest["audit"]

    def html(self) -> str:
        """``graph.html``: the global and per-party graphs, self-contained (see mixc.audit)."""
        from .audit import html_view
        graph = getattr(self, "graph_module", None)
        if graph is None and "select_protocols" in self.stages:  # a loaded bundle
            graph = parse_module(self.stages["select_protocols"])
        if graph is None:
            return ""
        return html_view(self.name, graph, self.programs, self.audit())

    @collector_paused()
    def save(self, directory):
        d = Path(directory)
        (d / "after").mkdir(parents=True, exist_ok=True)
        for name, text in self.stages.items():
            (d / "after" / f"{name}.mir").write_text(text)
        (d / "global.mir").write_text(self.stages[list(self.stages)[-1]])  # after the last pass run
        for party in self.programs:  # none if the partition pass did not run
            (d / f"{_filename(party)}.mir").write_text(self.text(party))
        (d / "graph.dot").write_text(self.manifest["dot"])
        (d / "graph.html").write_text(self.html(), encoding="utf-8")
        (d / "audit.txt").write_text(self.audit())
        self.hash  # noqa: B018 - fills the manifest's hashes before it is written
        manifest = {k: v for k, v in self.manifest.items() if k not in ("dot", "audit")}
        (d / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        if check_disclosure(self) is not None:  # so that a run of it here need not check again
            from .disclosure import remember
            remember(d)
        return d

    @classmethod
    @collector_paused()
    def load(cls, directory, parties=None, checked=None):
        """``checked``: party -> Module that ``mixc.disclosure`` made and checked from this
        bundle (identical to the party's file), used instead of parsing the file again."""
        d = Path(directory)
        manifest = _manifest(d)
        manifest["audit"] = (d / "audit.txt").read_text() if (d / "audit.txt").exists() else ""
        manifest["dot"] = ""
        checked = checked or {}
        programs = {party: checked[party] if party in checked
                    else _party_program(d, manifest, party)
                    for party in parties or manifest["parties"]}
        stages = {}
        for f in sorted((d / "after").glob("*.mir")):
            stages[f.stem] = f.read_text()
        return cls(manifest["program"], stages, programs, manifest)


def check_programs(directory):
    """Raise unless every party's program file is the one built. A file whose sha256
    is the manifest's is the printed module itself, so only an edited one is parsed
    (for its line:col): a lowered program of 10^5 lines takes seconds to parse."""
    d = Path(directory)
    manifest = _manifest(d)
    for party in manifest["parties"]:
        _party_program(d, manifest, party, parse=False)


def _manifest(d):
    path = d / MANIFEST
    if not path.is_file():
        raise MixcError(f"{d}: not a mixc bundle (no {MANIFEST}); make one with mixc build")
    return json.loads(path.read_text())


def _party_program(d, manifest, party, parse=True):
    """``party``'s Module (None when not ``parse``), checked against the manifest's hash."""
    if party not in manifest["parties"]:
        raise MixcError(f"bundle {d} was built for parties {', '.join(manifest['parties'])}, "
                        f"not {party!r}")
    f = d / f"{_filename(party)}.mir"
    text = _read_text(f)
    want = manifest.get("party_hashes", {}).get(party)
    edited = want is not None and text_hash(text) != want
    program = parse_module(text, filename=f.name) if parse or edited else None
    if edited:
        raise MixcError(f"{f.name}: edited after mixc build (its sha256 "
                        f"{text_hash(text)[:16]}... is not the manifest's "
                        f"{want[:16]}...); rebuild the bundle")
    return program


def _read_text(f):
    """A party's IR file as text; bytes that are not UTF-8 are a ParseError at their line:col."""
    from .errors import ParseError
    raw = f.read_bytes()
    try:
        return raw.decode("utf-8").replace("\r\n", "\n")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise ParseError(f"not UTF-8 text (byte 0x{raw[e.start]:02x})", line, col,
                         filename=f.name) from None


def _filename(party):
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in party)


def text_hash(text) -> str:
    """sha256 of one party's program text (``manifest["party_hashes"]``)."""
    return hashlib.sha256(text.encode()).hexdigest()


def program_hash(texts) -> str:
    h = hashlib.sha256()
    for party in sorted(texts):
        h.update(party.encode() + b"\0" + texts[party].encode() + b"\0")
    return h.hexdigest()


@collector_paused()
def build(program, passes=None, verify_between=False, network="lan", prefer=None) -> Bundle:
    from .audit import audit_text, dot_graph
    from .protocols import NETWORKS, RULES, load
    if network not in NETWORKS:
        raise MixcError(f"unknown network profile {network!r} (known: {', '.join(NETWORKS)})")
    prefer = tuple(getattr(program, "prefer", ()) if prefer is None else prefer)
    load()
    known = sorted({r.protocol for rules in RULES.values() for r in rules})
    unknown = [p for p in prefer if p not in known]
    if unknown:
        raise MixcError(f"unknown protocol(s) {', '.join(unknown)} to prefer (known: "
                        f"{', '.join(known)})")
    module = program.trace()
    module.network = network
    module.prefer = prefer
    stages, snapshots = {}, {}

    def keep(name, m):
        # Global IR before lowering is small but later passes rewire its nodes: print it
        # now. Lowering and partition build fresh modules that nothing mutates later.
        stages[name] = m if name in ("lower", "partition") else print_module(m)
        snapshots[name] = m
    final = run_pipeline(module, passes=passes, verify_between=verify_between, keep=keep)
    programs = partition.split(final) if "partition" in snapshots else {}
    selected = snapshots.get("select_protocols")
    manifest = {
        "program": program.name,
        "parties": list(final.parties),
        "passes": list(stages),
        "inputs": _input_records(final, programs),
        "outputs": {n.attrs["name"]: n.operands[0].type.place
                    for n in final.nodes if n.op == "output"},
        "structure": program.output_structure,
        "audit": audit_text(program.name, snapshots, final) if selected is not None else "",
        "dot": dot_graph(selected or module),
    }
    bundle = Bundle(program.name, PrintedStages(stages), programs, manifest)
    bundle.cost_report = getattr(selected, "cost_report", None)
    bundle.graph_module = selected or module  # for graph.html, drawn when saved
    return bundle


def _input_records(module, programs):
    """The manifest's record of each input array: its party, dtype and shape; for a leaf
    of a tree input (named ``<parameter>/<path>``, see ``mixc.Input``) the parameter
    (``tree``) and its path in the tree (``leaf``); for an input its party encodes in
    fixed point as read, the encoding's ``frac_bits`` and ``ring_bits`` (``mixc run``
    checks the values against them when it loads the file)."""
    from .runtime.executor import encoded_inputs
    encoded = {}
    for party_program in programs.values():
        encoded.update(encoded_inputs(party_program))
    records = {}
    for n in module.nodes:
        if n.op != "input":
            continue
        name = n.attrs["name"]
        record = {"party": n.results[0].type.place, "dtype": n.attrs["dtype"],
                  "shape": list(n.attrs["shape"])}
        tree, is_leaf, path = name.partition("/")
        if is_leaf:
            record.update(tree=tree, leaf=path)
        if name in encoded:
            record.update(zip(("frac_bits", "ring_bits"), encoded[name]))
        records[name] = record
    return records


def input_trees(manifest):
    """Tree parameter -> the input names of its leaves, in the manifest's order."""
    trees = {}
    for name, spec in manifest["inputs"].items():
        if "tree" in spec:
            trees.setdefault(spec["tree"], []).append(name)
    return trees


def grouped_input_names(manifest, names):
    """Input names for a message, sorted: a tree parameter all of whose leaves are
    among ``names`` is named once, as the parameter."""
    names = list(names)
    for tree, leaves in input_trees(manifest).items():
        if all(leaf in names for leaf in leaves):
            names = [tree] + [n for n in names if n not in leaves]
    return sorted(names)


def input_party(manifest, name):
    """The party owning input ``name`` (an input array or a tree parameter)."""
    declared = manifest["inputs"]
    return declared[name if name in declared else input_trees(manifest)[name][0]]["party"]


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
    """Party -> its inputs by name. A tree parameter's value is the pytree of arrays
    its ``mixc.Input`` declared (one array per leaf); a leaf may also be given alone
    by its input name (``params/w``)."""
    declared = manifest["inputs"]
    inputs = _flatten_trees(manifest, inputs)
    missing = sorted(set(declared) - set(inputs))
    if missing:
        raise InputError(f"missing input(s) {', '.join(grouped_input_names(manifest, missing))}")
    unknown = sorted(set(inputs) - set(declared))
    if unknown:
        raise InputError(f"unknown input(s) {', '.join(unknown)} (the program takes "
                         f"{', '.join(grouped_input_names(manifest, declared))})")
    out = {p: {} for p in manifest["parties"]}
    for name, spec in declared.items():
        out[spec["party"]][name] = inputs[name]
    return out


def _flatten_trees(manifest, inputs):
    """``inputs`` with each tree parameter's pytree replaced by its leaves' arrays."""
    trees = input_trees(manifest)
    flat = {}
    for name, value in inputs.items():
        leaves = _tree_leaves(manifest, name, value, trees[name]) if name in trees \
            else {name: value}
        for leaf, array in leaves.items():
            if leaf in flat:
                raise InputError(f"input {leaf!r} given twice (alone and in its tree)")
            flat[leaf] = array
    return flat


def _tree_leaves(manifest, name, value, declared):
    """Leaf input name -> array of the pytree ``value`` given for tree parameter ``name``."""
    import jax
    from .frontend import leaf_path
    paths = [manifest["inputs"][leaf]["leaf"] for leaf in declared]
    pairs, _ = jax.tree_util.tree_flatten_with_path(value)
    given = {leaf_path(path): array for path, array in pairs}
    if "" in given:
        raise InputError(f"input {name!r} is a tree with leaves {', '.join(paths)}: give the "
                         f"same tree of arrays, not one {type(value).__name__}")
    extra = sorted(set(given) - set(paths))
    if extra:
        raise InputError(f"input {name!r} has leaf {extra[0]!r}, which the program does not "
                         f"declare (its leaves: {', '.join(paths)})")
    missing = [p for p in paths if p not in given]
    if missing:
        raise InputError(f"input {name!r} has no leaf {missing[0]!r} (its leaves: "
                         f"{', '.join(paths)})")
    return {f"{name}/{path}": given[path] for path in paths}


def simulate(bundle, inputs, timeout=120.0, stats=None, check_ranges=True):
    """Run every party's program in its own thread over in-process links.

    ``check_ranges``: reconstruct the secret values and warn (``mixc.RangeWarning``, once
    per source line) where one leaves the range its op is right in
    (``mixc.runtime.sanitizer``)."""
    from .runtime.executor import PartyExecutor
    from .runtime.links import InProcessHub
    per_party = inputs_by_party(bundle.manifest, inputs)
    sanitizer = None
    if check_ranges:
        from .runtime.sanitizer import RangeSanitizer
        sanitizer = RangeSanitizer(bundle)
    check_disclosure(bundle)  # after the sanitizer's check that the programs are the lowering
    hub = InProcessHub(list(bundle.parties), timeout=timeout)
    links = {p: hub.link(p) for p in bundle.parties}
    make = PartyExecutor if sanitizer is None else sanitizer.executor
    executors = {p: make(bundle.programs[p], p, links[p], per_party[p]) for p in bundle.parties}
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
    if sanitizer is not None:
        sanitizer.warn()
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


def check_disclosure(bundle):
    """``mixc.disclosure.check`` of a built bundle's party programs against its global
    program (once per bundle): what simulate runs discloses no more than the program's
    reveals and explicit tos. The Report, or None for a bundle without both, or one
    loaded from a directory (``mixc run`` checks those with mixc.disclosure.check_bundle,
    which also holds their programs to the compiler's)."""
    built = hasattr(bundle, "graph_module")
    if built and getattr(bundle, "_disclosure", None) is None and bundle.programs \
            and "select_protocols" in bundle.stages:
        from .disclosure import check_built
        bundle._disclosure = check_built(bundle)
    return getattr(bundle, "_disclosure", None)


def _is_peer_loss(e):
    from .errors import PeerError
    return isinstance(e, PeerError)
