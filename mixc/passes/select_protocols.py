"""Select protocols: every op names the protocol that will run it.

Invariant established: every node carries ``protocol``, naming a rule in
``mixc.protocols.RULES`` for its op that accepts its operands' kinds, and
its results have the kind that rule produces; where a rule wants its secret
operands in the other share kind, an ``a2b``/``b2a`` conversion node sits in
between.

The choice is made over the whole graph, not op by op. Every secret MPC
value gets a share kind, arithmetic or boolean. A node's cost for a kind is
its cheapest rule producing that kind; an edge costs a conversion when the
consumer's rule wants the producer's value in the other kind. Costs are the
protocols' own declarations (bytes, rounds) turned into seconds by the
module's network profile (``module.network``: lan or wan). With two kinds
and conversion costs on edges this is a binary labelling problem with
submodular pairwise terms, so a minimum s-t cut (networkx) finds the exact
minimum of the total estimated time.

Private values (kind ``private``: plaintext one MPC party holds alone, see
``protocols.private``) are decided first, by ``assign_private``: a party's
input stays private when a reader is strictly cheaper with it that way (the
masking protocol reads the server's weights unshared). Private values are
not labelled by the cut; a rule that wants shares of one gets a ``share``
conversion (private -> arith, free: PRG words from the pairwise key; then
a2b when it wants boolean shares), its cost added to the rule's.

An author may prefer protocols (``@mixc.program(prefer=("masking",))``,
``mixc build --prefer masking``): a preferred protocol's estimated time counts
as zero, so it is chosen wherever it applies; the cost report still shows
its declared bytes and rounds.
"""
import networkx as nx

from ..errors import MixcError
from ..ir.core import Node
from ..protocols import NETWORKS, Cost, CostReport, rules_for
from ..protocols.private import assign_private

SECRET_KINDS = ("arith", "bool")
CONVERSION = {("arith", "bool"): "a2b", ("bool", "arith"): "b2a", ("private", "arith"): "share"}
INFINITE = 1e12


def _device(module, node):
    v = node.results[0] if node.results else node.operands[0]
    return module.devices[v.type.place]


class _Selector:
    def __init__(self, module):
        self.module = module
        self.profile = NETWORKS[module.network]
        self.prefer = frozenset(getattr(module, "prefer", ()) or ())
        self.secret = set()  # MPC values whose share kind is to be chosen

    def seconds(self, rule, node, kinds):
        """Estimated time of ``rule`` on ``node`` if its operands had ``kinds`` (zero for
        a protocol the author prefers: ``module.prefer``, e.g. ``("masking",)``)."""
        if rule.protocol in self.prefer:
            return 0.0
        saved = [v.type for v in node.operands]
        try:
            for v, k in zip(node.operands, kinds):
                v.type = v.type.with_(kind=k)
            return self.profile.seconds(rule.cost(node, self.module))
        finally:
            for v, t in zip(node.operands, saved):
                v.type = t

    def wanted_kinds(self, rule, node):
        return tuple(rule.wants if (v in self.secret and rule.wants) else v.type.kind
                     for v in node.operands)

    def options(self, node):
        """Rules that can run ``node``, each with the operand kinds it wants (and the
        estimated seconds, including shares made of private operands)."""
        device = _device(self.module, node)
        out = []
        for rule in rules_for(node.op):
            if rule.device != device.kind:
                continue
            kinds = self.wanted_kinds(rule, node)
            variants = [(kinds, 0.0)]
            if rule.wants and "private" in kinds and any(  # shares of them instead (on MPC)
                    k == "private" and self.module.devices[v.type.place].kind == "MPC"
                    for v, k in zip(node.operands, kinds)):
                shared = tuple(rule.wants if k == "private" else k for k in kinds)
                extra = sum(self.conversion(v, "private", rule.wants)[1]
                            for v, k in zip(node.operands, kinds) if k == "private")
                variants.append((shared, extra))
            for kinds, extra in variants:
                if self._accepts(rule, node, kinds):
                    out.append((rule, kinds, self.seconds(rule, node, kinds) + extra))
                    break
        return out

    def _accepts(self, rule, node, kinds):
        saved = [v.type for v in node.operands]
        try:
            for v, k in zip(node.operands, kinds):
                v.type = v.type.with_(kind=k)
            return rule.accepts(kinds, node, self.module)
        finally:
            for v, t in zip(node.operands, saved):
                v.type = t

    def conversion(self, value, src, dst):
        """(rule, seconds) of converting ``value`` from share kind src to dst."""
        if src == dst:
            return None, 0.0
        if src == "private" and dst != "arith":  # share, then convert the shares
            first, t1 = self.conversion(value, "private", "arith")
            _, t2 = self.conversion(value, "arith", dst)
            return first, t1 + t2
        op = CONVERSION[(src, dst)]
        probe = Node(op, (value,), (value,))
        best = None
        for rule in rules_for(op):
            # a rule that does not run here (e.g. a dealer rule on an offline: he device)
            if rule.result_kind != dst or not self._accepts(rule, probe, (src,)):
                continue
            t = self.seconds(rule, probe, (src,))
            if best is None or t < best[1]:
                best = (rule, t)
        return best if best else (None, INFINITE)


