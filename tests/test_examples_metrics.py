"""Recall@K and NMI of python/npair_examples/metrics.py, against brute force."""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
from npair_examples import metrics  # noqa: E402


def brute_force_recall(x, labels, k):
    """The paper's Recall@K spelled out: for each query, rank every other sample
    by cosine similarity (a different-class sample tied with a same-class one
    ranks first), and look for a same-class sample among the first k."""
    x = [np.asarray(v, float) / np.linalg.norm(v) for v in x]
    hits = eligible = 0
    for i in range(len(x)):
        others = [(float(np.dot(x[i], x[j])), labels[j] == labels[i]) for j in range(len(x))
                  if j != i]
        if not any(same for _, same in others):
            continue
        eligible += 1
        ranked = sorted(others, key=lambda t: (-t[0], t[1]))
        hits += any(same for _, same in ranked[:k])
    return hits / eligible if eligible else 0.0


@pytest.mark.parametrize("seed", range(5))
def test_recall_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n, d = 40, 4
    labels = rng.integers(0, 6, size=n)
    x = rng.normal(size=(n, d)) + 0.7 * np.eye(d)[labels % d]
    got = metrics.recall_at_k(x, labels, ks=(1, 2, 4, 8))
    for k in (1, 2, 4, 8):
        assert got[k] == pytest.approx(brute_force_recall(x, labels, k))


def test_recall_with_ties_and_singletons():
    # quantised embeddings make many exact ties; class 9 has a single sample
    rng = np.random.default_rng(7)
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, 9])
    x = rng.integers(-1, 2, size=(len(labels), 2)).astype(float) + 1e-3 * (np.arange(9) == 0)[:, None]
    x[x.sum(1) == 0] = 1.0
    got = metrics.recall_at_k(x, labels)
    for k in (1, 2, 4, 8):
        assert got[k] == pytest.approx(brute_force_recall(x, labels, k))


def test_recall_extremes():
    labels = np.repeat([0, 1, 2], 4)
    separated = np.eye(3)[labels]
    assert metrics.recall_at_k(separated, labels) == {1: 1.0, 2: 1.0, 4: 1.0, 8: 1.0}
    collapsed = np.ones((12, 3))          # every sample identical: 8 negatives tie
    r = metrics.recall_at_k(collapsed, labels)
    assert r[1] == r[2] == r[4] == r[8] == 0.0
    assert metrics.recall_at_k(np.eye(3), [0, 1, 2]) == {1: 0.0, 2: 0.0, 4: 0.0, 8: 0.0}


def test_recall_is_cosine_not_euclidean():
    # same direction, very different norms: cosine puts them together
    labels = np.array([0, 0, 1, 1])
    x = np.array([[1.0, 0.0], [100.0, 1.0], [0.0, 1.0], [1.0, 50.0]])
    assert metrics.recall_at_k(x, labels)[1] == 1.0


def test_nmi_sanity():
    pytest.importorskip("sklearn")
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 25)
    centres = np.eye(8)[:4] * 10
    tight = centres[labels] + 0.1 * rng.normal(size=(100, 8))
    assert metrics.nmi(tight, labels) == pytest.approx(1.0)
    # NMI ignores label names
    assert metrics.nmi(tight, (labels + 1) * 7 % 5) == pytest.approx(1.0)
    noise = rng.normal(size=(100, 8))
    assert metrics.nmi(noise, labels) < 0.2
    row = metrics.retrieval_metrics(tight, labels)
    assert set(row) == {"recall@1", "recall@2", "recall@4", "recall@8", "map@r", "r_precision",
                        "nmi"}
    assert row["recall@1"] == 1.0


def brute_force_map_at_r(x, labels):
    """MAP@R and R-precision by their definitions: every query ranks all other samples
    by cosine, descending, a different-class sample first at equal similarity."""
    x = np.asarray(x, dtype=np.float64)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    s = x @ x.T
    aps, rps = [], []
    for q in range(len(labels)):
        others = [j for j in range(len(labels)) if j != q]
        R = sum(labels[j] == labels[q] for j in others)
        if R == 0:
            continue
        ranked = sorted(others, key=lambda j: (-s[q, j], labels[j] == labels[q]))
        found, precision_sum = 0, 0.0
        for i, j in enumerate(ranked[:R], 1):
            if labels[j] == labels[q]:
                found += 1
                precision_sum += found / i
        aps.append(precision_sum / R)
        rps.append(found / R)
    return float(np.mean(aps)), float(np.mean(rps))


@pytest.mark.parametrize("seed", range(4))
def test_map_at_r_matches_brute_force_with_ties_and_singletons(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 7, size=45)
    labels[:2] = [100, 101]                       # classes of one sample: not queries
    # +-1 entries: 16 directions for 45 samples, many exact ties (every norm is 2, so
    # the similarities are exact multiples of 1/4 however they are summed).
    x = rng.choice([-1.0, 1.0], size=(45, 4))
    got = metrics.map_at_r(x, labels, chunk=8)       # chunks cut the rows
    np.testing.assert_allclose(got, brute_force_map_at_r(x, labels), rtol=1e-12)


def test_map_at_r_separates_what_recall_at_1_does_not():
    # Two classes on the unit circle, 10 degrees apart within a class, 15 across:
    # every nearest neighbour is of the query's class, the second of some is not.
    degrees = np.array([0, 10, 20, -15, -25, -35])
    x = np.stack([np.cos(np.radians(degrees)), np.sin(np.radians(degrees))], axis=1)
    labels = np.array([0, 0, 0, 1, 1, 1])
    assert metrics.recall_at_k(x, labels)[1] == 1.0
    map_r, r_prec = metrics.map_at_r(x, labels)
    # queries at 0 and -15 find the other class second: AP 1/2, R-precision 1/2
    assert map_r == pytest.approx((4 + 0.5 + 0.5) / 6)
    assert r_prec == pytest.approx((4 + 0.5 + 0.5) / 6)
    assert metrics.map_at_r(np.ones((6, 2)), labels) == (0.0, 0.0)   # collapsed
