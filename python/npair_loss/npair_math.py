"""The N-pair multi-class loss (docs/layer_contract.md §3 and §4), array-generic.

Every function takes arrays of one module, NumPy or CuPy, and works in that module
(`xp` below); nothing here knows about Caffe. The pieces, in the order of a forward pass:

    S = similarity(X)                      # N x N inner products, exactly symmetric
    same = label_relation(labels)          # N x N: same label
    pos = positive_pairs(same)             # the batch's positive pairs (i, j), j != i
    recall_at_k(S, same, pos, ks)          # monitors
    feature_asum(X)
    keep = kept_pairs(S, same, params, pos)        # thresholds and selection: N x N bool
    losses, W = loss_and_weights(S, keep, pos)     # l_i, and W = G / (g / N) in S's storage
    gradient(X, W, g)                      # d(g * loss)/dX = (g / N)(W + W^T) X

`forward` runs them in that order. `params` is any object with NPairLossParameter's
field names as attributes, enums by name ('LOCAL', 'RELATIVE_HARD'), floats holding the
float32 values (npair_loss.params.NPairParams). At most two float N x N arrays are alive
at once, S (then W) and one work array, plus three boolean ones (`same`, `keep`, one
work mask); a Workspace keeps them from one call to the next.

The loss follows the layer's one log-sum-exp recipe (the C++ paths' NPairRowTermsOf):
per query row, max_all is its largest kept similarity and max_pos its largest kept
positive one; each kept pair takes one exponential, e^(S_ij - max_pos) for a positive,
e^(S_ij - max_all) for a negative, and l_i and the pair weights follow from the two
sums. A row of S that is not all finite (S_ii included) gives l_i = NaN and a NaN row
of W, whatever was mined. A sample is never its own positive or negative, NaN labels
included.

Speed comes from avoiding what NumPy does slowly, rather than from fewer passes alone:
reading a transposed N x N array (a cache line per element: S and W + W^T are built in
strips, see _mirror_upper), masked writes or selects with a dense random mask (a branch
per element: selection stays boolean, and its -inf fill is integer arithmetic, see
_drop_unkept), and reductions along short rows (symmetric arrays are reduced down their
columns; row sums are GEMVs). Positive pairs are few (a class has a few samples in a
batch), so everything about positives works on their gathered values, never on an
N x N array. The CuPy path takes the plain forms where NumPy's need a Python loop.
"""
import math
import sys
from typing import NamedTuple

import numpy

RECALL_KS = (1, 5, 10)

# Rows of the GEMM panels of NumPy's similarity.
_PANEL = 64
# Up to this D, NumPy's gradient takes two GEMMs rather than a transposed pass over W.
_TWO_GEMMS_MAX_D = 96

# Selection (docs/layer_contract.md §3): the comparison that keeps a pair, S_ij against
# t + m, as (rule for a positive, rule for a negative). RAND keeps every pair.
KEEP_RULES = {
    'HARD': ('less', 'greater'),
    'EASY': ('greater_equal', 'less_equal'),
    'RELATIVE_HARD': ('less_equal', 'greater_equal'),
    'RELATIVE_EASY': ('greater_equal', 'less_equal'),
}


class Forward(NamedTuple):
    loss: float
    recall: tuple           # R@K for each K asked for
    asum: float
    weights: object         # W = G / (g / N) (N x N): gradient() turns it into d loss/dX


def array_module(a):
    """cupy for a CuPy array, numpy otherwise."""
    cupy = sys.modules.get('cupy')
    return cupy if cupy is not None and isinstance(a, cupy.ndarray) else numpy


def to_host(a):
    """A NumPy array with a's values."""
    return a if array_module(a) is numpy else a.get()


