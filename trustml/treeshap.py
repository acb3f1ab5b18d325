"""Exact path-dependent TreeSHAP for LightGBM, by lookup in per-tree "decision pattern" tables.

A tree's path-dependent SHAP values for a row depend only on which way the row goes at each of
the tree's splits. A feature with `t` thresholds in a tree can only send a row `t + 1` (or a few
more, with missing values) ways, so a shallow tree has few *patterns*: one table row each,
computed once per model with the exact Shapley formula of path-dependent TreeSHAP. Explaining
a row is then one lookup per group of trees: trees that use the same features (or a subset of
them) are summed into one table, indexed by which class of values each feature falls in.

Values equal LightGBM's `booster.predict(X, pred_contrib=True)` to rounding (about 1e-15 per
tree), including missing values (NaN, `missing_type` Zero), default directions and categorical
splits. Trees with too many patterns for a table fall back to LightGBM's own `pred_contrib`, for
those trees only, so the result stays exact. The idea: Woodelf's decision patterns
(arXiv 2511.09376); the formula: Lundberg et al. 2020 (path-dependent TreeSHAP).

Examples
--------
>>> import lightgbm as lgb
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(500, 4)); X[::7, 1] = np.nan
>>> y = (X[:, 0] + np.nan_to_num(X[:, 1]) > 0).astype(int)
>>> booster = lgb.train({"objective": "binary", "num_leaves": 4, "verbosity": -1, "num_threads": 1},
...                     lgb.Dataset(X, y), 30)
>>> tables = TreeShapTables(booster)
>>> values = tables.shap_values(X)
>>> contrib = booster.predict(X, pred_contrib=True)
>>> bool(np.abs(values - contrib[:, :-1]).max() < 1e-9), bool(abs(tables.expected_value - contrib[0, -1]) < 1e-9)
(True, True)
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse

__all__ = ["TreeShapTables", "tables_for", "tree_shap"]

# LightGBM's kZeroThreshold (`1e-35f`, a float widened to double): |x| <= it counts as zero
_K_ZERO = float(np.float32(1e-35))
_MISSING = {"None": 0, "Zero": 1, "NaN": 2}


@dataclass
class _Node:
    feature: int
    categorical: bool
    threshold: float
    cats: np.ndarray  # categories sent left (categorical splits)
    default_left: bool
    missing: int  # 0 None, 1 Zero, 2 NaN
    count: float
    left: int  # >= 0: internal node index; < 0: ~leaf index
    right: int


@dataclass
class _Tree:
    index: int  # position among the explained trees
    nodes: list[_Node] = field(default_factory=list)
    leaf_value: list[float] = field(default_factory=list)
    leaf_count: list[float] = field(default_factory=list)

    def expected_value(self) -> float:
        """As LightGBM's `Tree::ExpectedValue`, in the same order of operations (bit-identical)."""
        if not self.nodes:
            return self.leaf_value[0]
        total = self.nodes[0].count
        ev = 0.0
        for v, c in zip(self.leaf_value, self.leaf_count, strict=True):
            ev += (c / total) * v
        return ev

    def features(self) -> list[int]:
        return sorted({n.feature for n in self.nodes})

    def paths(self):
        """(leaf index, [(node, goes_left)] from the root) for every leaf."""
        stack = [(0, [])]
        while stack:
            node, path = stack.pop()
            nd = self.nodes[node]
            for child, left in ((nd.left, True), (nd.right, False)):
                if child < 0:
                    yield ~child, path + [(node, left)]
                else:
                    stack.append((child, path + [(node, left)]))


