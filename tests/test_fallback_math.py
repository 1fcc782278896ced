"""npair_loss.npair_math and npair_loss.params against the float64 reference, without
Caffe: every mining method x region, margins, SN values, empty cases, errors."""
import itertools
import math
import sys
import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import npair_reference as ref
from npair_loss import mining, npair_math, params as npair_params

ALL_RULES = list(itertools.product(ref.REGIONS, ref.METHODS))


def as_layer_params(p):
    """ref.Params -> the NPairParams the layer would parse (float32 values)."""
    return npair_params.NPairParams(**{k: ref.f32(v) if isinstance(v, float) else v
                                       for k, v in p._asdict().items()})


def run_math(case, dtype=np.float32, ks=ref.RECALL_KS, g=1.0):
    X = case.X.astype(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter('error')                 # no overflow, no 0/0, no log(0)
        out = npair_math.forward(X, case.labels.astype(dtype), as_layer_params(case.params), ks)
        grad = npair_math.gradient(X, out.weights, g)
    tops = [out.loss, *out.recall, out.asum]
    return tops, grad


def test_worked_example_of_the_contract():
    """docs/layer_contract.md §9."""
    X = np.array([[1, 0], [0.6, 0.8], [0, 1], [-0.6, 0.8]], np.float32)
    labels = np.array([0, 0, 1, 1], np.float32)
    expected = [0.800588, 0.5, 1.0, 1.0, 1.2]
    result = ref.evaluate(X, labels)
    assert ref.top_values(result, 5) == pytest.approx(expected, abs=1e-6)
    out = npair_math.forward(X, labels, as_layer_params(ref.Params()))
    assert [out.loss, *out.recall, out.asum] == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize('ap', ALL_RULES, ids='-'.join)
@pytest.mark.parametrize('an', ALL_RULES, ids='-'.join)
def test_every_rule_pair_matches_reference(ap, an, npair_cases, assert_matches_reference):
    rng = np.random.default_rng(ALL_RULES.index(ap) * len(ALL_RULES) + ALL_RULES.index(an))
    for _ in range(2):
        params = npair_cases.params(rng, ap_mining_region=ap[0], ap_mining_method=ap[1],
                                    an_mining_region=an[0], an_mining_method=an[1])
        case = npair_cases.case(rng, params)
        tops, grad = run_math(case)
        assert_matches_reference(case, tops, grad)


@pytest.mark.parametrize('sn', [0.0, -0.0, 1.0, 3.0, 1e30, 3.4e38, -0.05, -0.3, -0.99, -1.0,
                                -1.5, -3.4e38])
@pytest.mark.parametrize('region', ref.REGIONS)
@pytest.mark.parametrize('method', ['RELATIVE_HARD', 'RELATIVE_EASY'])
def test_sn_values(sn, region, method, npair_cases, assert_matches_reference):
    rng = np.random.default_rng(7)
    for margin in (0.0, 0.05):
        params = ref.Params(identsn=sn, diffsn=sn, margin_ident=margin, margin_diff=-margin,
                            ap_mining_region=region, ap_mining_method=method,
                            an_mining_region=region, an_mining_method=method)
        case = npair_cases.case(rng, params, N=10, classes=3)
        tops, grad = run_math(case)
        assert_matches_reference(case, tops, grad)


def test_relative_position_matches_reference():
    sns = [0.0, -0.0, 0.5, 1.0, 2.0, 2.99, 1e30, -1e-8, -0.05, -0.1, -0.3, -1 / 3, -0.5, -1.0,
           -7.0, -1e30]
    n = np.arange(0, 40)
    for sn in map(ref.f32, sns):
        got = mining.relative_position(n, sn)
        assert got.tolist() == [max(ref.relative_position(int(k), sn), 0) for k in n], sn


def test_relative_sn_counts_as_documented():
    """RELATIVE_HARD with sn = k >= 0 keeps the k + 1 most similar negatives."""
    S = np.array([[0.0, 0.9, 0.1, 0.5, 0.3]], np.float64)
    values = S[0, 1:]
    for k in range(4):
        p = ref.relative_position(len(values), float(k))
        assert (values >= np.sort(values)[p]).sum() == k + 1


@pytest.mark.parametrize('params', [ref.Params(), ref.Params(
    ap_mining_method='HARD', an_mining_method='RELATIVE_EASY', an_mining_region='GLOBAL'),
    ref.Params(ap_mining_method='RELATIVE_HARD', an_mining_method='EASY',
               ap_mining_region='GLOBAL', identsn=-0.5)])
@pytest.mark.parametrize('labels', [[0], [0, 1, 2, 3], [5, 5, 5, 5]],
                         ids=['N=1', 'no-positive', 'no-negative'])
def test_empty_cases_give_zero_loss_and_gradient(labels, params):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(len(labels), 3)).astype(np.float32)
    case_labels = np.array(labels, np.float32)
    result = ref.evaluate(X, case_labels, params)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        out = npair_math.forward(X, case_labels, as_layer_params(params))
        grad = npair_math.gradient(X, out.weights, 1.0)
    assert out.loss == result.loss == 0.0
    assert not grad.any() and not result.grad.any()
    assert list(out.recall) == [result.recall[K] for K in ref.RECALL_KS]
    assert out.recall == ((1.0,) * 3 if labels == [5, 5, 5, 5] else (0.0,) * 3)
    assert out.asum == pytest.approx(np.abs(X).sum() / len(X), rel=1e-6)


