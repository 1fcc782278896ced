"""The N-pair multi-class loss (docs/layer_contract.md §3 and §4), array-generic.

Every function takes arrays of one module, NumPy or CuPy, and works in that module
(`xp` below); nothing here knows about Caffe. Query i's candidates are the N batch
samples (column i is i itself, never a pair) and the M references, if any: C = N + M
columns. The pieces, in the order of a forward pass:

    S = similarity(X, R)                   # N x C: [X X^T | X R^T], X X^T exactly symmetric
    same = label_relation(labels, ref_labels)      # N x C: same label (npair_loss.pairs)
    pos = positive_pairs(same)             # the positive pairs (i, c), c != i
    recall_at_k(S, same, pos, ks)          # monitors
    feature_asum(X)
    keep = kept_pairs(S, same, params, pos)        # thresholds and selection (npair_loss.mining)
    losses, W = loss_and_weights(S, keep, pos)     # l_i, and W = G / (g / N) in S's storage
    gradient(X, W, g, R=R)                 # d(g * loss)/dX = (g / N)((W_B + W_B^T) X + W_R R)
    reference_gradient(X, W, g)            # d(g * loss)/dR = (g / N) W_R^T X

with W = [W_B | W_R], its batch and references' columns. `forward` runs them in that
order. `params` is any object with NPairLossParameter's field names as attributes,
enums by name ('LOCAL', 'RELATIVE_HARD'), floats holding the float32 values
(npair_loss.params.NPairParams). At most two float N x C arrays are alive at once, S
(then W) and one work array, plus three boolean ones (`same`, `keep`, one work mask);
a Workspace keeps them from one call to the next. With no references (M = 0) every
step is the one the batch alone takes, to the bit.

The loss follows the layer's one log-sum-exp recipe (the C++ paths' NPairRowTermsOf):
per query row, max_all is its largest kept similarity and max_pos its largest kept
positive one; each kept pair takes one exponential, e^(S_ic - max_pos) for a positive,
e^(S_ic - max_all) for a negative, and l_i and the pair weights follow from the two
sums. A row of S that is not all finite (S_ii and the references' columns included)
gives l_i = NaN and a NaN row of W, whatever was mined. A sample is never its own
positive or negative, NaN labels included.

Speed comes from avoiding what NumPy does slowly, rather than from fewer passes alone:
reading a transposed N x N array (a cache line per element: S's batch block and
W_B + W_B^T are built in strips, see _mirror_upper), masked writes or selects with a
dense random mask (a branch per element: selection stays boolean, and its -inf fill is
integer arithmetic, see _drop_unkept), and reductions along short rows (the symmetric
block is reduced down its columns; row sums are GEMVs). Positive pairs are few, so
everything about positives works on their gathered values, never on an N x C array.
The CuPy path takes the plain forms where NumPy's need a Python loop.
"""
from typing import NamedTuple

import numpy

from .arrays import array_module, blas_products
from .mining import kept_pairs
from .pairs import by_row, label_relation, positive_pairs

RECALL_KS = (1, 5, 10)

# Rows of the GEMM panels of NumPy's similarity.
_PANEL = 64
# Up to this D, NumPy's gradient takes two GEMMs rather than a transposed pass over W.
_TWO_GEMMS_MAX_D = 96


class Forward(NamedTuple):
    loss: float
    recall: tuple           # R@K for each K asked for
    asum: float
    weights: object         # W = G / (g / N) (N x C): the gradients come from it


def _has_rows(a):
    return a is not None and len(a) > 0