def _parse(booster, start: int, n: int) -> tuple[list[_Tree], int]:
    dump = booster.dump_model(num_iteration=-1)
    if dump.get("num_tree_per_iteration", 1) != 1:
        raise ValueError("TreeShapTables explains models with one tree per iteration (binary, regression), "
                         f"not {dump['num_tree_per_iteration']} (multiclass)")
    infos = dump["tree_info"][start:start + n]
    # thresholds from the text model: the JSON dump clips +-inf to +-1e300 (Common::AvoidInf), the text keeps them
    exact = {}
    for block in booster.model_to_string(num_iteration=-1).split("\nTree=")[1:]:
        head, _, rest = block.partition("\n")
        line = next((li for li in rest.split("\n", 40) if li.startswith("threshold=")), None)
        if line is not None:
            exact[int(head)] = [float(v) for v in line[len("threshold="):].split()]
    trees = []
    for k, info in enumerate(infos):
        tree = _Tree(k)
        thresholds = exact.get(info["tree_index"], [])
        root = info["tree_structure"]
        if "leaf_value" in root and "split_index" not in root:
            tree.leaf_value.append(float(root["leaf_value"]))
            tree.leaf_count.append(float(root.get("leaf_count", 0)))
            trees.append(tree)
            continue
        n_leaves = info["num_leaves"]
        tree.leaf_value = [0.0] * n_leaves
        tree.leaf_count = [0.0] * n_leaves
        tree.nodes = [None] * (n_leaves - 1)

        def walk(d, tree=tree, thresholds=thresholds, info=info):
            if "split_index" not in d:
                if "leaf_coeff" in d:
                    raise ValueError("linear trees (linear_tree=True) are not supported")
                i = d["leaf_index"]
                tree.leaf_value[i] = float(d["leaf_value"])
                tree.leaf_count[i] = float(d["leaf_count"])
                return ~i
            i = d["split_index"]
            cat = d["decision_type"] == "=="
            th = d["threshold"]
            cats = np.array([int(c) for c in str(th).split("||")], dtype=np.int64) if cat else np.empty(0, np.int64)
            left, right = walk(d["left_child"]), walk(d["right_child"])
            if not cat and float(th) != thresholds[i] and abs(float(th)) < 1e300:
                raise ValueError(f"tree {info['tree_index']}: the text and JSON models disagree on split {i}")
            tree.nodes[i] = _Node(int(d["split_feature"]), cat, float("nan") if cat else thresholds[i], cats,
                                  bool(d["default_left"]), _MISSING[d["missing_type"]], float(d["internal_count"]),
                                  left, right)
            return i

        walk(root)
        trees.append(tree)
    return trees, len(dump["feature_names"])


def _goes_left(node: _Node, x: np.ndarray) -> np.ndarray:
    """LightGBM's `Tree::Decision` for values `x` of the node's feature, vectorised."""
    x = np.asarray(x, dtype=np.float64)
    nan = np.isnan(x)
    if node.categorical:  # NaN and negatives go right; else static_cast<int> truncates
        t = np.trunc(np.where(nan, -1.0, x))
        return (t >= 0) & np.isin(t, node.cats)
    if node.missing != 2:
        x = np.where(nan, 0.0, x)
    if node.missing == 1:
        miss = (x >= -_K_ZERO) & (x <= _K_ZERO)
    elif node.missing == 2:
        miss = nan
    else:
        miss = np.zeros(x.shape, bool)
    return np.where(miss, node.default_left, x <= node.threshold)


class _Feature:
    """A feature's global value classes: every split on it in the model is constant on each class."""

    def __init__(self, index: int, nodes: list[_Node]):
        self.index = index
        self.categorical = nodes[0].categorical
        if self.categorical:
            self.cats = np.unique(np.concatenate([n.cats for n in nodes]))
            # one class per category named in a split, one for everything else (all go right)
            self.reps = np.append(self.cats.astype(np.float64), np.nan)
            self.lut = np.full(int(self.cats.max()) + 1 if len(self.cats) else 1, len(self.cats), dtype=np.int64)
            self.lut[self.cats] = np.arange(len(self.cats))
        else:
            bp = {n.threshold for n in nodes}
            if any(n.missing == 1 for n in nodes):  # zero is its own class: |x| <= kZeroThreshold
                bp |= {float(np.nextafter(-_K_ZERO, -np.inf)), _K_ZERO}
            self.breaks = np.array(sorted(bp), dtype=np.float64)
            # class r < len(breaks): breaks[r-1] < x <= breaks[r]; then x > all; then NaN
            self.reps = np.concatenate([self.breaks, [np.nextafter(self.breaks[-1], np.inf), np.nan]])
        self.n_classes = len(self.reps)

    def classes(self, x: np.ndarray) -> np.ndarray:
        if self.categorical:
            t = np.trunc(x)
            ok = (t >= 0) & (t < len(self.lut))  # False for NaN
            out = np.full(x.shape, len(self.cats), dtype=np.int64)
            out[ok] = self.lut[t[ok].astype(np.int64)]
            return out
        # LightGBM's predictor reads |x| <= kZeroThreshold as 0.0 before any split sees it
        out = np.searchsorted(self.breaks, np.where(np.abs(x) <= _K_ZERO, 0.0, x), side="left")
        out[np.isnan(x)] = len(self.breaks) + 1
        return out


