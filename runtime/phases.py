"""Offline and online parts of a bundle's party programs.

A node is *online* when it depends on an input: it is an ``input`` (or a
plaintext ``call``) -- except inputs named *static*, known before the query
(a server's model weights: what the seed patent's offline phase may use) --,
reads an online value, is a ``recv`` of a value its
sender computed online, or is one half of a two-party OT call (``ot.*``,
matched by peer and ``seq``) whose other half is online. Everything else --
key generation, PRG draws, OT sessions, triples, HE-made matrix triples,
truncation bits -- is *offline*: it could run before the inputs exist.

``offline_first(programs)`` reorders every party's program so that its
offline nodes come first (each part in program order) and returns the
reordered programs with the index where each online part starts. The
reordering keeps every data dependency (no offline node reads an online
value), pairs every offline send with an offline recv (and OT calls with
their peer's), and keeps both parties' OT calls in one common order, so the
programs still run without deadlock. The benchmarks time the two parts
separately with ``PartyExecutor.run(checkpoint=...)``.
"""
from __future__ import annotations


def online_nodes(programs, static=()):
    """{party: set of indices of online nodes} (a fixpoint across the parties).
    ``static``: names of inputs known before the query (e.g. a server's model weights):
    what depends only on them counts as offline."""
    online = {p: set() for p in programs}
    sends = {}  # (from, to, tag) -> (party, index)
    ot_calls = {}  # (party, peer, seq) -> index
    for p, m in programs.items():
        for i, n in enumerate(m.nodes):
            if n.op == "send":
                sends[(p, n.attrs["to"], n.attrs["tag"])] = i
            elif n.op.startswith("ot.") and "seq" in n.attrs:
                ot_calls[(p, n.attrs["peer"], n.attrs["seq"])] = i
    changed = True
    while changed:
        changed = False
        for p, m in programs.items():
            hot = set()  # online values of this party
            for i, n in enumerate(m.nodes):
                on = i in online[p] or n.op == "call" \
                    or (n.op == "input" and n.attrs["name"] not in static) \
                    or any(v in hot for v in n.operands)
                if not on and n.op == "recv":
                    src = sends.get((n.attrs["from"], p, n.attrs["tag"]))
                    on = src is not None and src in online[n.attrs["from"]]
                if not on and n.op.startswith("ot.") and "seq" in n.attrs:
                    twin = ot_calls.get((n.attrs["peer"], p, n.attrs["seq"]))
                    on = twin is not None and twin in online[n.attrs["peer"]]
                if on:
                    hot.update(n.results)
                    if i not in online[p]:
                        online[p].add(i)
                        changed = True
    return online


def offline_first(programs, static=()):
    """({party: program with its offline nodes first}, {party: index of its first online
    node}). The programs are copies; values keep their identity. ``static``: see
    ``online_nodes``."""
    online = online_nodes(programs, static)
    out, split = {}, {}
    for p, m in programs.items():
        first = [n for i, n in enumerate(m.nodes) if i not in online[p]]
        second = [n for i, n in enumerate(m.nodes) if i in online[p]]
        copy = m.fresh()
        copy.name, copy.devices = m.name, dict(m.devices)
        copy.nodes = first + second
        out[p], split[p] = copy, len(first)
    return out, split


def simulate_phased(bundle, inputs, timeout=300.0, static=()):
    """Run a bundle like ``mixc.bundle.simulate`` (one thread per party, in-process links),
    offline part first: every party runs its offline nodes, all wait for each other, then
    run their online nodes. -> (outputs, report) with report = {"offline_s", "online_s",
    "offline_bytes": {party: n}, "online_bytes": {party: n}} (link payload bytes sent,
    OT subprotocol traffic and key agreement included; key agreement counts as offline)."""
    import threading
    import time

    import numpy as np

    from mixc.bundle import _is_peer_loss, inputs_by_party, restructure
    from .executor import PartyExecutor
    from .links import InProcessHub

    programs, split = offline_first(bundle.programs, static)
    per_party = inputs_by_party(bundle.manifest, inputs)
    parties = list(bundle.parties)
    hub = InProcessHub(parties, timeout=timeout)
    links = {p: hub.link(p) for p in parties}
    executors = {p: PartyExecutor(programs[p], p, links[p], per_party[p]) for p in parties}
    barrier = threading.Barrier(len(parties))
    marks, offline_bytes, results, errors = {}, {}, {}, {}

    def work(party):
        def checkpoint():
            offline_bytes[party] = int(links[party].stats()["bytes_sent_total"])
            marks[party] = time.perf_counter()
            if barrier.wait() == 0:
                marks["online"] = time.perf_counter()
        try:
            results[party] = executors[party].run(checkpoint=(split[party], checkpoint))
        except BaseException as e:  # noqa: BLE001 - reported below, others are woken
            errors[party] = e
            barrier.abort()
            hub.abort(party, f"{type(e).__name__}: {e}")

    start = time.perf_counter()
    threads = [threading.Thread(target=work, args=(p,), name=f"mixc-{p}") for p in parties]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    end = time.perf_counter()
    stats = {p: links[p].stats() for p in parties}
    for link in links.values():
        link.close()
    if errors:
        root = next((e for e in errors.values()
                     if not _is_peer_loss(e) and not isinstance(e, threading.BrokenBarrierError)),
                    next(iter(errors.values())))
        raise root
    merged = {}
    for outs in results.values():
        merged.update(outs)
    report = {"offline_s": marks["online"] - start, "online_s": end - marks["online"],
              "offline_bytes": offline_bytes,
              "online_bytes": {p: int(stats[p]["bytes_sent_total"]) - offline_bytes[p]
                               for p in parties}}
    return restructure(bundle.manifest, {k: np.asarray(v) for k, v in merged.items()}), report
