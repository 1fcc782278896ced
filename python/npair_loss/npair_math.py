"""The N-pair multi-class loss (spec sections 3 and 4), array-generic.

Every function takes arrays of one module, NumPy or CuPy, and works in that module
(`xp` below); nothing here knows about Caffe. The pieces, in the order of a forward pass:

    S = similarity(X)                      # N x N inner products, exactly symmetric
    same = label_relation(labels)          # N x N: same label (diagonal included)
    recall_at_k(S, same, ks)               # monitors
    feature_asum(X)
    keep = kept_pairs(S, same, params)     # thresholds and selection: N x N bool
    losses, W = loss_and_weights(S, same, keep)   # l_i, and W = w - w+ in S's storage
    gradient(X, W, g)                      # d(g * loss)/dX = (g / N)(W + W^T) X

`forward` runs them in that order. `params` is any object with NPairLossParameter's
field names as attributes, enums by name ('LOCAL', 'RELATIVE_HARD'), floats holding the
float32 values (npair_loss.params.NPairParams). At most two float N x N arrays are alive
at once, S (then W) and one work array, plus three boolean ones (`same`, `keep`, one
work mask); a Workspace keeps them from one call to the next.

Speed (issue 6) comes from avoiding what NumPy does slowly, rather than from fewer
passes alone: reading a transposed N x N array (a cache line per element: S and
W + W^T are built in strips, see _mirror_upper), masked writes with a dense random mask
(a branch per element: selection stays boolean, and the exp array is masked by
multiplication) and reductions along short rows (symmetric arrays are reduced down
their columns; row sums are GEMVs). The CuPy path takes the plain forms where NumPy's
need a Python loop.
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
# A row whose best kept positive lies more than this below its best kept pair has its
# sums shifted apart (loss_and_weights); exp(-40) keeps float32 far from underflow.
_GAP = 40.0

# Selection (spec section 3): the comparison that keeps a pair, S_ij against t + m, as
# (rule for a positive, rule for a negative). RAND keeps every pair.
_KEEP = {
    'HARD': ('less', 'greater'),
    'EASY': ('greater_equal', 'less_equal'),
    'RELATIVE_HARD': ('less_equal', 'greater_equal'),
    'RELATIVE_EASY': ('greater_equal', 'less_equal'),
}


class Forward(NamedTuple):
    loss: float
    recall: tuple           # R@K for each K asked for
    asum: float
    weights: object         # W = w - w+ (N x N): gradient() turns it into d loss/dX


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
    """same_ij = (y_i == y_j), diagonal included: positives are `same` off the
    diagonal, negatives are `~same`."""
    return array_module(labels).equal(labels[:, None], labels[None, :], out=out)


def _positives(S, same, fill, out=None):
    """S on the positive pairs, `fill` elsewhere (diagonal included), in `out`."""
    xp = array_module(S)
    out = xp.empty_like(S) if out is None else out
    out.fill(fill)
    xp.copyto(out, S, where=same)
    xp.fill_diagonal(out, fill)
    return out


def _negatives(S, same, fill, out=None):
    """S on the negative pairs, `fill` elsewhere, in `out`."""
    xp = array_module(S)
    out = xp.empty_like(S) if out is None else out
    xp.copyto(out, S)
    _put(out, fill, same)
    return out


def _symmetric_reduce(a, op, local):
    """a.max() or a.min() (op) of a symmetric array: over each row as a column
    (N, 1) if local, else over all of a as (1, 1). A row's reduction is taken down its
    column, the same values, which NumPy reduces with SIMD across rows (2x faster)."""
    if not local:
        return getattr(a, op)(keepdims=True)
    return getattr(a, op)(axis=0)[:, None]


def _put(a, value, where):
    """a[where] = value, without the copy that boolean indexing makes."""
    xp = array_module(a)
    xp.copyto(a, xp.asarray(value, dtype=a.dtype), where=where)


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


def threshold(S, same, region, method, sn, kind, out=None):
    """t+ (kind 'positive': the threshold that positives are selected by) or t-
    (kind 'negative'), as float64 of shape (N, 1) for LOCAL, (1, 1) for GLOBAL, from a
    symmetric S (similarity's). `out`, if given, is an N x N work array of S's dtype;
    its values are lost.

    HARD, EASY, RAND: t+ is the most similar negative, t- the least similar positive
    (-inf / +inf when there is none). RELATIVE_*: the element pos(n, sn) of the
    ascending list of positive (t+, with identsn) or negative (t-, with diffsn)
    similarities; the value is meaningless where the list is empty, which then has no
    pair to select.
    """
    xp = array_module(S)
    local = region == 'LOCAL'
    if not method.startswith('RELATIVE_'):
        if kind == 'positive':
            t = _symmetric_reduce(_negatives(S, same, -xp.inf, out), 'max', local)
        else:
            t = _symmetric_reduce(_positives(S, same, xp.inf, out), 'min', local)
        return t.astype(xp.float64)
    if not local and kind == 'positive':
        # The batch's positive pairs, gathered: there are few of them.
        at = xp.flatnonzero(same)
        values = S.ravel()[at[at % (len(S) + 1) != 0]]      # the diagonal left out
        if len(values) == 0:
            return xp.full((1, 1), xp.inf)
        k = int(relative_position(xp.asarray(len(values)), sn))
        values.partition(k)
        return values[k:k + 1].reshape(1, 1).astype(xp.float64)
    # Members first in ascending order, then +inf fillers: element k of the list is
    # element k of the row (or of the whole array) once partitioned there.
    n_same = xp.count_nonzero(same, axis=1)
    if kind == 'positive':
        values = _positives(S, same, xp.inf, out)
        counts = n_same - 1
    else:
        values = _negatives(S, same, xp.inf, out)
        counts = len(S) - n_same
    if local:
        k = relative_position(counts, sn)
        values.partition(xp.unique(k).tolist(), axis=1)
        t = values[xp.arange(len(S)), k][:, None]
    else:
        k = int(relative_position(counts.sum(), sn))
        flat = values.ravel()
        flat.partition(k)
        t = flat[k].reshape(1, 1)
    return t.astype(xp.float64)


def kept_pairs(S, same, params, work=None, out=None, test=None):
    """Thresholds and selection: the pairs (i, j) that the miner keeps, as an N x N
    boolean array (`out` if given), False on the diagonal. `work` (N x N, S's dtype)
    and `test` (N x N, bool) are optional work arrays; S is left as it is.

    Each rule compares S_ij with t + m in double (float64 bounds against S's values).
    Everything here is comparisons and boolean algebra, no masked writes into S: a
    masked copy branches on each element, ten times the cost of a branch-free pass.
    """
    xp = array_module(S)
    p = params
    rules = []
    if p.ap_mining_method != 'RAND':
        bound = threshold(S, same, p.ap_mining_region, p.ap_mining_method, p.identsn,
                          'positive', work) + p.margin_ident
        rules.append((_KEEP[p.ap_mining_method][0], bound, 'positive'))
    if p.an_mining_method != 'RAND':
        bound = threshold(S, same, p.an_mining_region, p.an_mining_method, p.diffsn,
                          'negative', work) + p.margin_diff
        rules.append((_KEEP[p.an_mining_method][1], bound, 'negative'))
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


def loss_and_weights(S, same, keep, work=None, mask=None):
    """From S and the kept pairs `keep` (see kept_pairs): the per-query losses
    l_i = lse(kept) - lse(kept positives) (float64), 0 without a kept positive, and
    W = w - w+ with w the softmax of S over the row's kept pairs and w+ that over its
    kept positives (0 elsewhere). W is written over S; rows without a kept positive
    are 0. `work` (N x N, S's dtype) and `mask` (N x N, bool) are optional work arrays.

    One exp per pair: both sums of row i are shifted by m_i, the largest S_ij of the
    row (kept or not), and l_i = log(sum of all) - log(sum of positives). A row whose
    best kept positive lies more than _GAP below m_i (its positive terms would lose
    precision, or underflow) is computed apart, each sum shifted by its own maximum.
    """
    xp = array_module(S)
    kept_pos = xp.logical_and(keep, same, out=mask)
    E_pos = _positives(S, kept_pos, -xp.inf, work)
    m_pos = E_pos.max(axis=1, keepdims=True)
    has_pos = m_pos > -xp.inf
    m = _symmetric_reduce(S, 'max', True)
    far = xp.nonzero(has_pos & (m_pos < m - _GAP))[0]
    if len(far):
        L = S[far]
        _put(L, -xp.inf, ~keep[far])
        far_losses, far_weights = _loss_and_weights_apart(L, same[far])
    S -= m
    xp.exp(S, out=S)
    E = S
    E *= keep
    if not bool(has_pos.all()):
        E[~has_pos[:, 0]] = 0                                # l_i = 0: no weight at all
    xp.multiply(E, kept_pos, out=E_pos)
    ones = xp.ones((len(S), 1), S.dtype)                     # row sums as GEMVs: 3x faster
    s_all = E @ ones
    s_pos = E_pos @ ones
    has_pos[far] = False                                     # rows done apart
    s_all = xp.where(has_pos, s_all, 1)
    s_pos = xp.where(has_pos, s_pos, 1)
    E *= 1 / s_all
    E_pos *= 1 / s_pos
    E -= E_pos
    losses = xp.log(s_all.astype(xp.float64)) - xp.log(s_pos.astype(xp.float64))
    if len(far):
        E[far] = far_weights
        losses[far] = far_losses
    return losses[:, 0], E


def _loss_and_weights_apart(L, same):
    """loss_and_weights for rows that all have a kept positive, from their kept logits
    L (-inf off the kept pairs), each log-sum-exp shifted by its own maximum; losses
    as float64 of shape (rows, 1)."""
    xp = array_module(L)
    w_pos = xp.where(same, L, -xp.inf)
    m_pos = w_pos.max(axis=1, keepdims=True)
    m_all = L.max(axis=1, keepdims=True)
    w_pos -= m_pos
    xp.exp(w_pos, out=w_pos)
    s_pos = w_pos.sum(axis=1, keepdims=True)
    w_pos /= s_pos
    w = xp.exp(L - m_all)
    s_all = w.sum(axis=1, keepdims=True)
    w /= s_all
    w -= w_pos
    f64 = xp.float64
    losses = ((m_all.astype(f64) - m_pos.astype(f64)) + xp.log(s_all.astype(f64))
              - xp.log(s_pos.astype(f64)))
    return losses, w


def recall_at_k(S, same, ks, work=None, ahead=None):
    """R@K for each K in ks (spec section 3): among queries with a positive, the share
    with fewer than K negatives at least as similar as their best positive.
    `work` (N x N, S's dtype) and `ahead` (N x N, bool) are optional work arrays."""
    xp = array_module(S)
    best = _symmetric_reduce(_positives(S, same, -xp.inf, work), 'max', True)
    eligible = best[:, 0] > -xp.inf
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
    recall = recall_at_k(S, same, ks, scratch, mask) if ks else ()
    asum = feature_asum(X)
    kept_pairs(S, same, params, scratch, keep, mask)
    losses, W = loss_and_weights(S, same, keep, scratch, mask)
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