def similarity(X, out=None):
    """S = X X^T for features X (N x D), exactly symmetric: a RELATIVE_* threshold with
    margin 0 compares a pair with its own mirror. Written into `out` when given.

    A general GEMM (cuBLAS's) need not give S_ij == S_ji, so CuPy averages S with its
    transpose, exact where it was already symmetric. NumPy's own X @ X.T is symmetric
    (syrk) but mirrors its triangle with an element-wise strided copy that costs more
    than the product; here NumPy computes the upper triangle by row panels (GEMMs, half
    the flops), averages each diagonal tile with its transpose, and mirrors the rest.
    """
    xp = array_module(X)
    n = len(X)
    S = xp.empty((n, n), X.dtype) if out is None else out
    if xp is not numpy:
        xp.matmul(X, X.T, out=S)
        S += S.T.copy()
        S *= 0.5
        return S
    for i in range(0, n, _PANEL):
        rows = slice(i, i + _PANEL)
        numpy.matmul(X[rows], X[i:].T, out=S[rows, i:])
        diagonal = S[rows, rows]
        diagonal += diagonal.T.copy()
        diagonal *= 0.5
    _mirror_upper(S)
    return S


def _mirror_upper(S):
    """S's lower triangle := its upper triangle's transpose (NumPy), in strips of one
    cache line: each row of a strip is written whole while the strip's source rows
    stay in L1. A plain S.T copy reads a new cache line (and page) per element."""
    n = len(S)
    w = max(1, 64 // S.itemsize)
    for i in range(0, n, w):
        rows = slice(i, i + w)
        S[i + w:, rows] = S[rows, i + w:].T


def label_relation(labels, out=None):
    """same_ij = (y_i == y_j). The diagonal is True except where y_i is NaN (a NaN label
    equals no label): a pass over negatives must leave j == i out itself, never read
    it off ~same."""
    return array_module(labels).equal(labels[:, None], labels[None, :], out=out)


class Positives(NamedTuple):
    """The batch's positive pairs (i, j): j != i, y_j == y_i, in row-major order."""
    at: object              # flat indices i * N + j, ascending
    row: object             # i of each
    slot: object            # its place among row i's positives
    count: object           # positives per row (N,)
    width: int              # the largest count


def positive_pairs(same):
    """Positives from the label relation `same` (label_relation's)."""
    xp = array_module(same)
    n = len(same)
    at = xp.flatnonzero(same)
    at = at[at % (n + 1) != 0]                      # the diagonal is no pair
    row = at // n
    count = xp.count_nonzero(same, axis=1) - xp.diagonal(same)
    start = xp.cumsum(count) - count
    slot = xp.arange(len(at)) - start[row]
    return Positives(at=at, row=row, slot=slot, count=count,
                     width=int(count.max()) if n else 0)


def _by_row(values, pos, fill):
    """values, one per positive pair, as an N x max(width, 1) array: row i holds row i's
    values, then `fill`. Reducing it along its rows reduces over each row's positives."""
    xp = array_module(values)
    out = xp.full((len(pos.count), max(pos.width, 1)), fill, dtype=values.dtype)
    out[pos.row, pos.slot] = values
    return out


def _negatives(S, pos, fill, out=None):
    """S on the negative pairs, `fill` on the positive ones and the diagonal, in `out`:
    symmetric, as S is."""
    xp = array_module(S)
    out = xp.empty_like(S) if out is None else out
    xp.copyto(out, S)
    out.ravel()[pos.at] = fill
    xp.fill_diagonal(out, fill)
    return out


def _symmetric_reduce(a, op, local):
    """a.max() or a.min() (op) of a symmetric array: over each row as a column
    (N, 1) if local, else over all of a as (1, 1). A row's reduction is taken down its
    column, the same values, which NumPy reduces with SIMD across rows."""
    if not local:
        return getattr(a, op)(keepdims=True)
    return getattr(a, op)(axis=0)[:, None]


def relative_position(n, sn):
    """pos(n, sn) for list lengths n (integer array): the index into the ascending
    list, computed in double from the float32 value sn and clamped to [0, n - 1]."""
    xp = array_module(n)
    n = n.astype(xp.float64)
    if sn >= 0:                                   # -0.0 too
        p = n - 1 - float(math.floor(sn))
    else:
        p = xp.trunc(n - 1 + sn * n)
    return xp.clip(p, 0, xp.maximum(n - 1, 0)).astype(xp.int64)


def _order_statistic(values, counts, sn, local):
    """Element pos(n, sn) of each ascending list: of each row of `values` (local; n the
    row's count) or of all of them (n the total), where every row holds its list's
    members first and +inf fillers after. As float64, (N, 1) or (1, 1); `values` is
    partitioned in place."""
    xp = array_module(values)
    if local:
        k = relative_position(counts, sn)
        values.partition(xp.unique(k).tolist(), axis=1)
        t = values[xp.arange(len(values)), k][:, None]
    else:
        k = int(relative_position(counts.sum(), sn))
        flat = values.ravel()
        flat.partition(k)
        t = flat[k].reshape(1, 1)
    return t.astype(xp.float64)


def threshold(S, pos, region, method, sn, kind, out=None):
    """t+ (kind 'positive': the threshold that positives are selected by) or t-
    (kind 'negative'), as float64 of shape (N, 1) for LOCAL, (1, 1) for GLOBAL, from a
    symmetric S (similarity's) and its positive pairs. `out`, if given, is an N x N work
    array of S's dtype; its values are lost.

    HARD, EASY, RAND: t+ is the most similar negative, t- the least similar positive
    (-inf / +inf when there is none). RELATIVE_*: the element pos(n, sn) of the
    ascending list of positive (t+, with identsn) or negative (t-, with diffsn)
    similarities; the value is meaningless where the list is empty, which then has no
    pair to select.
    """
    xp = array_module(S)
    local = region == 'LOCAL'
    n = len(S)
    if kind == 'positive' and not method.startswith('RELATIVE_'):
        return _symmetric_reduce(_negatives(S, pos, -xp.inf, out), 'max', local).astype(xp.float64)
    if kind == 'negative' and method.startswith('RELATIVE_'):
        values = _negatives(S, pos, xp.inf, out)
        return _order_statistic(values, n - 1 - pos.count, sn, local)
    # From the positives' own values, gathered: there are few of them. HARD, EASY, RAND
    # negatives take the least similar, RELATIVE_* positives an order statistic.
    values = S.ravel()[pos.at]
    if local:
        values = _by_row(values, pos, xp.inf)
        if kind == 'negative':
            return values.min(axis=1, keepdims=True).astype(xp.float64)
        return _order_statistic(values, pos.count, sn, True)
    if len(values) == 0:
        return xp.full((1, 1), xp.inf)
    if kind == 'negative':
        return values.min(keepdims=True).reshape(1, 1).astype(xp.float64)
    return _order_statistic(values[None, :], xp.asarray([len(values)]), sn, False)


def kept_pairs(S, same, params, pos=None, work=None, out=None, test=None):
    """Thresholds and selection: the pairs (i, j) that the miner keeps, as an N x N
    boolean array (`out` if given), False on the diagonal. `pos` is positive_pairs(same)
    (computed if not given); `work` (N x N, S's dtype) and `test` (N x N, bool) are
    optional work arrays; S is left as it is.

    Each rule compares S_ij with t + m in double (float64 bounds against S's values).
    Everything here is comparisons and boolean algebra, no masked writes into S: a
    masked copy branches on each element, ten times the cost of a branch-free pass.
    """
    xp = array_module(S)
    p = params
    pos = positive_pairs(same) if pos is None else pos
    rules = []
    if p.ap_mining_method != 'RAND':
        bound = threshold(S, pos, p.ap_mining_region, p.ap_mining_method, p.identsn,
                          'positive', work) + p.margin_ident
        rules.append((KEEP_RULES[p.ap_mining_method][0], bound, 'positive'))
    if p.an_mining_method != 'RAND':
        bound = threshold(S, pos, p.an_mining_region, p.an_mining_method, p.diffsn,
                          'negative', work) + p.margin_diff
        rules.append((KEEP_RULES[p.an_mining_method][1], bound, 'negative'))
    keep = xp.empty(S.shape, dtype=bool) if out is None else out
    keep.fill(True)
    if rules and test is None:
        test = xp.empty(S.shape, dtype=bool)
    for rule, bound, kind in rules:
        getattr(xp, rule)(S, bound, out=test)                # kept if the pair were of this kind
        if kind == 'positive':
            xp.less_equal(same, test, out=test)              # a negative, or a kept positive
        else:
            xp.logical_or(test, same, out=test)              # a positive, or a kept negative
        xp.logical_and(keep, test, out=keep)
    xp.fill_diagonal(keep, False)
    return keep


def selected_pairs(X, labels, params):
    """The pairs (i, j) that the selection keeps, as an N x N boolean array."""
    return kept_pairs(similarity(X), label_relation(labels), params)


def finite_rows(S):
    """Whether each row of S (N x N, from similarity) is all finite, S_ii included.

    Without a full pass where it can: every S_ij is bounded by the larger of S_ii and
    S_jj (Cauchy-Schwarz, with float rounding well inside the factor 4), and S_ii is
    finite only if x_i is, so a finite diagonal below a quarter of the largest float
    means a finite S.
    """
    xp = array_module(S)
    d = xp.diagonal(S)
    if bool(xp.isfinite(d).all()) and float(d.max()) <= xp.finfo(S.dtype).max / 4:
        return xp.ones(len(S), dtype=bool)
    return xp.isfinite(S).all(axis=1)


def _drop_unkept(S, keep, work, mask):
    """S := S on the kept pairs, -inf elsewhere. A masked fill (or xp.where) with a
    dense random mask costs NumPy a branch per element, 5 to 10 times a plain pass, so
    the -inf goes in by arithmetic: its bits times (not kept), as an integer array in
    `work`'s storage, added to S (x + 0 is x, x + -inf is -inf)."""
    xp = array_module(S)
    uint = numpy.dtype(f'u{S.itemsize}')
    minus_inf = numpy.array(-numpy.inf, S.dtype).view(uint)[()]
    xp.logical_not(keep, out=mask)
    xp.multiply(mask, minus_inf, out=work.view(uint))
    S += work


def loss_and_weights(S, keep, pos, work=None, mask=None):
    """From S, the kept pairs `keep` (kept_pairs') and the positive pairs: the per-query
    losses l_i (float64) and W = G / (g / N), written over S.

    The layer's one log-sum-exp recipe: max_all = the largest kept S_ij of row i,
    max_pos = its largest kept positive S_ij; one exponential per kept pair,
    f_j = e^(S_ij - max_pos) for a positive, e_j = e^(S_ij - max_all) for a negative;
    with r = e^(max_pos - max_all) and sum_all = sum e + r sum f,
        l_i = (max_all - max_pos) + log(sum_all) - log(sum f),
        W_ij = f_j (r / sum_all - 1 / sum f) for a kept positive, e_j / sum_all for a kept
        negative, 0 for a pair mining drops.
    A row without a kept positive gives 0 and a zero row; a row of S that is not all
    finite gives NaN and a NaN row. The positives' exponentials are taken on their
    gathered values; `work` (N x N, S's dtype) and `mask` (N x N, bool) are optional
    work arrays.
    """
    xp = array_module(S)
    n = len(S)
    f64 = xp.float64
    finite = finite_rows(S)
    work = xp.empty_like(S) if work is None else work
    mask = xp.empty(S.shape, dtype=bool) if mask is None else mask
    # The kept positives' logits, -inf for the others; the shifts.
    kept_pos = xp.where(keep.ravel()[pos.at], S.ravel()[pos.at], -xp.inf)
    max_pos = _by_row(kept_pos, pos, -xp.inf).max(axis=1)
    has_pos = max_pos > -xp.inf
    _drop_unkept(S, keep, work, mask)
    max_all = S.max(axis=1)
    # Any finite shift does for a row whose terms are all 0 (nothing kept, or no positive).
    max_all = xp.where(max_all > -xp.inf, max_all, 0)
    max_pos = xp.where(has_pos, max_pos, 0)
    # e_j over the row, then the positives out of it: their f_j comes apart.
    S -= max_all[:, None]
    xp.exp(S, out=S)
    f = xp.exp(kept_pos - max_pos[pos.row])
    S.ravel()[pos.at] = 0
    sum_neg = (S @ xp.ones((n, 1), S.dtype))[:, 0].astype(f64)   # a GEMV: 3x a row sum
    sum_pos = _by_row(f, pos, 0).sum(axis=1, dtype=f64)
    sum_pos = xp.where(has_pos, sum_pos, 1)
    r = xp.exp(max_pos.astype(f64) - max_all.astype(f64))
    sum_all = sum_neg + r * sum_pos
    losses = (max_all.astype(f64) - max_pos.astype(f64)) + xp.log(sum_all) - xp.log(sum_pos)
    pos_scale = r / sum_all - 1 / sum_pos
    neg_scale = 1 / sum_all
    for a in (losses, pos_scale, neg_scale):
        a[~has_pos] = 0
        a[~finite] = xp.nan
    S *= neg_scale[:, None].astype(S.dtype)
    S.ravel()[pos.at] = f * pos_scale[pos.row].astype(S.dtype)
    return losses, S


def recall_at_k(S, same, pos, ks, ahead=None):
    """R@K for each K in ks (docs/layer_contract.md §3): among queries with a positive
    (counted, never read off a similarity, which may be -inf or NaN), the share with
    fewer than K negatives at least as similar as their best positive. `ahead`
    (N x N, bool) is an optional work array."""
    xp = array_module(S)
    best = _by_row(S.ravel()[pos.at], pos, -xp.inf).max(axis=1, keepdims=True)
    eligible = pos.count > 0
    ahead = xp.greater_equal(S, best, out=ahead)
    xp.greater(ahead, same, out=ahead)                       # ahead and a negative
    ahead_negatives = ahead.view(xp.uint8).sum(axis=1, dtype=xp.int32)
    n_eligible = int(eligible.sum())
    return tuple(int((eligible & (ahead_negatives < K)).sum()) / n_eligible if n_eligible else 0.0
                 for K in ks)


def feature_asum(X):
    """(1/N) sum |X|."""
    return float(array_module(X).abs(X).sum()) / len(X)


class Workspace:
    """N x N work arrays kept from one call to the next (a layer holds one), so that a
    forward pass does not allocate, and the system zero, fresh N x N arrays each time.
    The weights that forward returns live in it: they last until the next forward."""

    def __init__(self):
        self._arrays = {}

    def get(self, xp, name, shape, dtype):
        a = self._arrays.get(name)
        if a is None or array_module(a) is not xp or a.shape != shape or a.dtype != dtype:
            self._arrays.pop(name, None)
            a = self._arrays[name] = xp.empty(shape, dtype)
        return a


def forward(X, labels, params, ks=RECALL_KS, workspace=None):
    """Loss, R@K for K in ks, feature_asum and W for features X (N x D), labels (N).
    With a Workspace, the N x N arrays (W among them) are its, reused."""
    xp = array_module(X)
    n = len(X)
    work = workspace or Workspace()
    S = similarity(X, out=work.get(xp, 'S', (n, n), X.dtype))
    same = label_relation(labels, out=work.get(xp, 'same', (n, n), bool))
    scratch = work.get(xp, 'scratch', (n, n), S.dtype)
    mask = work.get(xp, 'mask', (n, n), bool)
    keep = work.get(xp, 'keep', (n, n), bool)
    pos = positive_pairs(same)
    recall = recall_at_k(S, same, pos, ks, mask) if ks else ()
    asum = feature_asum(X)
    kept_pairs(S, same, params, pos, scratch, keep, mask)
    losses, W = loss_and_weights(S, keep, pos, scratch, mask)
    return Forward(loss=float(losses.sum()) / n, recall=recall, asum=asum, weights=W)


def gradient(X, W, g, workspace=None):
    """d(g * loss)/dX = (g / N)(W + W^T) X.

    On NumPy, a transposed read of W is an element-wise strided pass (a few ns per
    element) while BLAS reads W^T for free: for small D, W X + W^T X (two GEMMs) is the
    cheaper; for larger D, W + W^T formed in tiles and one GEMM.
    """
    xp = array_module(X)
    n, d = X.shape
    if xp is numpy and d <= _TWO_GEMMS_MAX_D:
        G = W @ X
        G += W.T @ X
    else:
        work = workspace or Workspace()
        G = _add_transpose(W, work.get(xp, 'scratch', W.shape, W.dtype)) @ X
    G *= g / n
    return G


def _add_transpose(A, out):
    """out = A + A^T (out must not overlap A); on NumPy in column strips of one cache
    line (see _mirror_upper)."""
    xp = array_module(A)
    if xp is not numpy:
        return xp.add(A, A.T, out=out)
    n = len(A)
    w = max(1, 64 // A.itemsize)
    for j in range(0, n, w):
        cols = slice(j, j + w)
        numpy.add(A[:, cols], A[cols, :].T, out=out[:, cols])
    return out