def _partition(columns: list[np.ndarray], n: int, labels: np.ndarray | None = None) -> np.ndarray:
    """Label n classes 0.. by the distinct rows of the boolean `columns` (exact refinement of `labels`)."""
    labels = np.zeros(n, dtype=np.int64) if labels is None else labels
    for c in columns:
        labels = np.unique(labels * 2 + c, return_inverse=True)[1].ravel()
    return labels


def _leaf_table(value: float, z: np.ndarray) -> np.ndarray:
    """Path-dependent TreeSHAP of one leaf for every 0/1 vector `o` of its path features.

    The leaf's game is v(S) = value * prod_{g in S} o_g * prod_{g not in S} z_g (z: product of
    cover fractions of g's splits on the path, o: whether the row follows all of them). Its
    Shapley value: phi_j = value (o_j - z_j) sum_{S subset of o minus j} |S|!(k-1-|S|)!/k! prod_{g not in S, g != j} z_g.
    Returns (2**k, k), row = bit mask of o (bit j = feature j).
    """
    k = len(z)
    masks = np.arange(1 << k)
    bits = ((masks[:, None] >> np.arange(k)) & 1).astype(bool)
    size = bits.sum(axis=1)
    w = np.array([math.factorial(s) * math.factorial(k - 1 - s) / math.factorial(k) if s < k else 0.0
                  for s in range(k + 1)])
    out = np.empty((1 << k, k))
    for j in range(k):
        keep = bits.copy()
        keep[:, j] = True
        term = w[size] * np.where(keep, 1.0, z).prod(axis=1)
        term[bits[:, j]] = 0.0
        # sum over subsets (zeta transform): axis i of the (2,)*k view is bit k-1-i
        zeta = term.reshape((2,) * k) if k else term
        for axis in range(k):
            zeta = np.cumsum(zeta, axis=axis)
        zeta = zeta.reshape(-1)
        out[:, j] = value * (bits[:, j] - z[j]) * zeta[masks & ~(1 << j)]
    return out


