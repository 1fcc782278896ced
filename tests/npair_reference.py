"""Brute-force float64 reference for NPairMultiClassLoss.

Written from the layer contract (docs/layer_contract.md §3 to §5) in plain loops over
queries and pairs, to be read side by side with it and with the paper
(Sohn, "Improved Deep Metric Learning with Multi-class N-pair Loss Objective").
Slow on purpose: O(N C D) Python loops and a sort per list, for small test batches.
It imports none of the project's layer code, so the layers can be judged against it.

Query i (one of the N batch samples) has C candidates: the N batch samples, then the M
references, if any. A pair is (i, c) with c != i; `labels` below is the candidates'
labels (the batch's first) and S the N x C similarities of queries to candidates.

    result = evaluate(X, labels, Params(an_mining_method='HARD'), R=R, ref_labels=z)
    result.loss, result.recall[1], result.asum, result.grad, result.ref_grad
    top_values(result, ntop=5)   # what the layer's tops hold, in order
"""
import math
from typing import NamedTuple

import numpy as np

RECALL_KS = (1, 5, 10)
METHODS = ('HARD', 'EASY', 'RAND', 'RELATIVE_HARD', 'RELATIVE_EASY')
REGIONS = ('GLOBAL', 'LOCAL')


class Params(NamedTuple):
    """NPairLossParameter with the proto's defaults; enums by name."""
    margin_ident: float = 0.0
    margin_diff: float = 0.0
    identsn: float = -1.0
    diffsn: float = -1.0
    ap_mining_region: str = 'LOCAL'
    ap_mining_method: str = 'RAND'
    an_mining_region: str = 'LOCAL'
    an_mining_method: str = 'RAND'


def params_from_message(msg):
    """Params from any protobuf message with NPairLossParameter's fields."""
    values = {}
    for name in Params._fields:
        field = msg.DESCRIPTOR.fields_by_name[name]
        value = getattr(msg, name)
        values[name] = field.enum_type.values_by_number[value].name if field.enum_type else value
    return Params(**values)


def to_text(params):
    """params as the body of an NPairLossParameter in protobuf text format, one line."""
    return ' '.join(f'{name}: {value!r}' if isinstance(value, float) else f'{name}: {value}'
                    for name, value in params._asdict().items())


class Result(NamedTuple):
    loss: float
    recall: dict            # K -> R@K for K in RECALL_KS
    asum: float
    grad: np.ndarray        # d(g * loss)/dX, N x D float64
    ref_grad: np.ndarray    # d(g * loss)/dR, M x D float64 (M = 0 without references)
    kept_positives: list    # kept_positives[i]: the c of P^(i), ascending
    kept_negatives: list    # kept_negatives[i]: the c of N^(i), ascending
    w: np.ndarray           # w_ic and w+_ic (N x C, float64): G = (g / N)(w - w_pos)
    w_pos: np.ndarray


def f32(value):
    """The float32 value the proto holds, as a double (margins and SN are float32)."""
    return float(np.float32(value))


def as_rows(X):
    """Features as a list of N rows of D doubles (bottom[0] read as an N x D matrix)."""
    X = np.asarray(X, dtype=np.float64)
    return X.reshape(len(X), -1).tolist()


def as_labels(labels):
    return np.asarray(labels).reshape(-1).tolist()


def candidates(X, labels, R=None, ref_labels=None):
    """(rows, candidate rows, candidate labels): the batch's rows, then the references'."""
    rows, labels = as_rows(X), as_labels(labels)
    if R is None:
        return rows, rows, labels
    refs, ref_labels = as_rows(R) if len(R) else [], as_labels(ref_labels)
    assert len(ref_labels) == len(refs), 'one label per reference'
    return rows, rows + refs, labels + ref_labels


def total(values):
    """The sum, correctly rounded when every term is finite; otherwise as IEEE arithmetic
    has it (inf, or NaN), where math.fsum would raise on inf + -inf."""
    values = list(values)
    return math.fsum(values) if all(map(math.isfinite, values)) else sum(values)


