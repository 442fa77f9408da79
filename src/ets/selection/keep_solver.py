"""The exact solver of the ETS keep-program (``ilp_solver: highs``, the default).

The program (:mod:`ets.selection.ets`) keeps a non-empty set of candidates. Its
value is ``O_i + c`` per kept candidate, ``c`` per ancestor still needed, and
``b`` per cluster with a kept member. Without the cluster term it is a choice
of subtree, which a dynamic program over the tree solves exactly, every depth
of the tree at once in numpy (:func:`best_subtree`).

The cluster term couples subtrees. A cluster of one member is no coupling (its
bonus is that member's). For the others, Lagrangian relaxation: each member of
cluster ``k`` earns a multiplier ``l_k`` in ``[0, b]`` when kept, and
``DP(O + c + l) + sum_k (b - l_k)`` bounds the program from above whatever the
multipliers. With all multipliers 0 the relaxed optimum is optimal as soon as
it keeps a member of every such cluster, which is the common case. Otherwise
the clusters it leaves uncovered are *contested*, and a second dynamic program
decides them exactly (:meth:`KeepSolver.covering_program`): per node, per set
of contested clusters covered below it. Its size grows as 2**contested, so
when many clusters are contested the multipliers are first moved to settle
what they can (a cluster is settled when its relaxed optimum keeps no member
at ``l_k = b``, one member, or several at ``l_k = 0``), using the price of
keeping each candidate, which one pass down the tree gives for all of them.
Where that leaves only ties between members of clusters to be kept once, the
best-ranked member of each is the answer (:meth:`KeepSolver.designated`
checks it); otherwise the covering program decides the clusters still open.
It keeps several states only on the nodes with a contested member below, and
drops a state as soon as the Lagrangian bound on every keep-set it can end in
falls below a keep-set already met: the multipliers mostly close the bound up
to ties, so little beyond the optima survives. Past ``COMBINATIONS_PER_NODE``
pairs of states the caller hands the program to HiGHS.

Ties (docs/ets-solver.md): of the keep-sets of the highest value (within
``TIE_TOLERANCE``), the solver returns the one that keeps the better-ranked
candidate where two first differ, candidates ranked by PRM score, highest
first, then by candidate order. Both dynamic programs follow the rule exactly,
and an optimum of a relaxation whose value reaches its bound is the largest
optimum of the program: every optimum of the program is one of the relaxation's.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

# Values this close are equal (sums of shares like 2/8 and costs like 1/8 can cancel exactly).
TIE_TOLERANCE = 1e-12
# Contested clusters the covering program takes as they are; beyond, the multipliers settle some first.
DIRECT_COVER = 4
# Passes over the offending clusters, and Newton steps along one multiplier, when settling them.
SWEEPS = 2
LINE_STEPS = 4
# The covering program's limits, beyond which the caller asks HiGHS: contested clusters (its states are
# sets of them), and pairs of states it may combine per node of the tree. At ~0.35 us a pair the cap
# is ~20 us a node, while HiGHS took 16-270 us a node on the programs that need the covering program:
# a call that hits it costs at most about twice the MILP, not the seconds an unchecked program could
# take. The most on 6,300 search calls at widths 64 and 256 was 55 a node (docs/ets-solver.md).
MAX_CONTESTED = 10
COMBINATIONS_PER_NODE = 64
# The covering program's pruning: states within PRUNE_MARGIN of the floor are kept (the bounds are sums
# in another order); none is pruned where UNBOUNDED_COVER clusters or fewer are contested (16 states a
# node at most: the bound costs more than it saves), nor within a node's fold before it holds more
# than PRUNE_FROM states.
PRUNE_MARGIN = 1e-9
UNBOUNDED_COVER = 4
PRUNE_FROM = 4
_NO_RANK = np.iinfo(np.int64).max


class OverBudget(RuntimeError):
    """The covering program would grow past MAX_CONTESTED or COMBINATIONS_PER_NODE."""


@dataclass
class Level:
    """One depth of the tree: its nodes grouped by parent, for segment-wise numpy reductions."""

    ids: np.ndarray  # nodes, grouped by parent
    starts: np.ndarray  # where each parent's group starts in ids
    group: np.ndarray  # the group of each node in ids
    parents: np.ndarray  # the parent of each group
    weight: np.ndarray  # the parents' weights (c, or 0 for the top)


@dataclass
class TreeShape:
    """The keep-program's tree as arrays. Nodes ``0..n-1`` are the candidates,
    ``n..n+m-1`` the ancestors, ``n+m`` a virtual top that must keep something."""

    num_candidates: int
    num_ancestors: int
    cost: float  # c, the weight of every node kept
    levels: list[Level]  # deepest first
    path: np.ndarray  # each node, then its ancestors; padded with the top
    rank: np.ndarray  # each candidate's place in the preference order (0: preferred)

    @property
    def top(self) -> int:
        return self.num_candidates + self.num_ancestors

    @classmethod
    def build(cls, parent: np.ndarray, depth: np.ndarray, num_candidates: int, cost: float,
              rank: np.ndarray) -> "TreeShape":
        """``parent`` and ``depth`` of every node but the top; the top's children have depth 0."""
        top = len(parent)
        weight = np.full(top + 1, cost)
        weight[top] = 0.0
        order = np.lexsort((parent, -depth))  # deepest first, then by parent
        parents, depths = parent[order], depth[order]
        starts_group = np.ones(top, dtype=bool)
        starts_group[1:] = (parents[1:] != parents[:-1]) | (depths[1:] != depths[:-1])
        group = np.cumsum(starts_group) - 1
        edges = [0, *(np.flatnonzero(np.diff(depths)) + 1).tolist(), top]
        levels = []
        for begin, end in zip(edges[:-1], edges[1:]):
            starts = np.flatnonzero(starts_group[begin:end])
            level_parents = parents[begin:end][starts]
            levels.append(Level(order[begin:end], starts, group[begin:end] - group[begin], level_parents,
                                weight[level_parents]))
        up = np.append(parent, top)
        columns = [np.arange(top + 1)]
        for _ in range(int(depth.max())):
            columns.append(up[columns[-1]])
        return cls(num_candidates, top - num_candidates, cost, levels, np.stack(columns, axis=1), rank)

    def ancestors_used(self, keep: np.ndarray) -> int:
        """Ancestors of the kept candidates."""
        nodes = np.unique(self.path[np.flatnonzero(keep)])
        return int(((nodes >= self.num_candidates) & (nodes < self.top)).sum())