@pytest.mark.parametrize('scale', [30.0, 1e3, 1e5])
def test_large_scale_stays_finite(scale, npair_cases):
    rng = np.random.default_rng(11)
    params = ref.Params(an_mining_method='HARD', margin_diff=-0.05)
    case = npair_cases.case(rng, params, N=8, D=3, classes=3, scale=1.0)
    case.X = (case.X * scale).astype(np.float32)
    tops, grad = run_math(case)
    result = case.reference()
    assert all(math.isfinite(v) for v in tops) and np.isfinite(grad).all()
    assert tops[0] == pytest.approx(result.loss, rel=1e-4, abs=1e-6 * scale ** 2)


def test_float64_inputs_are_exact_to_double_precision(npair_cases, assert_matches_reference):
    rng = np.random.default_rng(5)
    for _ in range(10):
        case = npair_cases.case(rng, npair_cases.params(rng))
        tops, grad = run_math(case, dtype=np.float64)
        assert_matches_reference(case, tops, grad, rtol=1e-10, grad_tol=1e-8)


def test_gradient_scales_with_top_diff(npair_cases, assert_matches_reference):
    rng = np.random.default_rng(9)
    case = npair_cases.case(rng, npair_cases.params(rng, ap_mining_method='RAND'), N=8)
    tops, grad = run_math(case, g=2.5)
    assert_matches_reference(case, tops, grad, g=2.5)


def test_fewer_recalls_on_request(npair_cases):
    rng = np.random.default_rng(4)
    case = npair_cases.case(rng, ref.Params(), N=8)
    tops, _ = run_math(case, ks=(1,))
    assert len(tops) == 3 and tops[1] == case.reference().recall[1]


def test_selected_pairs_are_the_references(npair_cases):
    rng = np.random.default_rng(12)
    for _ in range(20):
        case = npair_cases.case(rng, npair_cases.params(rng))
        kept = npair_math.selected_pairs(case.X, case.labels, as_layer_params(case.params))
        result = case.reference()
        expected = np.zeros_like(kept)
        for i in range(case.N):
            expected[i, result.kept_positives[i] + result.kept_negatives[i]] = True
        assert (kept == expected).all(), case