def similarity(rows, candidate_rows=None):
    """S_ic = x_i . (candidate c), correctly rounded; the candidates are the rows
    themselves unless given."""
    candidate_rows = rows if candidate_rows is None else candidate_rows
    return [[total(a * b for a, b in zip(xi, xc)) for xc in candidate_rows] for xi in rows]


def positives(labels, i):
    """P(i): the other candidates with query i's label (labels: the candidates'). A NaN
    label equals no label, so a sample labelled NaN has none."""
    return [c for c in range(len(labels)) if c != i and labels[c] == labels[i]]


def negatives(labels, i):
    """N(i): the other candidates with another label. A sample labelled NaN is every
    other query's negative, but never its own."""
    return [c for c in range(len(labels)) if c != i and labels[c] != labels[i]]


def finite_row(S, i):
    """Whether every similarity of query i's row, S_ii and references included, is
    finite."""
    return all(math.isfinite(v) for v in S[i])


def relative_position(n, sn):
    """pos(n, sn): the index into an ascending list of n similarities (§3)."""
    sn = f32(sn)
    if sn >= 0:                         # -0.0 too
        p = n - 1 - float(math.floor(sn))
    else:
        p = float(math.trunc(n - 1 + sn * n))
    return int(min(max(p, 0.0), n - 1.0))


def thresholds(S, labels, region, method, sn, kind):
    """t+_i (kind 'positive', selects positives) or t-_i (kind 'negative') for every
    query i (the N rows of S; labels: the C candidates').

    None where a RELATIVE_* list is empty: such a list selects nothing.
    """
    N = len(S)
    if not method.startswith('RELATIVE_'):
        # t+ is the most similar negative, t- the least similar positive.
        if kind == 'positive':
            others, pick, empty = negatives, max, -math.inf
        else:
            others, pick, empty = positives, min, math.inf
        if region == 'LOCAL':
            return [pick((S[i][j] for j in others(labels, i)), default=empty) for i in range(N)]
        batch = pick((S[i][j] for i in range(N) for j in others(labels, i)), default=empty)
        return [batch] * N
    members = positives if kind == 'positive' else negatives
    if region == 'LOCAL':
        lists = [sorted(S[i][j] for j in members(labels, i)) for i in range(N)]
    else:           # every (query, candidate) pair: each pair of two queries twice
        lists = [sorted(S[i][j] for i in range(N) for j in members(labels, i))] * N
    return [values[relative_position(len(values), sn)] if values else None for values in lists]


# Selection rules: is a pair with similarity s kept, against the bound b = t + m?
KEEP_POSITIVE = {
    'HARD': lambda s, b: s < b,
    'EASY': lambda s, b: s >= b,
    'RAND': lambda s, b: True,
    'RELATIVE_HARD': lambda s, b: s <= b,
    'RELATIVE_EASY': lambda s, b: s >= b,
}
KEEP_NEGATIVE = {
    'HARD': lambda s, b: s > b,
    'EASY': lambda s, b: s <= b,
    'RAND': lambda s, b: True,
    'RELATIVE_HARD': lambda s, b: s >= b,
    'RELATIVE_EASY': lambda s, b: s <= b,
}


def bounds(S, labels, params):
    """(t+_i + m+, t-_i + m-) for every i, None for an empty RELATIVE_* list."""
    p = params
    t_pos = thresholds(S, labels, p.ap_mining_region, p.ap_mining_method, p.identsn, 'positive')
    t_neg = thresholds(S, labels, p.an_mining_region, p.an_mining_method, p.diffsn, 'negative')
    b_pos = [None if t is None else t + f32(p.margin_ident) for t in t_pos]
    b_neg = [None if t is None else t + f32(p.margin_diff) for t in t_neg]
    return b_pos, b_neg


