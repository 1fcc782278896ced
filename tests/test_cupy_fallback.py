"""The Python fallback's CuPy path against its NumPy path (docs/layer_contract.md §7: CuPy
on GPU, NumPy on CPU, the same numbers), and against the float64 reference, without and
with references (the loss's bottoms 2 and 3).

npair_loss.npair_math is array-generic: the same calls run on cupy arrays. The module
needs CuPy and an NVIDIA GPU: without them it fails, it never skips. scripts/test.sh
leaves it out on a machine without a GPU, saying so; scripts/gpu_device_run.sh runs it.
"""
import itertools
import math
import warnings

import numpy as np
import pytest

import npair_reference as ref
from npair_loss import arrays, npair_math
from conftest import REFERENCE_LAYOUTS
from test_fallback_math import (ALL_RULES, MINUS_INF_POSITIVES, NAN_LABEL_CASES,
                                as_layer_params, nan_label_batch, one_non_finite_feature)
from test_fallback_references import one_non_finite_reference


def _cupy_on_a_gpu():
    try:
        import cupy
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # ImportError, or CUDARuntimeError without a usable driver
        pytest.fail(f'the CuPy path needs CuPy and an NVIDIA GPU; CuPy cannot run here ({e!r})',
                    pytrace=False)
    if count == 0:
        pytest.fail('the CuPy path needs an NVIDIA GPU; CuPy sees no CUDA device',
                    pytrace=False)
    return cupy


cp = _cupy_on_a_gpu()

def run(X, labels, params, xp, g=1.0):
    """Tops [loss, R@1, R@5, R@10, asum] and the gradient (NumPy), computed in xp."""
    Xd, yd = xp.asarray(X), xp.asarray(labels)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        out = npair_math.forward(Xd, yd, as_layer_params(params))
        grad = npair_math.gradient(Xd, out.weights, g)
    assert arrays.array_module(grad) is xp
    return [out.loss, *out.recall, out.asum], arrays.to_host(grad)


def run_with_references(X, labels, R, ref_labels, params, xp, g=1.0):
    """Tops, the gradient and the references' gradient (NumPy), computed in xp."""
    Xd, yd, Rd, zd = map(xp.asarray, (X, labels, R, ref_labels))
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        out = npair_math.forward(Xd, yd, as_layer_params(params), R=Rd, ref_labels=zd)
        grad = npair_math.gradient(Xd, out.weights, g, R=Rd)
        ref_grad = npair_math.reference_gradient(Xd, out.weights, g)
    assert arrays.array_module(out.weights) is xp and arrays.array_module(ref_grad) is xp
    return [out.loss, *out.recall, out.asum], arrays.to_host(grad), arrays.to_host(ref_grad)


def grid_batch(rng, n, d, classes, dtype):
    """Features on a grid of eighths: S is exact in float32, so both paths mine the same
    pairs, ties included."""
    X = (rng.integers(-3, 4, size=(n, d)) / 8).astype(dtype)
    labels = rng.integers(0, classes, size=n).astype(dtype)
    return X, labels


def assert_paths_agree(X, labels, params, rtol):
    tops_np, grad_np = run(X, labels, params, np, g=1.75)
    tops_cp, grad_cp = run(X, labels, params, cp, g=1.75)
    assert tops_cp[1:4] == tops_np[1:4], 'Recall@K'
    assert tops_cp[0] == pytest.approx(tops_np[0], rel=rtol, abs=rtol), 'loss'
    assert tops_cp[4] == pytest.approx(tops_np[4], rel=rtol), 'feature_asum'
    scale = max(1.0, float(np.abs(grad_np).max(initial=0.0)))
    assert float(np.abs(grad_cp - grad_np).max(initial=0.0)) <= rtol * scale, 'gradient'


@pytest.mark.parametrize('dtype, rtol', [(np.float32, 1e-5), (np.float64, 1e-12)],
                         ids=['float32', 'float64'])
@pytest.mark.parametrize('ap', ALL_RULES, ids='-'.join)
def test_every_rule_pair_on_the_grid(ap, dtype, rtol, npair_cases):
    rng = np.random.default_rng(ALL_RULES.index(ap))
    for an in ALL_RULES:
        params = npair_cases.params(rng, ap_mining_region=ap[0], ap_mining_method=ap[1],
                                    an_mining_region=an[0], an_mining_method=an[1])
        X, labels = grid_batch(rng, 40, 6, 6, dtype)
        assert_paths_agree(X, labels, params, rtol)


