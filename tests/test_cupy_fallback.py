"""The Python fallback's CuPy path against its NumPy path (spec section 7: CuPy on GPU,
NumPy on CPU, the same numbers), and against the float64 reference.

npair_loss.npair_math is array-generic: the same calls run on cupy arrays. Skips the
whole module, saying why, when CuPy is not importable or sees no CUDA device.
"""
import itertools
import math
import warnings

import numpy as np
import pytest

import npair_reference as ref
from npair_loss import npair_math, params as npair_params


def _cupy_or_skip():
    try:
        import cupy
    except ImportError as e:
        pytest.skip(f'CuPy is not importable ({e}): the CuPy path of the fallback is not '
                    'checked', allow_module_level=True)
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CUDARuntimeError without a driver or device
        pytest.skip(f'CuPy sees no CUDA device ({e}): the CuPy path of the fallback is not '
                    'checked', allow_module_level=True)
    if count == 0:
        pytest.skip('CuPy sees no CUDA device: the CuPy path of the fallback is not checked',
                    allow_module_level=True)
    return cupy


cp = _cupy_or_skip()

ALL_RULES = list(itertools.product(ref.REGIONS, ref.METHODS))


def as_layer_params(p):
    """ref.Params -> the NPairParams the layer would parse (float32 values)."""
    return npair_params.NPairParams(**{k: ref.f32(v) if isinstance(v, float) else v
                                       for k, v in p._asdict().items()})


def run(X, labels, params, xp, g=1.0):
    """Tops [loss, R@1, R@5, R@10, asum] and the gradient (NumPy), computed in xp."""
    Xd, yd = xp.asarray(X), xp.asarray(labels)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        out = npair_math.forward(Xd, yd, as_layer_params(params))
        grad = npair_math.gradient(Xd, out.weights, g)
    assert npair_math.array_module(grad) is xp
    return [out.loss, *out.recall, out.asum], npair_math.to_host(grad)


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
    ref.Params(margin_diff=-0.05, identsn=-0.0, diffsn=-0.3, ap_mining_region='GLOBAL',
               ap_mining_method='RELATIVE_HARD', an_mining_method='HARD'),
    ref.Params(identsn=2.0, diffsn=-0.25, ap_mining_region='GLOBAL',
               ap_mining_method='RELATIVE_EASY', an_mining_region='GLOBAL',
               an_mining_method='RELATIVE_HARD')], ids=['defaults', 'usage', 'global-relative'])
def test_large_batch_on_the_grid(params):
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
