"""npair_loss.npair_math with references (the loss's bottoms 2 and 3) against the float64
reference, without Caffe: every mining method x region for each way references can
relate to a batch (conftest.REFERENCE_LAYOUTS), exact ties on a grid, M = 0 as the batch
alone, empty cases and non-finite references."""
import itertools
import math
import warnings

import numpy as np
import pytest

import npair_reference as ref
from conftest import GRAD_TOL, REFERENCE_LAYOUTS, RTOL, Cases
from npair_loss import npair_math
from test_fallback_math import ALL_RULES, as_layer_params

ALL_MININGS = list(itertools.product(ALL_RULES, ALL_RULES))


def run_math(case, dtype=np.float32, g=1.0):
    """Tops [loss, R@1, R@5, R@10, asum], d(g loss)/dX and d(g loss)/dR, in dtype."""
    X, R = case.X.astype(dtype), case.R.astype(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter('error')                 # no overflow, no 0/0, no log(0)
        out = npair_math.forward(X, case.labels.astype(dtype), as_layer_params(case.params),
                                 R=R, ref_labels=case.ref_labels.astype(dtype))
        grad = npair_math.gradient(X, out.weights, g, R=R)
        ref_grad = npair_math.reference_gradient(X, out.weights, g)
    return [out.loss, *out.recall, out.asum], grad, ref_grad


def mining(ap, an, **values):
    return ref.Params(ap_mining_region=ap[0], ap_mining_method=ap[1],
                      an_mining_region=an[0], an_mining_method=an[1], **values)


@pytest.mark.parametrize('layout', REFERENCE_LAYOUTS)
@pytest.mark.parametrize('ap', ALL_RULES, ids='-'.join)
def test_every_rule_pair_matches_reference(ap, layout, npair_cases, assert_matches_reference):
    rng = np.random.default_rng(ALL_RULES.index(ap) * 10 + REFERENCE_LAYOUTS.index(layout))
    for an in ALL_RULES:
        params = npair_cases.params(rng, ap_mining_region=ap[0], ap_mining_method=ap[1],
                                    an_mining_region=an[0], an_mining_method=an[1])
        case = npair_cases.with_references(rng, params, layout)
        for dtype, rtol, grad_tol in ((np.float32, RTOL, GRAD_TOL),
                                      (np.float64, 1e-10, 1e-8)):
            tops, grad, ref_grad = run_math(case, dtype, g=1.5)
            assert_matches_reference(case, tops, grad, g=1.5, rtol=rtol, grad_tol=grad_tol,
                                     ref_grad=ref_grad)


# Label sets on the grid (batch, references), as the C++ layer's tests have them.
GRID_LABELS = {
    'M<N': ([0, 0, 1, 1, 2, 3, 3, 4], [1, 4, 5]),
    'M>N': ([0, 1, 2, 2], [0, 0, 1, 3, 3, 2, 4, 1, 5, 0, 2]),
    'only positives': ([0, 1, 2, 3, 4], [0, 1, 1, 3, 0, 4]),
    'only negatives': ([0, 0, 1, 1, 1, 2], [7, 8, 8, 9]),
    'NaN labels': ([0, math.nan, 0, 1, 2, 1], [math.nan, 1, math.nan, 2, 0]),
    'one query': ([3], [3, 1, 3, 2]),
}
GRID_VALUES = [dict(identsn=1.0, diffsn=2.0), dict(identsn=-0.3, diffsn=-0.6),
               dict(identsn=0.0, diffsn=0.0), dict(identsn=1e30, diffsn=-1e30),
               dict(margin_ident=0.25, margin_diff=-0.25),
               dict(margin_ident=0.1, margin_diff=-0.05)]


@pytest.mark.parametrize('name', GRID_LABELS)
def test_exact_ties_on_a_grid_match_reference(name, assert_matches_reference):
    """Quarters from -1 to 1: float32's S is exact, so the fallback sees the reference's
    similarities bit for bit, ties at thresholds, margins and Recall@K included, and must
    select exactly what it selects, for every mining (SNs and margins in turn)."""
    labels, ref_labels = GRID_LABELS[name]
    rng = np.random.default_rng(len(labels) * 100 + len(ref_labels))
    X = rng.integers(-4, 5, size=(len(labels), 3)) / 4
    R = rng.integers(-4, 5, size=(len(ref_labels), 3)) / 4
    for k, (ap, an) in enumerate(ALL_MININGS):
        case = Cases.of(X, labels, mining(ap, an, **GRID_VALUES[k % len(GRID_VALUES)]),
                        R, ref_labels)
        tops, grad, ref_grad = run_math(case)
        assert_matches_reference(case, tops, grad, ref_grad=ref_grad)
        kept = npair_math.selected_pairs(case.X, case.labels, as_layer_params(case.params),
                                         case.R, case.ref_labels)
        result = case.reference()
        for i in range(case.N):
            assert sorted(np.flatnonzero(kept[i])) == sorted(
                result.kept_positives[i] + result.kept_negatives[i]), (i, case)


def test_no_references_is_the_batch_alone():
    """M = 0 references computes what the batch alone computes, to the bit, with NaN
    labels, at every mining."""
    rng = np.random.default_rng(8)
    X = rng.normal(size=(9, 4)).astype(np.float32)
    labels = np.array([0, 1, 0, 2, 1, np.nan, 2, 3, 0], np.float32)
    R, ref_labels = np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
    for ap, an in ALL_MININGS:
        params = as_layer_params(mining(ap, an, identsn=-0.4, diffsn=1.0))
        alone = npair_math.forward(X, labels, params)
        alone_grad = npair_math.gradient(X, alone.weights, 1.0)
        alone_tops = [alone.loss, *alone.recall, alone.asum]
        alone_weights = alone.weights.copy()
        out = npair_math.forward(X, labels, params, R=R, ref_labels=ref_labels)
        grad = npair_math.gradient(X, out.weights, 1.0, R=R)
        assert [out.loss, *out.recall, out.asum] == alone_tops, params
        assert out.weights.tobytes() == alone_weights.tobytes(), params
        assert grad.tobytes() == alone_grad.tobytes(), params
        assert npair_math.reference_gradient(X, out.weights, 1.0).shape == (0, 4)


@pytest.mark.parametrize('labels, ref_labels, recall', [
    ([0, 1, 2, 3], [4, 5, 6], 0.0),           # no positive anywhere
    ([0], [1, 2], 0.0),                       # one query, no positive
    ([5, 5], [5, 5, 5], 1.0),                 # no negative anywhere
], ids=['no-positive', 'one-query', 'no-negative'])
def test_nothing_to_learn_gives_zero_loss_and_gradients(labels, ref_labels, recall):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(len(labels), 3)).astype(np.float32)
    R = rng.normal(size=(len(ref_labels), 3)).astype(np.float32)
    for ap, an in ALL_MININGS:
        case = Cases.of(X, labels, mining(ap, an), R, ref_labels)
        tops, grad, ref_grad = run_math(case)
        result = case.reference()
        assert tops[0] == result.loss == 0.0
        assert not grad.any() and not ref_grad.any() and not result.ref_grad.any()
        assert tops[1:4] == [recall] * 3 == [result.recall[K] for K in ref.RECALL_KS]