STRUCTURAL = ("loop", "yield")  # they move values; the ops around them do the work


def _weights(nodes, times, out):
    """Each node's number of runs: the product of the trip counts of the loops around it."""
    for node in nodes:
        out[node] = times
        if node.body is not None:
            _weights(node.body.nodes, times * node.attrs["trip_count"], out)
    return out


def _scaled(cost, times):
    return cost.times(times)


def run(module):
    sel = _Selector(module)
    report = CostReport(sel.profile)
    weights = _weights(module.nodes, 1, {})
    for node in weights:
        values = list(node.results) + list(node.body.args if node.body is not None else ())
        for r in values:
            if module.devices[r.type.place].kind == "MPC" and r.type.kind != "public":
                sel.secret.add(r)
    sel.secret.difference_update(assign_private(module, sel))
    choices = {node: sel.options(node) for node in weights if node.op not in STRUCTURAL}
    for node, opts in choices.items():
        if not opts:
            device = _device(module, node)
            kinds = ", ".join(v.type.kind for v in node.operands) or "no operands"
            raise MixcError(f"{node.loc or '<program>'}: no protocol implements {node.op} on "
                            f"{device.kind} device {device.name} for operands ({kinds})")
    labels = _label(sel, module, choices, weights)
    out = module.fresh()
    _Rewrite(sel, module, choices, labels, weights, report).nodes(module.nodes, out.nodes)
    out = out.renumbered()
    out.cost_report = report
    return out


class _Rewrite:
    """Each node gets its chosen rule; conversions go where the kinds differ (before a
    loop for what enters it, before its ``yield`` for what goes round again)."""

    def __init__(self, sel, module, choices, labels, weights, report):
        self.sel, self.module, self.choices, self.labels = sel, module, choices, labels
        self.weights, self.report = weights, report

    def convert(self, v, want, node, out, times):
        """``v`` in kind ``want`` (a conversion node appended to ``out``, once per value)."""
        sel, labels = self.sel, self.labels
        converted = self.converted
        have = labels.get(v, v.type.kind)
        if have == "private" and want in ("arith", "bool"):  # share it (cached per value)
            if (v, "arith") not in converted:
                converted[(v, "arith")] = self._conversion(v, "private", "arith", node, out, times)
            v, have = converted[(v, "arith")], "arith"
            labels[v] = have
            sel.secret.add(v)
        if v in sel.secret and have != want and want in ("arith", "bool"):
            key = (v, want)
            if key not in converted:
                converted[key] = self._conversion(v, have, want, node, out, times)
            v = converted[key]
        return v

    def _conversion(self, v, have, want, node, out, times):
        rule, _ = self.sel.conversion(v, have, want)
        conv = Node(rule.op, (v,), (self.module.new_value(v.type.with_(kind=want)),),
                    {"protocol": rule.protocol}, node.loc)
        out.append(conv)
        self.report.rows.append((conv.result.id, conv.op, rule.protocol,
                                 _scaled(rule.cost(conv, self.module), times), node.loc))
        return conv.result

    def nodes(self, nodes, out):
        self.converted = {}
        for node in nodes:
            if node.op == "loop":
                self.loop(node, out)
                continue
            if node.op == "yield":
                out.append(node)
                continue
            rule, kinds = _pick(self.sel, node, self.choices[node], self.labels)
            times = self.weights[node]
            node.operands = tuple(self.convert(v, want, node, out, times)
                                  for v, want in zip(node.operands, kinds))
            node.attrs["protocol"] = rule.protocol
            for r in node.results:
                r.type = r.type.with_(kind=rule.result_kind)
            out.append(node)
            self.report.rows.append((node.results[0].id if node.results else None, node.op,
                                     rule.protocol, _scaled(rule.cost(node, self.module), times),
                                     node.loc))

    def loop(self, node, out):
        """A loop's values keep one kind: what enters is converted before it, what its
        body yields is converted inside, before the ``yield``."""
        body, labels = node.body, self.labels
        for a in body.args:
            if a in labels:
                a.type = a.type.with_(kind=labels[a])
        times = self.weights[node]
        node.operands = tuple(self.convert(v, a.type.kind, node, out, times)
                              for v, a in zip(node.operands, body.args))
        saved = self.converted
        inner = []
        self.nodes(body.nodes[:-1], inner)
        end = body.nodes[-1]
        carried = body.args[node.attrs["captures"]:]
        end.operands = tuple(self.convert(v, a.type.kind, end, inner, self.weights[end])
                             for v, a in zip(end.operands, carried))
        inner.append(end)
        body.nodes = inner
        self.converted = saved
        for r, a in zip(node.results, carried):
            r.type = r.type.with_(kind=a.type.kind)
        out.append(node)