@pytest.mark.parametrize('params', [
    ref.Params(),
    'usage',
    ref.Params(identsn=2.0, diffsn=-0.25, ap_mining_region='GLOBAL',
               ap_mining_method='RELATIVE_EASY', an_mining_region='GLOBAL',
               an_mining_method='RELATIVE_HARD')], ids=['defaults', 'usage', 'global-relative'])
def test_large_batch_on_the_grid(params, usage_params):
    params = usage_params if params == 'usage' else params      # the usage block's
    rng = np.random.default_rng(17)
    X, labels = grid_batch(rng, 700, 16, 40, np.float32)
    assert_paths_agree(X, labels, params, 1e-5)


def test_random_cases_match_reference(npair_cases, assert_matches_reference):
    rng = np.random.default_rng(23)
    for _ in range(30):
        case = npair_cases.case(rng, npair_cases.params(rng))
        tops, grad = run(case.X, case.labels, case.params, cp)
        assert_matches_reference(case, tops, grad)


@pytest.mark.parametrize('labels', [[0], [0, 1, 2, 3], [5, 5, 5, 5]],
                         ids=['N=1', 'no-positive', 'no-negative'])
def test_empty_cases_give_zero_loss_and_gradient(labels):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(len(labels), 3)).astype(np.float32)
    params = ref.Params(ap_mining_method='HARD', an_mining_method='RELATIVE_EASY',
                        an_mining_region='GLOBAL')
    tops, grad = run(X, np.array(labels, np.float32), params, cp)
    assert tops[0] == 0.0 and not grad.any()
    assert tops[1:4] == ([1.0] * 3 if labels == [5, 5, 5, 5] else [0.0] * 3)
    assert math.isfinite(tops[4])


@pytest.mark.parametrize('name', NAN_LABEL_CASES)
def test_nan_labels_are_never_their_own_negative(name, npair_cases, assert_matches_reference):
    params, loss = NAN_LABEL_CASES[name]
    case = npair_cases.of(*nan_label_batch(), params)
    tops, grad = run(case.X, case.labels, params, cp)
    assert tops[0] == pytest.approx(loss, rel=1e-6, abs=1e-7)
    assert_matches_reference(case, tops, grad)


@pytest.mark.parametrize('value', [np.nan, np.inf, 'overflow'], ids=['nan', 'inf', 'overflow'])
def test_non_finite_rows_make_the_loss_nan(value):
    X, labels = one_non_finite_feature(value)
    rows = ~np.isfinite(X @ X.T).all(axis=1)
    for ap, an in itertools.product(ALL_RULES, ALL_RULES):
        params = ref.Params(ap_mining_region=ap[0], ap_mining_method=ap[1],
                            an_mining_region=an[0], an_mining_method=an[1])
        out = npair_math.forward(cp.asarray(X), cp.asarray(labels), as_layer_params(params))
        W = arrays.to_host(out.weights)
        assert math.isnan(out.loss), params
        assert np.isnan(W[rows]).all() and np.isfinite(W[~rows]).all(), params


def test_recall_counts_queries_whose_positives_are_minus_inf():
    X, labels, expected = MINUS_INF_POSITIVES
    out = npair_math.forward(cp.asarray(X), cp.asarray(labels), as_layer_params(ref.Params()))
    assert out.recall == expected


# --- references (bottoms 2 and 3) ---

def assert_paths_agree_with_references(X, labels, R, ref_labels, params, rtol):
    tops_np, grad_np, ref_np = run_with_references(X, labels, R, ref_labels, params, np, 1.75)
    tops_cp, grad_cp, ref_cp = run_with_references(X, labels, R, ref_labels, params, cp, 1.75)
    assert tops_cp[1:4] == tops_np[1:4], 'Recall@K'
    assert tops_cp[0] == pytest.approx(tops_np[0], rel=rtol, abs=rtol), 'loss'
    assert tops_cp[4] == pytest.approx(tops_np[4], rel=rtol), 'feature_asum'
    scale = max(1.0, float(np.abs(grad_np).max(initial=0.0)),
                float(np.abs(ref_np).max(initial=0.0)))
    assert float(np.abs(grad_cp - grad_np).max(initial=0.0)) <= rtol * scale, 'gradient'
    assert float(np.abs(ref_cp - ref_np).max(initial=0.0)) <= rtol * scale, \
        "references' gradient"