def _tree_table(tree: _Tree, feats: list[int], reps: dict[int, np.ndarray]) -> np.ndarray:
    """SHAP of `tree` for every combination of its features' classes: (prod of class counts, len(feats))."""
    sizes = [len(reps[f]) for f in feats]
    n_pat = math.prod(sizes)
    pos = {f: j for j, f in enumerate(feats)}
    strides = np.cumprod([1] + sizes[:0:-1])[::-1]  # first feature varies slowest
    pattern = np.arange(n_pat)
    cls = {f: (pattern // strides[j]) % sizes[j] for j, f in enumerate(feats)}
    left = [_goes_left(nd, reps[nd.feature])[cls[nd.feature]] for nd in tree.nodes]
    table = np.zeros((n_pat, len(feats)))
    for leaf, path in tree.paths():
        uniq = sorted({tree.nodes[i].feature for i, _ in path})
        z = np.ones(len(uniq))
        o = np.ones((len(uniq), n_pat), dtype=bool)
        for i, goes_left in path:
            nd = tree.nodes[i]
            j = uniq.index(nd.feature)
            child = nd.left if goes_left else nd.right
            z[j] *= (tree.nodes[child].count if child >= 0 else tree.leaf_count[~child]) / nd.count
            o[j] &= left[i] == goes_left
        mask = (o.astype(np.int64) << np.arange(len(uniq))[:, None]).sum(axis=0)
        phi = _leaf_table(tree.leaf_value[leaf], z)
        table[:, [pos[f] for f in uniq]] += phi[mask]
    return table


@dataclass
class _Group:
    feats: list[int]
    trees: list[_Tree]
    labels: dict[int, np.ndarray]  # global class -> group class, per feature
    size: int


class TreeShapTables:
    """Exact path-dependent TreeSHAP of a LightGBM booster, precomputed as lookup tables.

    Build once per model (it parses `booster.dump_model()`), then `shap_values(X)` any number
    of times. Equals `booster.predict(X, pred_contrib=True, start_iteration=..., num_iteration=...)`.

    Parameters
    ----------
    booster : lightgbm.Booster with one tree per iteration (binary or regression).
    num_iteration, start_iteration : the trees to explain, as in `Booster.predict` (None: the
        best iteration if there is one, else all).
    max_patterns : a tree with more value-class combinations than this is explained by
        LightGBM's `pred_contrib` instead (for that tree only); also the largest merged table.
    max_group_features : trees are summed into tables over at most this many features.
    max_path_features : trees with a leaf whose path tests more distinct features fall back too.
    max_fallback_calls : when fallback trees form more runs of consecutive trees than this (one
        `pred_contrib` call each), all trees go to one `pred_contrib` call instead.

    Attributes
    ----------
    expected_value : the base value (pred_contrib's last column).
    n_features, n_trees, n_table_trees, n_fallback_trees, n_groups.

    Examples
    --------
    >>> import lightgbm as lgb
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> X = rng.normal(size=(300, 3)); y = (X[:, 0] > 0).astype(int)
    >>> booster = lgb.train({"objective": "binary", "num_leaves": 8, "verbosity": -1, "num_threads": 1}, lgb.Dataset(X, y), 10)
    >>> tables = TreeShapTables(booster, num_iteration=5)
    >>> phi = tables.shap_values(X[:2])
    >>> bool(np.allclose(phi.sum(axis=1) + tables.expected_value, booster.predict(X[:2], raw_score=True, num_iteration=5)))
    True
    """

    def __init__(self, booster, *, num_iteration: int | None = None, start_iteration: int = 0,
                 max_patterns: int = 4096, max_group_features: int = 4, max_path_features: int = 14,
                 max_fallback_calls: int = 8):
        total = booster.num_trees() // max(booster.num_model_per_iteration(), 1)
        start = max(int(start_iteration), 0)
        if num_iteration is None:
            num_iteration = booster.best_iteration if start <= 0 else -1
        n = total - start if num_iteration is None or num_iteration <= 0 else min(int(num_iteration), total - start)
        self.start_iteration, self.num_iteration = start, max(n, 0)
        self._booster = weakref.ref(booster)
        trees, self.n_features = _parse(booster, start, self.num_iteration)
        self.n_trees = len(trees)
        self.expected_value = 0.0
        for t in trees:
            self.expected_value += t.expected_value()
        self.max_patterns, self.max_group_features = max_patterns, max_group_features

        # global value classes per feature, over every split in the model
        by_feature: dict[int, list[_Node]] = {}
        for t in trees:
            for nd in t.nodes:
                by_feature.setdefault(nd.feature, []).append(nd)
        self._features = {f: _Feature(f, nodes) for f, nodes in sorted(by_feature.items())}

        table_trees, fallback = [], []
        for t in trees:
            if not t.nodes:
                continue
            feats = t.features()
            labels = {f: self._labels(f, [nd for nd in t.nodes if nd.feature == f]) for f in feats}
            n_pat = math.prod(int(lab.max()) + 1 for lab in labels.values())
            deep = max(len({t.nodes[i].feature for i, _ in path}) for _, path in t.paths()) > max_path_features
            (fallback if n_pat > max_patterns or deep else table_trees).append(t)
        # runs of consecutive fallback trees, as (start_iteration, num_iteration) for pred_contrib
        self._fallback_blocks = []
        for t in fallback:
            if self._fallback_blocks and self._fallback_blocks[-1][0] + self._fallback_blocks[-1][1] == start + t.index:
                self._fallback_blocks[-1][1] += 1
            else:
                self._fallback_blocks.append([start + t.index, 1])
        if len(self._fallback_blocks) > max_fallback_calls:  # one call for everything beats many small ones
            self._fallback_blocks = [[start, self.num_iteration]]
            fallback, table_trees = fallback + table_trees, []
        self.n_fallback_trees = len(fallback)
        self.n_table_trees = len(table_trees)
        self._build(self._group(table_trees))

    # -- construction ---------------------------------------------------------------------
    def _labels(self, f: int, nodes: list[_Node], labels: np.ndarray | None = None) -> np.ndarray:
        """Global class of feature f -> class as far as `nodes` (and `labels`) can tell apart."""
        reps = self._features[f].reps
        return _partition([_goes_left(nd, reps) for nd in nodes], len(reps), labels)

    def _group(self, trees: list[_Tree]) -> list[_Group]:
        """Sum trees into groups, each over at most `max_group_features` features and `max_patterns` patterns.

        Greedy: trees with more features first; a tree joins the group it adds fewest features to
        (a superset of its own: none), if the merged table stays within `max_patterns`.
        """
        groups: list[_Group] = []
        for t in sorted(trees, key=lambda t: (-len(t.features()), t.features(), t.index)):
            feats = set(t.features())
            own = {f: self._labels(f, [nd for nd in t.nodes if nd.feature == f]) for f in feats}
            cands = [(len(feats - set(g.feats)), g.size, i) for i, g in enumerate(groups)
                     if len(feats | set(g.feats)) <= max(self.max_group_features, len(feats))]
            placed = False
            for _, _, i in sorted(cands)[:8]:
                g = groups[i]
                labels = dict(g.labels)
                for f in feats:
                    labels[f] = self._labels(f, [nd for nd in t.nodes if nd.feature == f], g.labels.get(f))
                size = math.prod(int(lab.max()) + 1 for lab in labels.values())
                if size <= self.max_patterns:
                    g.trees.append(t)
                    g.feats, g.labels, g.size = sorted(labels), labels, size
                    placed = True
                    break
            if not placed:
                groups.append(_Group(sorted(feats), [t], own, math.prod(int(lab.max()) + 1 for lab in own.values())))
        return groups

    def _build(self, groups: list[_Group]) -> None:
        self.n_groups = len(groups)
        self._used = sorted({f for g in groups for f in g.feats})
        row_of = {f: i for i, f in enumerate(self._used)}
        luts, tables, blocks = [], [], {}
        lut_off = tab_off = 0
        for g in groups:
            k = len(g.feats)
            sizes = [int(g.labels[f].max()) + 1 for f in g.feats]
            strides = np.cumprod([1] + sizes[:0:-1])[::-1]
            table = np.zeros((g.size, k))
            # group class -> one global class (its representative)
            first = {f: np.unique(g.labels[f], return_index=True)[1] for f in g.feats}
            for t in g.trees:
                tf = t.features()
                tl = {f: self._labels(f, [nd for nd in t.nodes if nd.feature == f]) for f in tf}
                reps = {f: self._features[f].reps[np.unique(tl[f], return_index=True)[1]] for f in tf}
                ttab = _tree_table(t, tf, reps)
                # group pattern -> tree pattern
                tsizes = [len(reps[f]) for f in tf]
                tstrides = np.cumprod([1] + tsizes[:0:-1])[::-1]
                gp = np.arange(g.size)
                tp = np.zeros(g.size, dtype=np.int64)
                for f, ts in zip(tf, tstrides, strict=True):
                    j = g.feats.index(f)
                    gcls = (gp // strides[j]) % sizes[j]
                    tp += tl[f][first[f]][gcls] * ts
                table[:, [g.feats.index(f) for f in tf]] += ttab[tp]
            tables.append(table.ravel())
            entry = blocks.setdefault(k, {"lut": [], "row": [], "tab": []})
            lut_cols, row_cols = [], []
            for f, s in zip(g.feats, strides, strict=True):
                luts.append(g.labels[f] * s * k)  # premultiplied: table offset of the class
                lut_cols.append(lut_off)
                row_cols.append(row_of[f])
                lut_off += len(g.labels[f])
            entry["lut"].append(lut_cols)
            entry["row"].append(row_cols)
            entry["tab"].append(tab_off)
            tab_off += g.size * k
        self._lut = np.concatenate(luts).astype(np.int32) if luts else np.zeros(0, np.int32)
        self._table = np.concatenate(tables) if tables else np.zeros(0)
        if tab_off >= 2**31 or lut_off >= 2**31:
            raise ValueError("tables too large: lower max_patterns")
        self._blocks = [(k, np.array(b["lut"], dtype=np.int32), np.array(b["row"], dtype=np.intp), np.array(b["tab"], dtype=np.int32))
                        for k, b in sorted(blocks.items())]
        # slot (group, position j) in the order the kernel fills them (j-major per block) -> its feature;
        # one sparse 0/1 matrix sums the slots of each feature
        slot_feat = [row_of[self._used[r]] for _, _, rows, _ in self._blocks for r in rows.T.ravel()]
        self._n_slots = len(slot_feat)
        self._sum = sparse.csr_matrix((np.ones(len(slot_feat)), (slot_feat, np.arange(len(slot_feat)))),
                                      shape=(len(self._used), len(slot_feat)))
        self._small_setup()

    def _small_setup(self) -> None:
        """Index arrays for a few rows at a time (what-if): fewer, larger numpy calls, no per-feature loop."""
        gs_lut, gs_row, g_starts, g_tab, slots = [], [], [], [], []
        for _, lut, rows, tab in self._blocks:
            for lut_g, rows_g, tab_g in zip(lut, rows, tab, strict=True):
                g = len(g_tab)
                g_starts.append(len(gs_lut))
                g_tab.append(tab_g)
                gs_lut.extend(lut_g)
                gs_row.extend(rows_g)
                slots.extend((int(r), g, j) for j, r in enumerate(rows_g))
        slots.sort()
        self._gs_lut = np.array(gs_lut, dtype=np.int32)[:, None]
        self._gs_row = np.array(gs_row, dtype=np.intp)
        self._g_starts = np.array(g_starts, dtype=np.intp)
        self._g_tab = np.array(g_tab, dtype=np.int32)[:, None]
        self._fs_group = np.array([g for _, g, _ in slots], dtype=np.intp)
        self._fs_j = np.array([j for _, _, j in slots], dtype=np.int32)[:, None]
        frow = np.array([r for r, _, _ in slots], dtype=np.intp)
        self._f_starts = np.flatnonzero(np.r_[True, frow[1:] != frow[:-1]]) if len(frow) else np.zeros(0, np.intp)
        self._f_cols = np.asarray(self._used, dtype=np.intp)[frow[self._f_starts]] if len(frow) else np.zeros(0, np.intp)
        # value classes by comparisons against all breakpoints at once
        num = [(i, f) for i, f in enumerate(self._used) if not self._features[f].categorical]
        cat = [(i, f) for i, f in enumerate(self._used) if self._features[f].categorical]
        self._num_rows = np.array([i for i, _ in num], dtype=np.intp)
        self._num_cols = np.array([f for _, f in num], dtype=np.intp)
        brk = [self._features[f].breaks for _, f in num]
        self._bp = np.concatenate(brk) if brk else np.zeros(0)
        self._bp_col = np.repeat(self._num_cols, [len(b) for b in brk]) if brk else np.zeros(0, np.intp)
        self._bp_starts = np.cumsum([0] + [len(b) for b in brk[:-1]]).astype(np.intp) if brk else np.zeros(0, np.intp)
        self._nan_class = np.array([len(b) + 1 for b in brk], dtype=np.int32)
        self._cat_rows = np.array([i for i, _ in cat], dtype=np.intp)
        self._cat_cols = np.array([f for _, f in cat], dtype=np.intp)
        luts = [self._features[f].lut for _, f in cat]
        self._cat_lut = np.concatenate(luts).astype(np.int32) if luts else np.zeros(0, np.int32)
        self._cat_off = np.cumsum([0] + [len(u) for u in luts[:-1]]).astype(np.intp) if luts else np.zeros(0, np.intp)
        self._cat_size = np.array([len(u) for u in luts], dtype=np.float64)
        self._cat_other = np.array([len(self._features[f].cats) for _, f in cat], dtype=np.int32)

    def _classes_small(self, X: np.ndarray) -> np.ndarray:
        """As `_classes`, for a few rows: (n_used, n_rows)."""
        C = np.empty((len(self._used), len(X)), dtype=np.int32)
        if len(self._num_rows):
            X = np.where(np.abs(X) <= _K_ZERO, 0.0, X)  # as LightGBM's predictor reads it
            above = X[:, self._bp_col] > self._bp  # class = number of breakpoints below the value
            counts = np.add.reduceat(above, self._bp_starts, axis=1, dtype=np.int32)
            C[self._num_rows] = np.where(np.isnan(X[:, self._num_cols]), self._nan_class, counts).T
        if len(self._cat_rows):
            t = np.trunc(X[:, self._cat_cols])
            ok = (t >= 0) & (t < self._cat_size)
            idx = np.where(ok, t, 0).astype(np.intp) + self._cat_off
            C[self._cat_rows] = np.where(ok, self._cat_lut[idx], self._cat_other).T
        return C

    def _rows_small(self, X: np.ndarray, out: np.ndarray) -> None:
        C = self._classes_small(X)
        pos = np.add.reduceat(self._lut.take(C[self._gs_row] + self._gs_lut), self._g_starts, axis=0) + self._g_tab
        values = self._table.take(pos[self._fs_group] + self._fs_j)
        out[:, self._f_cols] += np.add.reduceat(values, self._f_starts, axis=0).T

    # -- evaluation -----------------------------------------------------------------------
    def _classes(self, X: np.ndarray) -> np.ndarray:
        """Global class of every used feature: (n_used, n_rows)."""
        out = np.empty((len(self._used), len(X)), dtype=np.int32)
        for i, f in enumerate(self._used):
            out[i] = self._features[f].classes(X[:, f])
        return out

    def shap_values(self, X, *, chunk_rows: int = 256) -> np.ndarray:
        """SHAP values (n_rows, n_features), float64, on the model's raw score (log-odds for binary).

        `chunk_rows`: rows per vectorised step (small keeps the work in the CPU cache).
        """
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"X must be 2-D with {self.n_features} columns, got shape {X.shape}")
        out = np.zeros(X.shape)
        if not len(X):
            return out
        if self._n_slots and len(X) <= 8:
            self._rows_small(X, out)
        elif self._n_slots:
            used = np.asarray(self._used)
            for s0 in range(0, len(X), 65_536):
                C = self._classes(X[s0:s0 + 65_536])
                for s in range(0, C.shape[1], chunk_rows):
                    out[s0 + s:s0 + s + chunk_rows, used] += self._chunk(C[:, s:s + chunk_rows]).T
        if self._fallback_blocks:
            booster = self._booster()
            if booster is None:
                raise RuntimeError("the booster these tables were built from no longer exists")
            for start, num in self._fallback_blocks:
                out += booster.predict(X, pred_contrib=True, start_iteration=start, num_iteration=num)[:, :-1]
        return out

    def _chunk(self, C: np.ndarray) -> np.ndarray:
        """Summed table values per used feature, (n_used, n_rows), for class matrix C (n_used, n_rows)."""
        n = C.shape[1]
        V = np.empty((self._n_slots, n))
        s = 0
        for k, lut, rows, tab in self._blocks:
            g = len(tab)
            pos = self._lut.take(C[rows[:, 0]] + lut[:, 0, None])
            for j in range(1, k):
                pos += self._lut.take(C[rows[:, j]] + lut[:, j, None])
            pos += tab[:, None]
            for j in range(k):
                self._table.take(pos + j if j else pos, out=V[s:s + g])
                s += g
        return self._sum @ V


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def tables_for(booster, *, num_iteration: int | None = None, start_iteration: int = 0) -> TreeShapTables:
    """The `TreeShapTables` of `booster`, built on first use and cached while the booster lives.

    Examples
    --------
    >>> import lightgbm as lgb
    >>> import numpy as np
    >>> X = np.random.default_rng(2).normal(size=(200, 2)); y = (X[:, 1] > 0).astype(int)
    >>> b = lgb.train({"objective": "binary", "verbosity": -1, "num_threads": 1}, lgb.Dataset(X, y), 5)
    >>> tables_for(b) is tables_for(b)
    True
    """
    per = _CACHE.setdefault(booster, {})
    key = (num_iteration, start_iteration, booster.current_iteration())
    if key not in per:
        per[key] = TreeShapTables(booster, num_iteration=num_iteration, start_iteration=start_iteration)
    return per[key]


def tree_shap(booster, X, *, num_iteration: int | None = None, start_iteration: int = 0) -> tuple[np.ndarray, float]:
    """(SHAP values (n_rows, n_features), base value) of `booster` on `X`, with cached tables.

    Examples
    --------
    >>> import lightgbm as lgb
    >>> import numpy as np
    >>> X = np.random.default_rng(3).normal(size=(200, 2)); y = (X[:, 0] > 0).astype(int)
    >>> b = lgb.train({"objective": "binary", "verbosity": -1, "num_threads": 1}, lgb.Dataset(X, y), 5)
    >>> values, base = tree_shap(b, X[:3])
    >>> values.shape
    (3, 2)
    """
    tables = tables_for(booster, num_iteration=num_iteration, start_iteration=start_iteration)
    return tables.shap_values(X), tables.expected_value
