"""Brute-force float64 reference for NPairMultiClassLoss.

Written from the layer contract (docs/layer_contract.md §3 to §5) in plain loops over
queries and pairs, to be read side by side with it and with the paper
(Sohn, "Improved Deep Metric Learning with Multi-class N-pair Loss Objective").
Slow on purpose: O(N^2 D) Python loops and a sort per list, for small test batches.
It imports none of the project's layer code, so the layers can be judged against it.

    result = evaluate(X, labels, Params(an_mining_method='HARD'))
    result.loss, result.recall[1], result.asum, result.grad
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
    kept_positives: list    # kept_positives[i]: the j of P^(i), ascending
    kept_negatives: list    # kept_negatives[i]: the j of N^(i), ascending
    w: np.ndarray           # w_ij and w+_ij (N x N, float64): G = (g / N)(w - w_pos)
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


def total(values):
    """The sum, correctly rounded when every term is finite; otherwise as IEEE arithmetic
    has it (inf, or NaN), where math.fsum would raise on inf + -inf."""
    values = list(values)
    return math.fsum(values) if all(map(math.isfinite, values)) else sum(values)


def similarity(rows):
    """S_ij = x_i . x_j, correctly rounded."""
    return [[total(a * b for a, b in zip(xi, xj)) for xj in rows] for xi in rows]


def positives(labels, i):
    """P(i): the other samples with i's label. A NaN label equals no label, so a sample
    labelled NaN has none."""
    return [j for j in range(len(labels)) if j != i and labels[j] == labels[i]]


def negatives(labels, i):
    """N(i): the other samples with another label. A sample labelled NaN is every other
    sample's negative, but never its own."""
    return [j for j in range(len(labels)) if j != i and labels[j] != labels[i]]


def finite_row(S, i):
    """Whether every similarity of query i's row, S_ii included, is finite."""
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
    """t+_i (kind 'positive', selects positives) or t-_i (kind 'negative') for every i.

    None where a RELATIVE_* list is empty: such a list selects nothing.
    """
    N = len(labels)
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
    else:                               # every ordered pair: each unordered pair twice
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
    for i in range(len(labels)):
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
    N = len(S)
    w, w_pos = [[0.0] * N for _ in range(N)], [[0.0] * N for _ in range(N)]
    for i in range(N):
        if not finite_row(S, i):
            w[i], w_pos[i] = [math.nan] * N, [math.nan] * N
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
    """G_ij = (g / N)(w_ij - w+_ij)."""
    N = len(w)
    return [[g / N * (a - b) for a, b in zip(w[i], w_pos[i])] for i in range(N)]


def feature_gradient(rows, G):
    """(G + G^T) X: row a gets sum_j (G_aj + G_ja) x_j."""
    N, D = len(rows), len(rows[0]) if rows else 0
    return [[total((G[a][j] + G[j][a]) * rows[j][k] for j in range(N)) for k in range(D)]
            for a in range(N)]


def recall_at_k(S, labels, K):
    """Hits among eligible queries (P(i) not empty): fewer than K negatives score at
    least as high as the best positive. 0 when no query is eligible. Where a row holds a
    NaN, the contract leaves its hit to what an implementation computes (here: Python's
    max and >=), and the tests compare no such row."""
    eligible = [i for i in range(len(labels)) if positives(labels, i)]
    hits = 0
    for i in eligible:
        best = max(S[i][j] for j in positives(labels, i))
        ahead = sum(1 for m in negatives(labels, i) if S[i][m] >= best)
        hits += ahead < K
    return hits / len(eligible) if eligible else 0.0


def feature_asum(rows):
    """(1/N) sum |X|."""
    return total(abs(v) for row in rows for v in row) / len(rows)


def evaluate(X, labels, params=Params(), g=1.0):
    """Everything the layer computes, for features X (N x ...) and N labels."""
    rows, labels = as_rows(X), as_labels(labels)
    N = len(rows)
    assert len(labels) == N, 'one label per sample'
    S = similarity(rows)
    kept_pos, kept_neg = selection(S, labels, params)
    loss = total(query_loss(S, i, kept_pos[i], kept_neg[i]) for i in range(N)) / N
    w, w_pos = pair_weights(S, kept_pos, kept_neg)
    grad = np.array(feature_gradient(rows, pair_gradient(w, w_pos, g)),
                    dtype=np.float64).reshape(N, -1)
    return Result(loss=loss,
                  recall={K: recall_at_k(S, labels, K) for K in RECALL_KS},
                  asum=feature_asum(rows), grad=grad,
                  kept_positives=kept_pos, kept_negatives=kept_neg,
                  w=np.array(w, dtype=np.float64).reshape(N, N),
                  w_pos=np.array(w_pos, dtype=np.float64).reshape(N, N))


def top_values(result, ntop):
    """The values of the layer's ntop tops (§2): loss, R@1, R@5, R@10, asum."""
    if ntop == 1:
        return [result.loss]
    recalls = [result.recall[K] for K in RECALL_KS[:ntop - 2]]
    return [result.loss] + recalls + [result.asum]


def boundary_gap(X, labels, params, S=None):
    """How far the batch is from changing its selection: the smallest |S_ij - (t + m)|
    over the pairs that a mined (non-RAND) rule compares.

    A pair whose similarity is the threshold itself (the list element that a RELATIVE_*
    rule picks, or its mirror (j, i)) compared with margin 0 is not counted: it is kept
    or dropped by the rule's own equality, at any precision, as long as S is symmetric.
    S, if given, is similarity(as_rows(X)).
    """
    labels = as_labels(labels)
    S = similarity(as_rows(X)) if S is None else S
    b_pos, b_neg = bounds(S, labels, params)
    gap = math.inf
    for members, b, method, margin in (
            (positives, b_pos, params.ap_mining_method, params.margin_ident),
            (negatives, b_neg, params.an_mining_method, params.margin_diff)):
        if method == 'RAND':
            continue
        for i in range(len(labels)):
            if b[i] is None or math.isinf(b[i]):
                continue
            for j in members(labels, i):
                if S[i][j] == b[i] and f32(margin) == 0 and method.startswith('RELATIVE_'):
                    continue
                gap = min(gap, abs(S[i][j] - b[i]))
    return gap


def recall_gap(X, labels, S=None):
    """The smallest |S_im - s*_i| between a query's best positive and its negatives
    (how far Recall@K is from a tie). S, if given, is similarity(as_rows(X))."""
    labels = as_labels(labels)
    S = similarity(as_rows(X)) if S is None else S
    gap = math.inf
    for i in range(len(labels)):
        if positives(labels, i):
            best = max(S[i][j] for j in positives(labels, i))
            gap = min([gap] + [abs(S[i][m] - best) for m in negatives(labels, i)])
    return gap
