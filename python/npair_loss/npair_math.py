"""The N-pair multi-class loss (spec sections 3 and 4), array-generic.

Every function takes arrays of one module, NumPy or CuPy, and works in that module
(`xp` below); nothing here knows about Caffe. The pieces, in the order of a forward pass:

    S = similarity(X)                      # N x N inner products
    same = label_relation(labels)          # N x N: same label (diagonal included)
    recall_at_k(S, same, ks)               # monitors, from the untouched S
    feature_asum(X)
    mask_unselected(S, same, params)       # thresholds and selection: S becomes the
                                           # logits of the kept pairs, -inf elsewhere
    losses, W = loss_and_weights(S, same)  # l_i, and W = w - w+ in S's storage
    gradient(X, W, g)                      # d(g * loss)/dX = (g / N)(W + W^T) X

`forward` runs them in that order. `params` is any object with NPairLossParameter's
field names as attributes, enums by name ('LOCAL', 'RELATIVE_HARD'), floats holding the
float32 values (npair_loss.params.NPairParams). At most three N x N arrays are alive at
once: S (then the kept logits, then W), `same`, and one work array.
"""
import math
import sys
from typing import NamedTuple

import numpy

RECALL_KS = (1, 5, 10)

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


def similarity(X):
    """S = X X^T for features X (N x D), exactly symmetric: a RELATIVE_* threshold with
    margin 0 compares a pair with its own mirror. NumPy's X @ X.T already is (syrk);
    a general GEMM (CuPy's) need not be, hence the average, exact where it is."""
    S = X @ X.T
    S += S.T.copy()
    S *= 0.5
    return S


def label_relation(labels):
    """same_ij = (y_i == y_j), diagonal included: positives are `same` off the
    diagonal, negatives are `~same`."""
    return labels[:, None] == labels[None, :]


def _positives(S, same, fill):
    """S on the positive pairs, `fill` elsewhere (diagonal included)."""
    xp = array_module(S)
    out = xp.where(same, S, fill)
    xp.fill_diagonal(out, fill)
    return out


def _negatives(S, same, fill):
    """S on the negative pairs, `fill` elsewhere."""
    return array_module(S).where(same, fill, S)


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


def threshold(S, same, region, method, sn, kind):
    """t+ (kind 'positive': the threshold that positives are selected by) or t-
    (kind 'negative'), as float64 of shape (N, 1) for LOCAL, (1, 1) for GLOBAL.

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
            t = _negatives(S, same, -xp.inf).max(axis=1 if local else None, keepdims=True)
        else:
            t = _positives(S, same, xp.inf).min(axis=1 if local else None, keepdims=True)
        return t.astype(xp.float64)
    # Members first in ascending order, then +inf fillers: element k of the list is
    # element k of the row (or of the whole array) once partitioned there.
    if kind == 'positive':
        values = _positives(S, same, xp.inf)
        counts = same.sum(axis=1) - 1
    else:
        values = _negatives(S, same, xp.inf)
        counts = len(S) - same.sum(axis=1)
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


def mask_unselected(S, same, params):
    """Thresholds and selection, in place: S becomes the logits of the kept pairs,
    with -inf on every pair the miner drops and on the diagonal. Returns S.

    Each rule compares S_ij with t + m in double (float64 bounds against S's values).
    """
    xp = array_module(S)
    p = params
    rules = []
    if p.ap_mining_method != 'RAND':
        bound = threshold(S, same, p.ap_mining_region, p.ap_mining_method, p.identsn,
                          'positive') + p.margin_ident
        rules.append((_KEEP[p.ap_mining_method][0], bound, 'positive'))
    if p.an_mining_method != 'RAND':
        bound = threshold(S, same, p.an_mining_region, p.an_mining_method, p.diffsn,
                          'negative') + p.margin_diff
        rules.append((_KEEP[p.an_mining_method][1], bound, 'negative'))
    drop = xp.empty(S.shape, dtype=bool)
    for rule, bound, kind in rules:
        getattr(xp, rule)(S, bound, out=drop)                # kept if the pair were of this kind
        if kind == 'positive':
            xp.logical_not(drop, out=drop)
            xp.logical_and(drop, same, out=drop)             # positives that fail the rule
        else:
            xp.logical_or(drop, same, out=drop)
            xp.logical_not(drop, out=drop)                   # negatives that fail the rule
        S[drop] = -xp.inf
    xp.fill_diagonal(S, -xp.inf)
    return S


def selected_pairs(X, labels, params):
    """The pairs (i, j) that the selection keeps, as an N x N boolean array."""
    S = mask_unselected(similarity(X), label_relation(labels), params)
    return S > -array_module(S).inf


def loss_and_weights(L, same):
    """From the kept logits L (see mask_unselected): the per-query losses
    l_i = lse(kept) - lse(kept positives), 0 without a kept positive, and
    W = w - w+ with w the softmax of L's row and w+ the softmax of its kept positives.
    W is written over L; rows without a kept positive are 0. Each log-sum-exp is
    shifted by its own maximum.
    """
    xp = array_module(L)
    w_pos = xp.where(same, L, -xp.inf)                       # kept positives only
    m_pos = w_pos.max(axis=1, keepdims=True)
    has_pos = m_pos > -xp.inf
    L[~has_pos[:, 0]] = -xp.inf                              # l_i = 0: no weight at all
    m_pos = xp.where(has_pos, m_pos, 0)
    m_all = xp.where(has_pos, L.max(axis=1, keepdims=True), 0)
    w_pos -= m_pos
    xp.exp(w_pos, out=w_pos)
    s_pos = xp.where(has_pos, w_pos.sum(axis=1, keepdims=True), 1)
    w_pos /= s_pos
    L -= m_all
    xp.exp(L, out=L)
    s_all = xp.where(has_pos, L.sum(axis=1, keepdims=True), 1)
    L /= s_all
    L -= w_pos
    losses = (m_all - m_pos) + xp.log(s_all) - xp.log(s_pos)
    return losses[:, 0], L


def recall_at_k(S, same, ks):
    """R@K for each K in ks (spec section 3): among queries with a positive, the share
    with fewer than K negatives at least as similar as their best positive."""
    xp = array_module(S)
    best = _positives(S, same, -xp.inf).max(axis=1, keepdims=True)
    eligible = best[:, 0] > -xp.inf
    ahead = S >= best
    total = ahead.sum(axis=1)
    xp.logical_and(ahead, same, out=ahead)
    ahead_negatives = total - ahead.sum(axis=1)
    n_eligible = int(eligible.sum())
    return tuple(int((eligible & (ahead_negatives < K)).sum()) / n_eligible if n_eligible else 0.0
                 for K in ks)


def feature_asum(X):
    """(1/N) sum |X|."""
    return float(array_module(X).abs(X).sum()) / len(X)


def forward(X, labels, params, ks=RECALL_KS):
    """Loss, R@K for K in ks, feature_asum and W for features X (N x D), labels (N)."""
    S = similarity(X)
    same = label_relation(labels)
    recall = recall_at_k(S, same, ks) if ks else ()
    asum = feature_asum(X)
    losses, W = loss_and_weights(mask_unselected(S, same, params), same)
    return Forward(loss=float(losses.sum()) / len(X), recall=recall, asum=asum, weights=W)


def gradient(X, W, g):
    """d(g * loss)/dX = (g / N)(W + W^T) X."""
    return (W + W.T) @ X * (g / len(X))