def test_the_references_are_the_only_candidates_of_a_single_query(
        npair_cases, assert_matches_reference):
    """N = 1: the query's loss is over the references alone, and only the query's end
    of each pair moves X."""
    X = np.array([[1, 0]], np.float32)
    R = np.array([[0.8, 0.6], [0, 1], [-1, 0]], np.float32)
    case = npair_cases.of(X, [0], ref.Params(), R, [0, 1, 2])
    tops, grad, ref_grad = run_math(case)
    # l = log(e^0.8 + e^0 + e^-1) - 0.8
    assert tops[0] == pytest.approx(math.log(math.exp(0.8) + 1 + math.exp(-1)) - 0.8, rel=1e-6)
    assert tops[1:4] == [1.0, 1.0, 1.0]
    assert_matches_reference(case, tops, grad, ref_grad=ref_grad)


def one_non_finite_reference(value):
    """Two classes of queries; references one of which holds a NaN or an infinity, or
    ('overflow') is finite but overflows every query's float32 similarity with it."""
    rng = np.random.default_rng(13)
    X = rng.normal(size=(4, 3))
    R = rng.normal(size=(3, 3))
    if value == 'overflow':
        X *= 1e20
        R[1] *= 1e20
    else:
        R[1, 2] = value
    return (X.astype(np.float32), np.array([0, 0, 1, 1], np.float32), R.astype(np.float32),
            np.array([1, 2, 0], np.float32))