def test_selection_bound_is_formed_in_double():
    """t + m is formed in double: with t = 1e-8 and m = 1, a float32 sum would round the
    bound to 1 and drop the positive with S = 1 that HARD keeps (S < t + m)."""
    eps = ref.f32(1e-8)
    X = np.array([[1, 0], [1, 0], [eps, 1]], np.float32)    # S_01 = 1, S_02 = S_12 = eps
    labels = np.array([0, 0, 1], np.float32)
    params = ref.Params(ap_mining_method='HARD', margin_ident=1.0)
    kept = npair_math.selected_pairs(X, labels, as_layer_params(params))
    assert kept[0, 1] and kept[1, 0]
    assert ref.evaluate(X, labels, params).kept_positives[:2] == [[1], [0]]


def test_similarity_is_exactly_symmetric():
    rng = np.random.default_rng(1)
    for X in (rng.normal(size=(300, 517)).astype(np.float32),
              rng.normal(size=(64, 256)).astype(np.float32)[:, ::2]):
        S = npair_math.similarity(X)
        assert (S == S.T).all()
        np.testing.assert_allclose(S, X.astype(np.float64) @ X.T.astype(np.float64),
                                   rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize('method', ref.METHODS)
def test_exact_ties_follow_each_rules_comparison(method):
    """Row 0 has its positive and its negative both at S = 0.5, exactly, so every
    threshold of row 0 equals both: < and <= (> and >=) must differ as in the contract (§3)."""
    X = np.array([[1, 0], [0.5, 0.5], [0.5, -0.5]], np.float32)
    labels = np.array([0, 0, 1], np.float32)
    params = ref.Params(ap_mining_method=method, an_mining_method=method)
    kept = npair_math.selected_pairs(X, labels, as_layer_params(params))
    result = ref.evaluate(X, labels, params)
    assert kept[0, 1] == (1 in result.kept_positives[0])
    assert kept[0, 2] == (2 in result.kept_negatives[0])
    assert (kept[0, 1], kept[0, 2]) == {'HARD': (False, False), 'EASY': (True, True),
                                        'RAND': (True, True), 'RELATIVE_HARD': (True, True),
                                        'RELATIVE_EASY': (True, True)}[method]


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), ap=st.sampled_from(ALL_RULES),
       an=st.sampled_from(ALL_RULES), scale=st.sampled_from([0.5, 1.0, 2.0]))
def test_randomized_against_reference(seed, ap, an, scale, npair_cases, assert_matches_reference):
    rng = np.random.default_rng(seed)
    params = npair_cases.params(rng, ap_mining_region=ap[0], ap_mining_method=ap[1],
                                an_mining_region=an[0], an_mining_method=an[1])
    case = npair_cases.case(rng, params, scale=scale)
    tops, grad = run_math(case)
    assert_matches_reference(case, tops, grad)


# --- params.py ---

def test_defaults_are_the_protos():
    p = npair_params.parse_param_str('')
    assert p == as_layer_params(ref.Params())


def test_usage_block_parameters_parse_with_comments(usage_param_str, usage_params):
    p = npair_params.parse_param_str(usage_param_str)
    assert p == as_layer_params(usage_params)
    assert math.copysign(1.0, p.identsn) == -1.0
    assert p.margin_diff == float(np.float32(-0.05)) != -0.05


@pytest.mark.parametrize('param_str, field', [
    ('margin_dif: 0.1', 'margin_dif'),
    ('ap_mining_method: HARDEST', 'ap_mining_method'),
    ('an_mining_region: NEAR', 'an_mining_region'),
    ('margin_diff: 0.1 margin_diff: 0.2', 'margin_diff'),
    ('identsn: "x"', 'identsn'),
])
def test_bad_param_str_names_layer_and_field(param_str, field):
    with pytest.raises(ValueError) as e:
        npair_params.parse_param_str(param_str)
    assert 'NPairMultiClassLoss (Python)' in str(e.value) and field in str(e.value)


@pytest.mark.parametrize('field', ['margin_ident', 'margin_diff', 'identsn', 'diffsn'])
@pytest.mark.parametrize('value', ['inf', '-inf', 'nan', '1e39'])
def test_non_finite_floats_are_rejected(field, value):
    message = f'NPairMultiClassLoss \\(Python\\): {field} must be finite'
    with pytest.raises(ValueError, match=message):
        npair_params.parse_param_str(f'ap_mining_method: RAND {field}: {value}')