def _pick(sel, node, options, labels):
    """The cheapest rule for the node given its result's and operands' chosen kinds."""
    best = None
    want_result = labels.get(node.results[0]) if node.results else None
    if want_result is None and node.results and node.results[0].type.kind == "private":
        want_result = "private"
    for rule, kinds, seconds in options:
        if want_result is not None and rule.result_kind != want_result:
            continue
        total = seconds
        for v, k in zip(node.operands, kinds):
            if v in sel.secret:
                total += sel.conversion(v, labels[v], k)[1]
        if best is None or total < best[2]:
            best = (rule, kinds, total)
    return best[0], best[1]


def _label(sel, module, choices, weights):
    """Share kind of every secret MPC value, minimising total estimated time (s-t min cut);
    a node in a loop counts as often as it runs."""
    if not sel.secret:
        return {}
    # unary[v][k]: cost of producing v in kind k; pair terms per (operand, consumer)
    index = {k: i for i, k in enumerate(SECRET_KINDS)}
    unary = {v: [0.0, 0.0] for v in sel.secret}
    graph = nx.DiGraph()
    graph.add_nodes_from(["s", "t"])

    def add_edge(a, b, w):
        if w <= 0:
            return
        if graph.has_edge(a, b):
            graph[a][b]["capacity"] += w
        else:
            graph.add_edge(a, b, capacity=w)

    for node, options in choices.items():
        times = weights[node]
        result = node.results[0] if node.results and node.results[0] in sel.secret else None
        secret_ops = [v for v in node.operands if v in sel.secret]
        if result is not None:
            best = {}
            for rule, kinds, seconds in options:
                k = rule.result_kind
                if k in index and (k not in best or seconds < best[k][2]):
                    best[k] = (rule, kinds, seconds)
            for k in SECRET_KINDS:
                unary[result][index[k]] += best[k][2] * times if k in best else INFINITE
            for i, v in enumerate(node.operands):
                if v not in sel.secret:
                    continue
                # E(label of v, label of result) = conversion to what result's rule wants
                table = [[0.0, 0.0], [0.0, 0.0]]
                for lv in SECRET_KINDS:
                    for lr in SECRET_KINDS:
                        want = best[lr][1][i] if lr in best else lv
                        table[index[lv]][index[lr]] = sel.conversion(v, lv, want)[1] * times
                _pairwise(unary, add_edge, v, result, table)
        else:
            # A node whose result kind is fixed: each operand's kind decides its best rule.
            for v in secret_ops:
                for k in SECRET_KINDS:
                    cost = min((seconds + sel.conversion(v, k, kinds[node.operands.index(v)])[1]
                                for rule, kinds, seconds in options), default=INFINITE)
                    unary[v][index[k]] += cost * times / len(secret_ops)
    for node in weights:
        if node.op == "loop":
            _loop_terms(sel, node, weights, unary, add_edge)
    for v, (cost_arith, cost_bool) in unary.items():
        low = min(cost_arith, cost_bool)
        add_edge("s", v, cost_bool - low)   # cut when v is boolean
        add_edge(v, "t", cost_arith - low)  # cut when v is arithmetic
    _, (source_side, _) = nx.minimum_cut(graph, "s", "t")
    return {v: ("arith" if v in source_side else "bool") for v in sel.secret}


def _loop_terms(sel, node, weights, unary, add_edge):
    """A carried value has one kind in every iteration (its argument and the loop's
    result are tied); converting what enters costs once, what goes round every time."""
    body = node.body
    carried = body.args[node.attrs["captures"]:]
    entering = [(v, a, weights[node]) for v, a in zip(node.operands, body.args)]
    going_round = [(y, a, weights[body.nodes[-1]]) for y, a in zip(body.nodes[-1].operands,
                                                                    carried)]
    for v, a, times in entering + going_round:
        if v in sel.secret and a in sel.secret:
            table = [[sel.conversion(v, lv, la)[1] * times for la in SECRET_KINDS]
                     for lv in SECRET_KINDS]
            _pairwise(unary, add_edge, v, a, table)
    for a, r in zip(carried, node.results):
        if a in sel.secret and r in sel.secret:
            add_edge(a, r, INFINITE)
            add_edge(r, a, INFINITE)


def _pairwise(unary, add_edge, u, v, e):
    """Add E(x_u, x_v) (0 = arith, 1 = bool) to the cut graph (Kolmogorov-Zabih)."""
    a, b, c, d = e[0][0], e[0][1], e[1][0], e[1][1]
    unary[u][0] += a
    unary[u][1] += c
    unary[v][1] += d - c
    # (b + c - a - d) * [x_u = 0, x_v = 1]; clamped at 0 if the term is not submodular
    add_edge(u, v, b + c - a - d)