@dataclass
class Subtree:
    """The dynamic program's optimum for given leaf values (see :func:`best_subtree`)."""

    value: float
    keep: np.ndarray  # the kept candidates
    used: np.ndarray  # every node: kept, or an ancestor of a kept one (the top: True)
    node_value: np.ndarray  # each node's best subtree value, given it is used
    swap: np.ndarray  # what using each node adds to its parent's best (0 if the parent's choice has it)
    chosen: list  # per level: is each node in its parent's choice
    in_choice: np.ndarray  # the same, for every node (the top: True)

    @property
    def ancestors_used(self) -> int:
        return int(self.used.sum()) - int(self.keep.sum()) - 1

    def price(self, shape: TreeShape) -> np.ndarray:
        """For every candidate, the best value with it kept."""
        return self.value + self.swap[shape.path[: shape.num_candidates]].sum(axis=1)


def best_subtree(shape: TreeShape, leaf: np.ndarray, lean: bool = False) -> Subtree:
    """Max of ``sum_i leaf_i x_i + c * (ancestors used)`` over non-empty keep-sets, with the tie rule.

    A node's best value, given it is used, is its weight plus that of every
    child worth keeping (value >= 0: a subtree worth exactly nothing is kept, as
    a larger keep-set ranks higher) or, if none is, that of its best child (of
    equal ones, the one holding the better-ranked candidate): a used node keeps
    something below it. ``lean``: keep a subtree only if it is worth more than
    nothing (the same value, fewest kept; the multipliers are set from these)."""
    n, top = shape.num_candidates, shape.top
    value = np.empty(top + 1)
    value[:n] = leaf
    rank = np.empty(top + 1, dtype=np.int64)
    rank[:n] = shape.rank
    swap = np.zeros(top + 1)
    chosen_levels = []
    chosen_all = np.ones(top + 1, dtype=bool)
    for level in shape.levels:
        ids, starts, group = level.ids, level.starts, level.group
        values = value[ids]
        worth = values > TIE_TOLERANCE if lean else values >= -TIE_TOLERANCE
        widest = np.maximum.reduceat(values, starts)
        any_worth = np.logical_or.reduceat(worth, starts)
        value[level.parents] = level.weight + np.add.reduceat(np.where(worth, values, 0.0), starts) \
            + np.where(any_worth, 0.0, widest)
        # a group with nothing worth keeping takes its best child; of equal ones, the best-ranked candidate's
        none_worth = ~any_worth[group]
        near_best = values >= widest[group] - TIE_TOLERANCE
        ranks = rank[ids]
        rank[level.parents] = np.minimum.reduceat(np.where(worth | (none_worth & near_best), ranks, _NO_RANK), starts)
        chosen = worth | (none_worth & (ranks == rank[level.parents][group]))
        chosen_all[ids] = chosen
        chosen_levels.append(chosen)
        # using a node not chosen adds its value, less the best child it displaces where nothing was worth keeping
        swap[ids] = np.where(chosen, 0.0, values - np.where(none_worth, widest[group], 0.0))
    used = chosen_all[shape.path].all(axis=1)
    return Subtree(float(value[top]), used[:n], used, value, swap, chosen_levels, chosen_all)