def test_missing_pb2_says_how_to_make_it(monkeypatch):
    monkeypatch.setitem(sys.modules, 'npair_loss.npair_loss_pb2', None)
    with pytest.raises(ImportError, match=r'pip install \./python'):
        npair_params.parse_param_str('')


# --- NaN labels, non-finite values, Recall@K eligibility (docs/layer_contract.md §3) ---

S95 = ref.f32(0.95)


def nan_label_batch():
    """Two tight classes (positive similarity 0.95) beside two NaN-labelled samples, all
    rows of norm 1: S_ii = 1 is the largest similarity of the batch, and S_ii of a
    NaN-labelled sample would be its most similar 'negative' if j != i were forgotten.
    Every true negative pair is at 0 (a class sample with a NaN one) or below (the two
    classes point opposite ways), exactly, in float32 as in float64."""
    c = math.sqrt(1 - S95 ** 2)
    X = np.array([[1, 0, 0], [S95, c, 0], [-1, 0, 0], [-S95, -c, 0], [0, 0, 1], [0, 0, -1]],
                 np.float32)
    labels = np.array([0, 0, 1, 1, np.nan, np.nan], np.float32)
    return X, labels


# The two NaN-label batches with the loss the contract gives them. GLOBAL HARD positives:
# t+ is the batch's most similar negative pair, 0, and no positive (0.95) lies below it.
# GLOBAL RELATIVE_HARD negatives with diffsn 0: t- is the most similar negative pair, 0,
# so each of the four class samples keeps its positive and the two NaN-labelled samples:
# l_i = log(e^0.95 + 2 e^0) - 0.95, and the NaN-labelled rows, without a positive, add 0.
NAN_LABEL_CASES = {
    'global-hard-positives': (ref.Params(ap_mining_region='GLOBAL', ap_mining_method='HARD'),
                              0.0),
    'global-relative-hard-negatives': (
        ref.Params(an_mining_region='GLOBAL', an_mining_method='RELATIVE_HARD', diffsn=0.0),
        4 / 6 * math.log1p(2 * math.exp(-S95))),
}


@pytest.mark.parametrize('name', NAN_LABEL_CASES)
def test_nan_labels_are_never_their_own_negative(name, npair_cases, assert_matches_reference):
    params, loss = NAN_LABEL_CASES[name]
    case = npair_cases.of(*nan_label_batch(), params)
    result = case.reference()
    assert result.loss == pytest.approx(loss, rel=1e-12, abs=1e-15)
    tops, grad = run_math(case)
    assert tops[0] == pytest.approx(loss, rel=1e-6, abs=1e-7)
    assert_matches_reference(case, tops, grad)
    if loss == 0:
        assert not grad.any()


def one_non_finite_feature(value, dtype=np.float32):
    """A batch of three classes whose features hold one NaN or infinity, or ('overflow')
    whose features are finite but one sample's similarities overflow float32."""
    X = np.random.default_rng(13).normal(size=(6, 3))
    labels = np.array([0, 0, 1, 1, 2, 2], np.float32)
    if value == 'overflow':
        X[4] *= 1e20
    else:
        X[4, 1] = value
    return X.astype(dtype), labels


@pytest.mark.parametrize('value', [np.nan, np.inf, -np.inf, 'overflow'],
                         ids=['nan', 'inf', '-inf', 'overflow'])