@pytest.mark.parametrize('dtype, rtol', [(np.float32, 1e-5), (np.float64, 1e-12)],
                         ids=['float32', 'float64'])
@pytest.mark.parametrize('M', [0, 12, 90], ids=['M=0', 'M<N', 'M>N'])
@pytest.mark.parametrize('ap', ALL_RULES, ids='-'.join)
def test_every_rule_pair_with_references_on_the_grid(ap, M, dtype, rtol, npair_cases):
    rng = np.random.default_rng(100 + ALL_RULES.index(ap))
    for an in ALL_RULES:
        params = npair_cases.params(rng, ap_mining_region=ap[0], ap_mining_method=ap[1],
                                    an_mining_region=an[0], an_mining_method=an[1])
        X, labels = grid_batch(rng, 40, 6, 6, dtype)
        R, ref_labels = grid_batch(rng, M, 6, 9, dtype)       # 3 classes the batch lacks
        ref_labels[rng.random(M) < 0.1] = np.nan
        assert_paths_agree_with_references(X, labels, R, ref_labels, params, rtol)


def test_large_batch_with_a_memory_on_the_grid(usage_params):
    """The shape of a memory: a batch of 128 against 4,096 references."""
    rng = np.random.default_rng(19)
    X, labels = grid_batch(rng, 128, 16, 64, np.float32)
    R, ref_labels = grid_batch(rng, 4096, 16, 200, np.float32)
    for params in (ref.Params(), usage_params):
        assert_paths_agree_with_references(X, labels, R, ref_labels, params, 1e-5)


@pytest.mark.parametrize('layout', REFERENCE_LAYOUTS)
def test_random_cases_with_references_match_reference(layout, npair_cases,
                                                      assert_matches_reference):
    rng = np.random.default_rng(29 + REFERENCE_LAYOUTS.index(layout))
    for _ in range(10):
        case = npair_cases.with_references(rng, npair_cases.params(rng), layout)
        tops, grad, ref_grad = run_with_references(case.X, case.labels, case.R,
                                                   case.ref_labels, case.params, cp)
        assert_matches_reference(case, tops, grad, ref_grad=ref_grad)


def test_no_references_is_the_batch_alone():
    rng = np.random.default_rng(8)
    X, labels = grid_batch(rng, 30, 5, 6, np.float32)
    labels[3] = np.nan
    R, ref_labels = np.zeros((0, 5), np.float32), np.zeros(0, np.float32)
    for ap, an in itertools.product(ALL_RULES, ALL_RULES):
        params = ref.Params(ap_mining_region=ap[0], ap_mining_method=ap[1],
                            an_mining_region=an[0], an_mining_method=an[1])
        tops, grad = run(X, labels, params, cp)
        tops_r, grad_r, ref_grad = run_with_references(X, labels, R, ref_labels, params, cp)
        assert tops_r == tops and grad_r.tobytes() == grad.tobytes(), params
        assert ref_grad.shape == (0, 5)


@pytest.mark.parametrize('value', [np.nan, np.inf, 'overflow'], ids=['nan', 'inf', 'overflow'])
def test_non_finite_references_make_the_loss_nan(value):
    X, labels, R, ref_labels = one_non_finite_reference(value)
    with np.errstate(all='ignore'):
        rows = ~np.isfinite(X @ np.concatenate([X, R]).T).all(axis=1)
    for ap, an in itertools.product(ALL_RULES, ALL_RULES):
        params = ref.Params(ap_mining_region=ap[0], ap_mining_method=ap[1],
                            an_mining_region=an[0], an_mining_method=an[1])
        out = npair_math.forward(cp.asarray(X), cp.asarray(labels), as_layer_params(params),
                                 R=cp.asarray(R), ref_labels=cp.asarray(ref_labels))
        W = arrays.to_host(out.weights)
        assert math.isnan(out.loss), params
        assert np.isnan(W[rows]).all() and np.isfinite(W[~rows]).all(), params