def selection(S, labels, params):
    """(kept positives, kept negatives): for each query i, the j of P^(i) and of N^(i)."""
    b_pos, b_neg = bounds(S, labels, params)
    keep_pos = KEEP_POSITIVE[params.ap_mining_method]
    keep_neg = KEEP_NEGATIVE[params.an_mining_method]
    kept_pos, kept_neg = [], []
    for i in range(len(S)):
        kept_pos.append([j for j in positives(labels, i)
                         if b_pos[i] is not None and keep_pos(S[i][j], b_pos[i])])
        kept_neg.append([j for j in negatives(labels, i)
                         if b_neg[i] is not None and keep_neg(S[i][j], b_neg[i])])
    return kept_pos, kept_neg


def logsumexp(values):
    """log sum exp of finite values, shifted by their maximum."""
    top = max(values)
    return top + math.log(math.fsum(math.exp(v - top) for v in values))


def query_loss(S, i, kept_pos, kept_neg):
    """l_i = log sum over P^(i) u N^(i) - log sum over P^(i); 0 when P^(i) is empty;
    NaN, whatever was kept, when row i of S is not all finite."""
    if not finite_row(S, i):
        return math.nan
    if not kept_pos:
        return 0.0
    kept = kept_pos + kept_neg
    return logsumexp([S[i][j] for j in kept]) - logsumexp([S[i][j] for j in kept_pos])


def pair_weights(S, kept_pos, kept_neg):
    """(w, w+): the softmax of each query row over its kept pairs, and over its kept
    positives (0 off them); both rows 0 without a kept positive (l_i is then a constant),
    NaN where row i of S is not all finite."""
    N, C = len(S), len(S[0])
    w, w_pos = [[0.0] * C for _ in range(N)], [[0.0] * C for _ in range(N)]
    for i in range(N):
        if not finite_row(S, i):
            w[i], w_pos[i] = [math.nan] * C, [math.nan] * C
            continue
        if not kept_pos[i]:
            continue
        lse_all = logsumexp([S[i][j] for j in kept_pos[i] + kept_neg[i]])
        lse_pos = logsumexp([S[i][j] for j in kept_pos[i]])
        for j in kept_pos[i] + kept_neg[i]:
            w[i][j] = math.exp(S[i][j] - lse_all)
        for j in kept_pos[i]:
            w_pos[i][j] = math.exp(S[i][j] - lse_pos)
    return w, w_pos


def pair_gradient(w, w_pos, g):
    """G_ic = (g / N)(w_ic - w+_ic)."""
    N = len(w)
    return [[g / N * (a - b) for a, b in zip(w[i], w_pos[i])] for i in range(N)]


def feature_gradient(rows, candidate_rows, G):
    """d(sum_ic G_ic S_ic)/dX: query a's row of S gives sum_c G_ac (candidate c), and
    every row i where a is the candidate G_ia x_i: row a gets
    sum_j (G_aj + G_ja) x_j over the batch plus sum_m G_a,N+m r_m over the references."""
    N, D = len(rows), len(rows[0]) if rows else 0
    refs = candidate_rows[N:]
    return [[total([(G[a][j] + G[j][a]) * rows[j][k] for j in range(N)]
                   + [G[a][N + m] * refs[m][k] for m in range(len(refs))])
             for k in range(D)] for a in range(N)]


def reference_gradient(rows, candidate_rows, G):
    """d(sum_ic G_ic S_ic)/dR: reference m is candidate N + m of every query i, so it
    gets sum_i G_i,N+m x_i."""
    N, D = len(rows), len(rows[0]) if rows else 0
    return [[total(G[i][N + m] * rows[i][k] for i in range(N)) for k in range(D)]
            for m in range(len(candidate_rows) - N)]


def recall_at_k(S, labels, K):
    """Hits among eligible queries (P(i) not empty): fewer than K negative candidates
    score at least as high as the best positive. 0 when no query is eligible. Where a row
    holds a NaN, the contract leaves its hit to what an implementation computes (here:
    Python's max and >=), and the tests compare no such row."""
    eligible = [i for i in range(len(S)) if positives(labels, i)]
    hits = 0
    for i in eligible:
        best = max(S[i][j] for j in positives(labels, i))
        ahead = sum(1 for m in negatives(labels, i) if S[i][m] >= best)
        hits += ahead < K
    return hits / len(eligible) if eligible else 0.0