@pytest.mark.parametrize('ap', ALL_RULES, ids='-'.join)
def test_non_finite_similarities_make_the_loss_nan(ap, value):
    """A row of S that is not all finite gives l_i = NaN and a NaN row of weights, for
    every mining: the loss is NaN and so is the gradient, never a finite loss over a NaN
    gradient. The monitors stay what they compute: R@K in [0, 1]."""
    X, labels = one_non_finite_feature(value)
    for an in ALL_RULES:
        params = ref.Params(ap_mining_region=ap[0], ap_mining_method=ap[1],
                            an_mining_region=an[0], an_mining_method=an[1])
        with np.errstate(all='ignore'):
            out = npair_math.forward(X, labels, as_layer_params(params))
            grad = npair_math.gradient(X, out.weights, 1.0)
            S = X @ X.T
        assert math.isnan(out.loss), params
        rows = ~np.isfinite(S).all(axis=1)
        assert rows.any() and np.isnan(out.weights[rows]).all(), params
        assert np.isfinite(out.weights[~rows]).all(), params
        assert np.isnan(grad).any(), params
        assert all(0 <= r <= 1 for r in out.recall), params


@pytest.mark.parametrize('value', [np.nan, np.inf, -np.inf], ids=['nan', 'inf', '-inf'])
def test_reference_follows_the_non_finite_rule(value):
    X, labels = one_non_finite_feature(value)
    for ap, an in itertools.product(ALL_RULES, ALL_RULES):
        params = ref.Params(ap_mining_region=ap[0], ap_mining_method=ap[1],
                            an_mining_region=an[0], an_mining_method=an[1])
        result = ref.evaluate(X, labels, params)
        assert math.isnan(result.loss) and np.isnan(result.grad).all(), params


# Recall@K counts a query whose every positive similarity is -inf, or NaN: it has a
# positive. Rows a, b (label 0) of the first batch have S_ab = -1e60, -inf in float32,
# and S = 0 with both negatives: 2 negatives ahead, a miss at K = 1 and a hit at K = 5;
# rows c, d (label 1) are hits. So R@1 = 2/4 and R@5 = R@10 = 1, where leaving a and b
# out would give 2/2.
MINUS_INF_POSITIVES = (np.array([[1e30, 0], [-1e30, 0], [0, 1], [0, 0.5]], np.float32),
                       np.array([0, 0, 1, 1], np.float32), (0.5, 1.0, 1.0))


def nan_positives_batch():
    """Row a (label 0) is all NaN, so a's and b's only positive similarity is NaN. Of the
    three label-1 rows, c has the label-0 sample b ahead of its best positive (a miss at
    K = 1), d and e have none. a is a hit at any K (no comparison with NaN holds); b is a
    hit or a miss at K = 1 by how an implementation takes the maximum of {NaN}. So
    R@1 is 3/5 or 4/5; counting only c, d and e as eligible would give 2/3."""
    X = np.array([[np.nan, 0], [1, 0], [0.9, 0.1], [0, 1], [0, 0.9]], np.float32)
    labels = np.array([0, 0, 1, 1, 1], np.float32)
    return X, labels, ((0.6, 0.8), (1.0,), (1.0,))


def test_recall_counts_queries_whose_positives_are_minus_inf():
    X, labels, expected = MINUS_INF_POSITIVES
    assert [ref.evaluate(X, labels).recall[K] for K in ref.RECALL_KS] == list(expected)
    with np.errstate(all='ignore'):
        out = npair_math.forward(X, labels, as_layer_params(ref.Params()))
    assert out.recall == expected


def test_recall_counts_queries_whose_positives_are_nan():
    X, labels, expected = nan_positives_batch()
    with np.errstate(all='ignore'):
        out = npair_math.forward(X, labels, as_layer_params(ref.Params()))
    assert all(r in allowed for r, allowed in zip(out.recall, expected)), out.recall


def test_blas_products_report_no_invalid_flag_and_keep_the_nan():
    """OpenBLAS's kernels can leave the 'invalid' flag raised on finite input; products
    run in arrays.blas_products, so a flag a product leaves is no warning, while a NaN it
    computes (here inf * 0) stays in its result."""
    from npair_loss.arrays import blas_products
    a = np.array([[np.inf, 1.0]], np.float32)
    b = np.array([[0.0], [1.0]], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        with pytest.raises(RuntimeWarning):
            a @ b
        with blas_products(np):
            product = a @ b
    assert np.isnan(product[0, 0])