@dataclass
class Relaxation:
    """The Lagrangian bound at some multipliers, and its relaxed optimum."""

    bound: float
    subtree: Subtree  # the relaxed optimum
    certified: bool  # its keep-set's own value reaches the bound
    slack: np.ndarray  # clusters whose multiplier does not fit the relaxed optimum
    multipliers: np.ndarray
    kept: np.ndarray  # kept members per cluster
    leaf: np.ndarray  # the leaf values of its dynamic program
    widest: bool  # its dynamic program kept subtrees worth exactly nothing


class KeepSolver:
    """The keep-program with clusters of several members (see the module's text)."""

    def __init__(self, shape: TreeShape, base: np.ndarray, labels: np.ndarray, bonus: float):
        self.shape = shape
        self.base = base  # O_i + c
        self.labels = labels
        self.bonus = bonus
        self.count = int(labels.max()) + 1
        self.multiplied = np.bincount(labels, minlength=self.count) >= 2  # clusters that couple candidates
        self.contested = 0  # clusters the covering program decided (0: not needed)
        self.combinations = 0  # pairs of states the covering program combined
        self.budget = COMBINATIONS_PER_NODE * (shape.top + 1)
        self.known: list[np.ndarray] = []  # keep-sets met on the way, for the covering program's floor

    @cached_property
    def members(self) -> list[np.ndarray]:
        """The candidates of each cluster."""
        order = np.argsort(self.labels, kind="stable")
        return np.split(order, np.cumsum(np.bincount(self.labels, minlength=self.count))[:-1])

    def value(self, keep: np.ndarray, ancestors: int) -> float:
        """The program's own value of a keep-set."""
        return float(self.base[keep].sum()) + self.shape.cost * ancestors + self.bonus * len(np.unique(self.labels[keep]))

    def solve(self) -> np.ndarray:
        """The largest optimum."""
        relaxation = self.evaluate(np.zeros(self.count), widest=True)
        if relaxation.certified:
            return relaxation.subtree.keep  # the largest relaxed optimum is optimal: the largest optimum
        if relaxation.slack.sum() <= DIRECT_COVER:
            return self.cover(relaxation, relaxation.slack)
        relaxation = self.settle(relaxation)
        keep = self.designated(relaxation)
        if keep is not None:
            return keep
        # a cluster settled at multiplier 0 has members worth exactly nothing there: the widest keep-set keeps them
        return self.cover(relaxation, relaxation.slack & (relaxation.multipliers > 0))

    def designated(self, relaxation: Relaxation) -> np.ndarray | None:
        """The largest optimum where the bound is tight and the ties are only between members of
        clusters that must be kept once; else None.

        Each offending cluster's bonus goes to its best-ranked member among those kept by some
        relaxed optimum. If that keep-set reaches the bound it is optimal, and every optimum
        keeps at most one member of a cluster whose multiplier is above 0. Then if every other
        candidate some optimum could keep (its price reaches the bound) is a member of such a
        cluster, ranked below the member kept here, no optimum is larger: where one first
        differs from this keep-set, it would keep such a candidate in place of a better-ranked
        member."""
        b, labels, multipliers = self.bonus, self.labels, relaxation.multipliers
        price = relaxation.subtree.price(self.shape) + (relaxation.bound - relaxation.subtree.value)
        tied = price >= relaxation.bound - TIE_TOLERANCE
        bonus = np.where(self.multiplied, 0.0, b)[labels]
        for k in np.flatnonzero(relaxation.slack):
            pool = self.members[k][tied[self.members[k]]]
            if len(pool):
                bonus[pool[np.argmin(self.shape.rank[pool])]] = b
        free = self.multiplied & ~relaxation.slack
        bonus += np.where(free, multipliers, 0.0)[labels]
        subtree = best_subtree(self.shape, self.base + bonus)
        keep = subtree.keep
        self.known.append(keep)
        if self.value(keep, subtree.ancestors_used) < relaxation.bound - TIE_TOLERANCE:
            return None
        best_kept = np.full(self.count, _NO_RANK)
        np.minimum.at(best_kept, labels[keep], self.shape.rank[keep])
        others = np.flatnonzero(tied & ~keep)
        once = self.multiplied & (multipliers > 0)
        if (once[labels[others]] & (best_kept[labels[others]] < self.shape.rank[others])).all():
            return keep
        return None

    # --- the Lagrangian bound ---
    def evaluate(self, multipliers: np.ndarray, widest: bool = False) -> Relaxation:
        b, labels = self.bonus, self.labels
        leaf = self.base + np.where(self.multiplied, multipliers, b)[labels]
        subtree = best_subtree(self.shape, leaf, lean=not widest)
        bound = subtree.value + float((b - multipliers)[self.multiplied].sum())
        kept = np.bincount(labels[subtree.keep], minlength=self.count)
        slack = self.multiplied & (((kept == 0) & (multipliers < b)) | ((kept >= 2) & (multipliers > 0)))
        certified = self.value(subtree.keep, subtree.ancestors_used) >= bound - TIE_TOLERANCE
        return Relaxation(bound, subtree, certified, slack, multipliers, kept, leaf, widest)

    def settle(self, start: Relaxation) -> Relaxation:
        """Lower the bound by moving the offending clusters' multipliers: all at once to where each
        one's cheapest member pays (or its second worthiest drops out), then one at a time to the
        lowest bound along each."""
        best = start
        point = start.multipliers.copy()
        if self.step_all(point, start):
            best = min_bound(best, self.evaluate(point))
        for _ in range(SWEEPS):
            if best.certified or not best.slack.any():
                break
            before = best.bound
            for k in np.flatnonzero(best.slack):
                best = self.line_search(k, best)
            if best.bound >= before - TIE_TOLERANCE:
                break
        return best

    def step_all(self, multipliers: np.ndarray, relaxation: Relaxation) -> bool:
        """Move each offending cluster's multiplier to the edge of the range where one member is
        kept: up by the cost of its cheapest member, or down until its second worthiest member
        drops out. False if none moved."""
        subtree = relaxation.subtree
        cost = subtree.value - subtree.price(self.shape)  # what keeping each candidate costs (0 if kept)
        worth = None
        moved = False
        for k in np.flatnonzero(relaxation.slack):
            members = self.members[k]
            if relaxation.kept[k] == 0:
                target = min(self.bonus, multipliers[k] + cost[members].min())
            else:
                worth = self.worth(subtree) if worth is None else worth
                target = max(0.0, multipliers[k] - np.sort(worth[members[subtree.keep[members]]])[-2])
            moved |= abs(target - multipliers[k]) > TIE_TOLERANCE
            multipliers[k] = target
        return moved

    def worth(self, subtree: Subtree) -> np.ndarray:
        """What each kept candidate adds: the value of the highest subtree kept only for it."""
        shape = self.shape
        head = np.arange(shape.top + 1)
        for level, chosen in zip(reversed(shape.levels), reversed(subtree.chosen)):
            alone = np.add.reduceat(chosen.astype(np.int64), level.starts) == 1
            sole = chosen & (alone & (level.parents != shape.top))[level.group]
            head[level.ids] = np.where(sole, head[level.parents[level.group]], level.ids)
        return subtree.node_value[head[: shape.num_candidates]]

    def line_search(self, k: int, start: Relaxation) -> Relaxation:
        """The lowest bound along cluster k's multiplier, the others fixed. The dynamic program's
        value is flat in it while keeping no member is best, then rises by the members kept: the
        bound, which also loses the multiplier, is lowest where a member first pays. Newton steps
        from above: each step is where that happens at the latest (the price of the cheapest
        member, then where the line of a point keeping some meets the level of keeping none); a
        step still on the level is the point."""
        b = self.bonus
        none, some = (start, None) if start.kept[k] == 0 else (None, start)
        best = start
        if none is not None:
            cost = start.subtree.value - start.subtree.price(self.shape)
            step = start.multipliers[k] + cost[self.members[k]].min()
        else:
            step = 0.0
        for _ in range(LINE_STEPS):
            point = start.multipliers.copy()
            point[k] = step = min(max(step, 0.0), b)
            trial = self.evaluate(point)
            best = min_bound(best, trial)
            if trial.kept[k] == 0 or (none is not None and trial.subtree.value <= none.subtree.value + TIE_TOLERANCE):
                if step >= b or none is not None:
                    break  # no member pays even with the whole bonus, or the level reaches the latest point
                none = trial
            else:
                if step <= 0:
                    break  # members pay with no bonus at all
                some = trial
            if some is None:
                step = b
            elif none is None:
                step = 0.0
            else:
                step = some.multipliers[k] + (none.subtree.value - some.subtree.value) / some.kept[k]
        return best

    # --- the contested clusters, exactly ---
    def cover(self, relaxation: Relaxation, contested: np.ndarray) -> np.ndarray:
        """The largest optimum, by the covering program over the clusters the multipliers leave
        unsettled; the others keep their multipliers. A keep-set that settles those too (its
        value reaches the covering program's) is the largest optimum, as for any relaxation;
        otherwise the unsettled ones join the contested. The best keep-set met so far gives the
        covering program its floor."""
        b, labels, multipliers = self.bonus, self.labels, relaxation.multipliers
        contested = contested.copy()
        relaxed = relaxation.subtree if relaxation.widest else best_subtree(self.shape, relaxation.leaf)
        outside = None
        while True:
            if contested.sum() > MAX_CONTESTED:
                raise OverBudget(f"{int(contested.sum())} clusters contested in the ETS keep-program")
            free = self.multiplied & ~contested
            leaf = self.base + np.where(free, multipliers, np.where(self.multiplied, 0.0, b))[labels]
            floor = -np.inf  # nothing pruned
            if contested.sum() > UNBOUNDED_COVER:
                outside = self.outside(relaxed) if outside is None else outside
                floor = max(float(leaf[keep].sum()) + self.shape.cost * self.shape.ancestors_used(keep)
                            + b * int(contested[np.unique(labels[keep])].sum())
                            for keep in [relaxation.subtree.keep, *self.known])
            bound, keep = self.covering_program(leaf, contested, multipliers, floor, relaxed,
                                                np.zeros(self.shape.top + 1) if outside is None else outside)
            bound += float((b - multipliers)[free].sum())
            if self.value(keep, self.shape.ancestors_used(keep)) >= bound - TIE_TOLERANCE:
                self.contested = int(contested.sum())
                return keep
            kept = np.bincount(labels[keep], minlength=self.count)
            unsettled = free & (((kept == 0) & (multipliers < b)) | ((kept >= 2) & (multipliers > 0)))
            contested |= unsettled if unsettled.any() else free

    def outside(self, relaxed: Subtree) -> np.ndarray:
        """For every node, the best value the rest of the tree adds to it in the relaxed program,
        given the node is used: its ancestors' weights and their other children worth keeping."""
        outside = np.zeros(self.shape.top + 1)
        for level in reversed(self.shape.levels):
            worth = np.maximum(relaxed.node_value[level.ids], 0.0)
            siblings = np.add.reduceat(worth, level.starts)
            outside[level.ids] = (outside[level.parents] + level.weight + siblings)[level.group] - worth
        return outside

    def covering_program(self, leaf: np.ndarray, contested: np.ndarray, multipliers: np.ndarray, floor: float,
                         relaxed: Subtree, outside: np.ndarray) -> tuple[float, np.ndarray]:
        """Max of ``sum_i leaf_i x_i + c * (ancestors used) + b * (contested clusters covered)``,
        and the largest keep-set of that value, given a keep-set of value ``floor`` (or -inf).
        Each node holds, per set of contested clusters covered below it, the best (value,
        keep-set) given the node is used; a keep-set is an integer with a bit per candidate, the
        better-ranked higher, so that the larger integer is the larger keep-set and the union of
        disjoint ones is their bitwise or.

        Only the nodes with a contested member below them (the spine) hold several states: below
        any other node the single state is the relaxed program's (``relaxed``: its multipliers
        touch only contested members). A state is dropped as soon as a bound on every keep-set it
        could end in falls below ``floor`` (none of them is then an optimum, nor tied with one):
        the Lagrangian bound, each contested cluster's members earning ``multipliers``, the rest
        of the tree at its best (``outside``, and the children not yet folded) and each cluster
        not yet covered ``b`` less its multiplier."""
        shape, n, top, b = self.shape, self.shape.num_candidates, self.shape.top, self.bonus
        rank = shape.rank.tolist()
        clusters = np.flatnonzero(contested)
        bits = np.zeros(self.count, dtype=np.int64)
        bits[clusters] = 1 << np.arange(len(clusters), dtype=np.int64)
        member = bits[self.labels]
        spine = np.zeros(top + 1, dtype=bool)
        spine[shape.path[np.flatnonzero(member)]] = True
        spine[top] = True
        # off the spine (where no contested member is below, so the multipliers change nothing): each
        # node's best value, and the candidates kept below the node highest off the spine (its root; a
        # candidate is kept there if every node between is its parent's choice)
        off = np.flatnonzero(member == 0)
        paths = shape.path[off]
        first_spine = np.argmax(spine[paths], axis=1)  # >= 1: a candidate off the spine is not on it
        roots = paths[np.arange(len(off)), first_spine - 1]
        through = np.logical_and.accumulate(relaxed.in_choice[paths], axis=1)
        kept = (first_spine == 1) | through[np.arange(len(off)), np.maximum(first_spine - 2, 0)]
        root_key: dict[int, int] = {}
        for i, root in zip(off[kept].tolist(), roots[kept].tolist()):
            root_key[root] = root_key.get(root, 0) | 1 << (n - 1 - rank[i])
        node_value = relaxed.node_value
        credit = (((np.arange(1 << len(clusters))[:, None] >> np.arange(len(clusters))) & 1)
                  @ multipliers[clusters]).tolist()  # what a set of covered clusters earns in the bound
        cut = floor - PRUNE_MARGIN - float((b - multipliers[clusters]).sum())  # on value + credit + what may come
        states: dict[int, dict] = {}
        for i in np.flatnonzero(member).tolist():
            if leaf[i] + credit[member[i]] + outside[i] >= cut:
                states[i] = {int(member[i]): (float(leaf[i]), 1 << (n - 1 - rank[i]))}
        values, on_spine, outside = node_value.tolist(), spine.tolist(), outside.tolist()
        for level in shape.levels:
            groups = np.flatnonzero(spine[level.parents]).tolist()
            if not groups:
                continue
            ids, parents = level.ids.tolist(), level.parents.tolist()
            ends = [*level.starts[1:].tolist(), len(ids)]
            for g, begin in zip(groups, level.starts[groups].tolist()):
                parent = parents[g]
                folded, gains = [], []  # the children's states, and what each can add at best
                rest = None  # the children off the spine, each of one state, folded into one child of one state
                for child in ids[begin:ends[g]]:
                    if on_spine[child]:
                        folded.append(states.pop(child, {}))  # a child missing cannot be used
                        gains.append(max(values[child], 0.0))
                        continue
                    alone = (values[child], root_key[child])
                    if rest is not None:
                        extra = better(alone, (0.0, 0))
                        alone = better(alone, (rest[0] + extra[0], rest[1] | extra[1]))
                    rest = alone
                if rest is not None:
                    folded.append({0: rest})
                    gains.append(max(rest[0], 0.0))
                weight = shape.cost if parent != top else 0.0
                least = cut - weight - outside[parent] - sum(gains)  # on value + credit, once every child is folded
                used: dict = {}  # states with some child used
                for alone, gain in zip(folded, gains):
                    least += gain
                    with_unused = dict(alone)
                    with_unused[0] = better(alone.get(0), (0.0, 0))
                    merged = dict(alone)
                    pairs = list(with_unused.items())
                    for covered, (value, key) in used.items():
                        for more, (extra, extra_key) in pairs:
                            union, total = covered | more, value + extra
                            old = merged.get(union)
                            if old is None or total > old[0] + TIE_TOLERANCE:  # better(), inline: the hot loop
                                merged[union] = (total, key | extra_key)
                            elif total >= old[0] - TIE_TOLERANCE and key | extra_key > old[1]:
                                merged[union] = (total, key | extra_key)
                    self.combinations += len(used) * len(pairs)
                    if self.combinations > self.budget:
                        raise OverBudget("the covering program of the ETS keep-program grew too large")
                    used = merged
                    if len(used) > PRUNE_FROM:
                        used = {covered: state for covered, state in used.items() if state[0] + credit[covered] >= least}
                states[parent] = {covered: (weight + value, key) for covered, (value, key) in used.items()
                                  if value + credit[covered] >= least}
                if not states[parent]:
                    del states[parent]
        best = None
        for covered, (value, key) in states.get(top, {}).items():
            best = better(best, (value + b * bin(covered).count("1"), key))
        return best[0], np.array([(best[1] >> (n - 1 - r)) & 1 for r in rank], dtype=bool)


def better(first, second):
    """The better of two (value, keep-set) pairs by the tie rule (``first`` may be None)."""
    if first is None:
        return second
    if second[0] > first[0] + TIE_TOLERANCE or (second[0] >= first[0] - TIE_TOLERANCE and second[1] > first[1]):
        return second
    return first


def min_bound(first: Relaxation, second: Relaxation) -> Relaxation:
    return second if second.bound < first.bound else first