def feature_asum(rows):
    """(1/N) sum |X|."""
    return total(abs(v) for row in rows for v in row) / len(rows)


def evaluate(X, labels, params=Params(), g=1.0, R=None, ref_labels=None):
    """Everything the layer computes, for features X (N x ...) and N labels, with the
    references R (M x ..., the same D) and their M labels as candidates too, if given."""
    rows, candidate_rows, labels = candidates(X, labels, R, ref_labels)
    N, C = len(rows), len(candidate_rows)
    assert len(labels) == C, 'one label per sample'
    D = len(rows[0])
    assert all(len(r) == D for r in candidate_rows), 'references of the features\' D'
    S = similarity(rows, candidate_rows)
    kept_pos, kept_neg = selection(S, labels, params)
    loss = total(query_loss(S, i, kept_pos[i], kept_neg[i]) for i in range(N)) / N
    w, w_pos = pair_weights(S, kept_pos, kept_neg)
    G = pair_gradient(w, w_pos, g)
    grad = np.array(feature_gradient(rows, candidate_rows, G), dtype=np.float64).reshape(N, D)
    ref_grad = np.array(reference_gradient(rows, candidate_rows, G),
                        dtype=np.float64).reshape(C - N, D)
    return Result(loss=loss,
                  recall={K: recall_at_k(S, labels, K) for K in RECALL_KS},
                  asum=feature_asum(rows), grad=grad, ref_grad=ref_grad,
                  kept_positives=kept_pos, kept_negatives=kept_neg,
                  w=np.array(w, dtype=np.float64).reshape(N, C),
                  w_pos=np.array(w_pos, dtype=np.float64).reshape(N, C))


def top_values(result, ntop):
    """The values of the layer's ntop tops (§2): loss, R@1, R@5, R@10, asum."""
    if ntop == 1:
        return [result.loss]
    recalls = [result.recall[K] for K in RECALL_KS[:ntop - 2]]
    return [result.loss] + recalls + [result.asum]


def boundary_gap(X, labels, params, S=None, R=None, ref_labels=None):
    """How far the batch is from changing its selection: the smallest |S_ic - (t + m)|
    over the pairs that a mined (non-RAND) rule compares (the references, if given,
    among the candidates).

    A pair whose similarity is the threshold itself (the list element that a RELATIVE_*
    rule picks, or its mirror (j, i)) compared with margin 0 is not counted: it is kept
    or dropped by the rule's own equality, at any precision, as long as S's batch block
    is symmetric. S, if given, is the similarity of X to its candidates.
    """
    rows, candidate_rows, labels = candidates(X, labels, R, ref_labels)
    S = similarity(rows, candidate_rows) if S is None else S
    b_pos, b_neg = bounds(S, labels, params)
    gap = math.inf
    for members, b, method, margin in (
            (positives, b_pos, params.ap_mining_method, params.margin_ident),
            (negatives, b_neg, params.an_mining_method, params.margin_diff)):
        if method == 'RAND':
            continue
        for i in range(len(S)):
            if b[i] is None or math.isinf(b[i]):
                continue
            for j in members(labels, i):
                if S[i][j] == b[i] and f32(margin) == 0 and method.startswith('RELATIVE_'):
                    continue
                gap = min(gap, abs(S[i][j] - b[i]))
    return gap


def recall_gap(X, labels, S=None, R=None, ref_labels=None):
    """The smallest |S_im - s*_i| between a query's best positive and its negatives
    (how far Recall@K is from a tie), over its candidates. S, if given, is the
    similarity of X to its candidates."""
    rows, candidate_rows, labels = candidates(X, labels, R, ref_labels)
    S = similarity(rows, candidate_rows) if S is None else S
    gap = math.inf
    for i in range(len(S)):
        if positives(labels, i):
            best = max(S[i][j] for j in positives(labels, i))
            gap = min([gap] + [abs(S[i][m] - best) for m in negatives(labels, i)])
    return gap