def similarity(X, R=None, out=None):
    """S = [X X^T | X R^T] (N x C) for features X (N x D) and references R (M x D, or
    None), the batch block exactly symmetric: a RELATIVE_* threshold with margin 0
    compares a pair with its own mirror. Written into `out` when given.

    A general GEMM (cuBLAS's) need not give S_ij == S_ji, so CuPy averages the block
    with its transpose, exact where it was already symmetric. NumPy's own X @ X.T is
    symmetric (syrk) but mirrors its triangle with an element-wise strided copy that
    costs more than the product; here NumPy computes the upper triangle by row panels
    (GEMMs, half the flops), averages each diagonal tile with its transpose, and
    mirrors the rest.
    """
    xp = array_module(X)
    n = len(X)
    m = len(R) if _has_rows(R) else 0
    S = xp.empty((n, n + m), X.dtype) if out is None else out
    if xp is not numpy:
        B = S if m == 0 else xp.empty((n, n), X.dtype)
        with blas_products(xp):
            xp.matmul(X, X.T, out=B)
        B += B.T.copy()
        B *= 0.5
        if m:
            S[:, :n] = B
            with blas_products(xp):
                S[:, n:] = X @ R.T
        return S
    B = S[:, :n]
    for i in range(0, n, _PANEL):
        rows = slice(i, i + _PANEL)
        with blas_products(xp):
            numpy.matmul(X[rows], X[i:].T, out=B[rows, i:])
        diagonal = B[rows, rows]
        diagonal += diagonal.T.copy()
        diagonal *= 0.5
    _mirror_upper(B)
    if m:
        with blas_products(xp):
            numpy.matmul(X, R.T, out=S[:, n:])
    return S


