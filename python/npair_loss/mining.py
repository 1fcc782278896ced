"""The N-pair loss's mining (docs/layer_contract.md §3), array-generic (NumPy or CuPy):
each query's thresholds t+_i and t-_i, and the pairs that the keep rules select.

A loss asks `kept_pairs` which pairs (i, c) to use, from the similarities S (N x C,
query i against candidate c: the batch, then any references; npair_math.similarity)
and the label relation (pairs.label_relation); a second loss over the same candidates
reuses it as it is. LOCAL thresholds come from the query's own row of candidates,
GLOBAL ones from every query-candidate pair: a pair of two batch samples counts as
(i, j) and (j, i), a pair with a reference once, which the N x C array holds by itself.

Everything here is reductions, partitions, comparisons and boolean algebra, no masked
writes into S: a masked copy branches on each element, ten times the cost of a
branch-free pass. The batch's block of S is symmetric, so a row's reduction over it is
taken down its column (the same values), which NumPy reduces with SIMD across rows.
"""
import math

from .arrays import array_module
from .pairs import by_row, positive_pairs

# Selection: the comparison that keeps a pair, S_ic against t + m, as (rule for a
# positive, rule for a negative). RAND keeps every pair.
KEEP_RULES = {
    'HARD': ('less', 'greater'),
    'EASY': ('greater_equal', 'less_equal'),
    'RELATIVE_HARD': ('less_equal', 'greater_equal'),
    'RELATIVE_EASY': ('greater_equal', 'less_equal'),
}


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


def _negatives(S, pos, fill, out=None):
    """S on the negative pairs, `fill` on the positive ones and on each query itself,
    in `out`; its batch block symmetric, as S's is."""
    xp = array_module(S)
    out = xp.empty_like(S) if out is None else out
    xp.copyto(out, S)
    out.ravel()[pos.at] = fill
    xp.fill_diagonal(out, fill)
    return out


def _extreme(a, op, local):
    """a.max() or a.min() (op) of an N x C array whose first N columns are symmetric:
    over each row as a column (N, 1) if local, else over all of a as (1, 1). The
    batch block is reduced down its columns, the references' block along its rows."""
    if not local:
        return getattr(a, op)(keepdims=True)
    n = len(a)
    t = getattr(a[:, :n], op)(axis=0)[:, None]
    if a.shape[1] > n:
        xp = array_module(a)
        t = getattr(xp, op + 'imum')(t, getattr(a[:, n:], op)(axis=1, keepdims=True))
    return t


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
    (kind 'negative'), as float64 of shape (N, 1) for LOCAL, (1, 1) for GLOBAL, from S
    (N x C, its batch block symmetric) and its positive pairs. `out`, if given, is an
    N x C work array of S's dtype; its values are lost.

    HARD, EASY, RAND: t+ is the most similar negative, t- the least similar positive
    (-inf / +inf when there is none). RELATIVE_*: the element pos(n, sn) of the
    ascending list of positive (t+, with identsn) or negative (t-, with diffsn)
    similarities; the value is meaningless where the list is empty, which then has no
    pair to select.
    """
    xp = array_module(S)
    local = region == 'LOCAL'
    if kind == 'positive' and not method.startswith('RELATIVE_'):
        return _extreme(_negatives(S, pos, -xp.inf, out), 'max', local).astype(xp.float64)
    if kind == 'negative' and method.startswith('RELATIVE_'):
        values = _negatives(S, pos, xp.inf, out)
        return _order_statistic(values, S.shape[1] - 1 - pos.count, sn, local)
    # From the positives' own values, gathered: there are few of them. HARD, EASY, RAND
    # negatives take the least similar, RELATIVE_* positives an order statistic.
    values = S.ravel()[pos.at]
    if local:
        values = by_row(values, pos, xp.inf)
        if kind == 'negative':
            return values.min(axis=1, keepdims=True).astype(xp.float64)
        return _order_statistic(values, pos.count, sn, True)
    if len(values) == 0:
        return xp.full((1, 1), xp.inf)
    if kind == 'negative':
        return values.min(keepdims=True).reshape(1, 1).astype(xp.float64)
    return _order_statistic(values[None, :], xp.asarray([len(values)]), sn, False)


def kept_pairs(S, same, params, pos=None, work=None, out=None, test=None):
    """Thresholds and selection: the pairs (i, c) that the miner keeps, as an N x C
    boolean array (`out` if given), False where c is query i itself. `same` is the
    label relation, `pos` positive_pairs(same) (computed if not given); `work`
    (N x C, S's dtype) and `test` (N x C, bool) are optional work arrays; S is left as
    it is.

    `params` is any object with NPairLossParameter's field names as attributes, enums
    by name (npair_loss.params.NPairParams). Each rule compares S_ic with t + m in
    double (float64 bounds against S's values).
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