@pytest.mark.parametrize('value', [np.nan, np.inf, -np.inf, 'overflow'],
                         ids=['nan', 'inf', '-inf', 'overflow'])
def test_non_finite_reference_similarities_make_the_loss_nan(value):
    """A reference's non-finite column makes every query's row non-finite: l_i NaN and
    a NaN row of weights for each, whatever was mined; the gradients hold NaN; the
    monitors stay in [0, 1]."""
    X, labels, R, ref_labels = one_non_finite_reference(value)
    with np.errstate(all='ignore'):
        S = X @ np.concatenate([X, R]).T
    rows = ~np.isfinite(S).all(axis=1)
    assert rows.any()
    for ap, an in ALL_MININGS:
        params = mining(ap, an)
        with np.errstate(all='ignore'):
            out = npair_math.forward(X, labels, as_layer_params(params), R=R,
                                     ref_labels=ref_labels)
            grad = npair_math.gradient(X, out.weights, 1.0, R=R)
            ref_grad = npair_math.reference_gradient(X, out.weights, 1.0)
        assert math.isnan(out.loss), params
        assert np.isnan(out.weights[rows]).all() and np.isfinite(out.weights[~rows]).all()
        assert np.isnan(grad).any() and np.isnan(ref_grad).any(), params
        assert all(0 <= r <= 1 for r in out.recall), params


@pytest.mark.parametrize('value', [np.nan, np.inf], ids=['nan', 'inf'])
def test_reference_follows_the_non_finite_rule_for_references(value):
    X, labels, R, ref_labels = one_non_finite_reference(value)
    for ap, an in ALL_MININGS[::7]:
        result = ref.evaluate(X, labels, mining(ap, an), R=R, ref_labels=ref_labels)
        assert math.isnan(result.loss) and np.isnan(result.grad).all()
        assert np.isnan(result.ref_grad).all()


def test_global_lists_count_batch_pairs_twice_and_reference_pairs_once():
    """GLOBAL RELATIVE_HARD negatives: the list holds each negative pair of two queries
    twice, (i, j) and (j, i), and each pair with a reference once. Here: 8 batch entries
    at 0.9 (4 pairs, both ways), 2 reference entries at 0.8 and 2 below, 12 in all, so
    diffsn 7 keeps the batch pairs alone, 8 adds the references at 0.8 and 10 every
    reference. Counting a batch pair once (8 entries) would keep every pair at diffsn 7;
    counting a reference pair twice (16) would keep only the two at 0.8 at diffsn 10."""
    c = math.sqrt(1 - 0.9 ** 2)
    X = np.array([[1, 0], [1, 0], [0.9, c], [0.9, c]], np.float32)
    R = np.array([[0.8, -0.6]], np.float32)
    labels, ref_labels = np.array([0, 0, 1, 1], np.float32), np.array([2], np.float32)
    batch = {(0, 2), (0, 3), (1, 2), (1, 3), (2, 0), (2, 1), (3, 0), (3, 1)}
    expected = {7.0: batch, 8.0: batch | {(0, 4), (1, 4)},
                10.0: batch | {(0, 4), (1, 4), (2, 4), (3, 4)}}
    same = labels[:, None] == np.concatenate([labels, ref_labels])[None, :]
    for diffsn, pairs in expected.items():
        params = ref.Params(an_mining_region='GLOBAL', an_mining_method='RELATIVE_HARD',
                            diffsn=diffsn)
        kept = npair_math.selected_pairs(X, labels, as_layer_params(params), R, ref_labels)
        assert set(zip(*map(list, np.nonzero(kept & ~same)))) == pairs, diffsn
        result = ref.evaluate(X, labels, params, R=R, ref_labels=ref_labels)
        assert {(i, c) for i in range(4) for c in result.kept_negatives[i]} == pairs, diffsn