def _mirror_upper(S):
    """S's lower triangle := its upper triangle's transpose (NumPy, S square), in strips
    of one cache line: each row of a strip is written whole while the strip's source
    rows stay in L1. A plain S.T copy reads a new cache line (and page) per element."""
    n = len(S)
    w = max(1, 64 // S.itemsize)
    for i in range(0, n, w):
        rows = slice(i, i + w)
        S[i + w:, rows] = S[rows, i + w:].T


def selected_pairs(X, labels, params, R=None, ref_labels=None):
    """The pairs (i, c) that the selection keeps, as an N x C boolean array."""
    return kept_pairs(similarity(X, R), label_relation(labels, ref_labels), params)


def finite_rows(S):
    """Whether each row of S (N x C, from similarity) is all finite, S_ii included.

    Without a full pass over the batch block where it can: every S_ij is bounded by
    the larger of S_ii and S_jj (Cauchy-Schwarz, with float rounding well inside the
    factor 4), and S_ii is finite only if x_i is, so a finite diagonal below a quarter
    of the largest float means a finite block. The references' columns are checked.
    """
    xp = array_module(S)
    n = len(S)
    d = xp.diagonal(S)
    if bool(xp.isfinite(d).all()) and float(d.max()) <= xp.finfo(S.dtype).max / 4:
        finite = xp.ones(n, dtype=bool)
    else:
        finite = xp.isfinite(S[:, :n]).all(axis=1)
    if S.shape[1] > n:
        finite &= xp.isfinite(S[:, n:]).all(axis=1)
    return finite


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

    The layer's one log-sum-exp recipe: max_all = the largest kept S_ic of row i,
    max_pos = its largest kept positive S_ic; one exponential per kept pair,
    f_c = e^(S_ic - max_pos) for a positive, e_c = e^(S_ic - max_all) for a negative;
    with r = e^(max_pos - max_all) and sum_all = sum e + r sum f,
        l_i = (max_all - max_pos) + log(sum_all) - log(sum f),
        W_ic = f_c (r / sum_all - 1 / sum f) for a kept positive, e_c / sum_all for a kept
        negative, 0 for a pair mining drops.
    A row without a kept positive gives 0 and a zero row; a row of S that is not all
    finite gives NaN and a NaN row. The positives' exponentials are taken on their
    gathered values; `work` (N x C, S's dtype) and `mask` (N x C, bool) are optional
    work arrays.
    """
    xp = array_module(S)
    f64 = xp.float64
    finite = finite_rows(S)
    work = xp.empty_like(S) if work is None else work
    mask = xp.empty(S.shape, dtype=bool) if mask is None else mask
    # The kept positives' logits, -inf for the others; the shifts.
    kept_pos = xp.where(keep.ravel()[pos.at], S.ravel()[pos.at], -xp.inf)
    max_pos = by_row(kept_pos, pos, -xp.inf).max(axis=1)
    has_pos = max_pos > -xp.inf
    _drop_unkept(S, keep, work, mask)
    max_all = S.max(axis=1)
    # Any finite shift does for a row whose terms are all 0 (nothing kept, or no positive).
    max_all = xp.where(max_all > -xp.inf, max_all, 0)
    max_pos = xp.where(has_pos, max_pos, 0)
    # e_c over the row, then the positives out of it: their f_c comes apart.
    S -= max_all[:, None]
    xp.exp(S, out=S)
    f = xp.exp(kept_pos - max_pos[pos.row])
    S.ravel()[pos.at] = 0
    with blas_products(xp):
        sum_neg = (S @ xp.ones((S.shape[1], 1), S.dtype))[:, 0].astype(f64)  # a GEMV: 3x a row sum
    sum_pos = by_row(f, pos, 0).sum(axis=1, dtype=f64)
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
    """R@K for each K in ks (docs/layer_contract.md §3), over each query's candidates:
    among queries with a positive (counted, never read off a similarity, which may be
    -inf or NaN), the share with fewer than K negatives at least as similar as their
    best positive. `ahead` (N x C, bool) is an optional work array."""
    xp = array_module(S)
    best = by_row(S.ravel()[pos.at], pos, -xp.inf).max(axis=1, keepdims=True)
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
    """N x C work arrays kept from one call to the next (a layer holds one), so that a
    forward pass does not allocate, and the system zero, fresh N x C arrays each time.
    The weights that forward returns live in it: they last until the next forward."""

    def __init__(self):
        self._arrays = {}

    def get(self, xp, name, shape, dtype):
        a = self._arrays.get(name)
        if a is None or array_module(a) is not xp or a.shape != shape or a.dtype != dtype:
            self._arrays.pop(name, None)
            a = self._arrays[name] = xp.empty(shape, dtype)
        return a


def forward(X, labels, params, ks=RECALL_KS, workspace=None, R=None, ref_labels=None):
    """Loss, R@K for K in ks, feature_asum and W for features X (N x D), labels (N) and,
    optionally, references R (M x D) with their labels (M). With a Workspace, the N x C
    arrays (W among them) are its, reused."""
    xp = array_module(X)
    n = len(X)
    shape = (n, n + (len(R) if _has_rows(R) else 0))
    work = workspace or Workspace()
    S = similarity(X, R, out=work.get(xp, 'S', shape, X.dtype))
    same = label_relation(labels, ref_labels, out=work.get(xp, 'same', shape, bool))
    scratch = work.get(xp, 'scratch', shape, S.dtype)
    mask = work.get(xp, 'mask', shape, bool)
    keep = work.get(xp, 'keep', shape, bool)
    pos = positive_pairs(same)
    recall = recall_at_k(S, same, pos, ks, mask) if ks else ()
    asum = feature_asum(X)
    kept_pairs(S, same, params, pos, scratch, keep, mask)
    losses, W = loss_and_weights(S, keep, pos, scratch, mask)
    return Forward(loss=float(losses.sum()) / n, recall=recall, asum=asum, weights=W)


def gradient(X, W, g, workspace=None, R=None):
    """d(g * loss)/dX = (g / N)((W_B + W_B^T) X + W_R R), W = [W_B | W_R] (forward's
    weights, N x C) and R the references they were computed with (or None).

    On NumPy, a transposed read of W_B is an element-wise strided pass (a few ns per
    element) while BLAS reads W_B^T for free: for small D, W_B X + W_B^T X (two GEMMs)
    is the cheaper; for larger D, W_B + W_B^T formed in tiles and one GEMM.
    """
    xp = array_module(X)
    n, d = X.shape
    W_B = W[:, :n]
    with blas_products(xp):
        if xp is numpy and d <= _TWO_GEMMS_MAX_D:
            G = W_B @ X
            G += W_B.T @ X
        else:
            work = workspace or Workspace()
            G = _add_transpose(W_B, work.get(xp, 'scratch', W.shape, W.dtype)[:, :n]) @ X
        if _has_rows(R):
            G += W[:, n:] @ R
    G *= g / n
    return G


def reference_gradient(X, W, g):
    """d(g * loss)/dR = (g / N) W_R^T X (M x D): each reference gets the query end of
    its pairs."""
    n = len(X)
    with blas_products(array_module(X)):
        G = W[:, n:].T @ X
    G *= g / n
    return G


def _add_transpose(A, out):
    """out = A + A^T (A square; out must not overlap A); on NumPy in column strips of
    one cache line (see _mirror_upper)."""
    xp = array_module(A)
    if xp is not numpy:
        return xp.add(A, A.T, out=out)
    n = len(A)
    w = max(1, 64 // A.itemsize)
    for j in range(0, n, w):
        cols = slice(j, j + w)
        numpy.add(A[:, cols], A[cols, :].T, out=out[:, cols])
    return out
