"""Property-based tests (hypothesis) of the C++ NPairMultiClassLoss layer and the Python
fallback, through pycaffe on CPU, over random batches: N and D from 1 to 64, labels from
all equal to all distinct (arbitrary float values), feature scales from 1e-3 to 1e3,
layouts with exact ties (duplicated rows, values on a grid, collapsed embeddings), and
every region/method combination with extreme margins and identsn/diffsn (0, -0.0, +-1,
+-1e6, +-1e30, fractions, random floats).

For every example, on both layers (spec sections 2 to 5):
  - every top finite; loss >= 0; R@K in [0, 1], a multiple of 1/(eligible queries),
    non-decreasing in K, 0 with no eligible query, 1 when K exceeds every query's
    negatives; feature_asum >= 0 and the mean L1 norm of a row;
  - the gradient finite, the labels' diff untouched;
  - nothing to learn (N = 1, all labels distinct, all labels equal): loss and gradient
    exactly 0;
  - the fallback's pair weights W: a row without a kept positive (by its own selection)
    is exactly 0, and so is every pair it did not keep.
Where no similarity lies within float32's error of a selection threshold or a Recall@K
tie (judged on the float64 reference, tests/npair_reference.py), additionally:
  - the C++ layer, the fallback and the reference agree, within the spec's float
    tolerances widened by what float32's S can be off by (error_bounds below);
  - a sample that no kept pair touches (its row has no kept positive and no row with a
    kept positive keeps it) gets a gradient of exactly 0 from both layers.

CI runs NPAIR_FUZZ_EXAMPLES examples (default 300). The long run, 10,000 examples:

    source build/env.sh
    GLOG_minloglevel=1 NPAIR_FUZZ_EXAMPLES=10000 python3 -m pytest -q \\
        tests/test_fuzz_layers.py --hypothesis-show-statistics

(GLOG_minloglevel=1 keeps Caffe's net set-up log, two nets per example, out of the
captured output; the statistics show how many examples were compared with the reference.)
"""
import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st

import npair_reference as ref

caffe = pytest.importorskip('caffe', reason='pycaffe not importable: source build/env.sh')

from npair_loss import npair_math  # noqa: E402
from test_cpp_layer import feed, loss_net_text  # noqa: E402

EXAMPLES = int(os.environ.get('NPAIR_FUZZ_EXAMPLES', '300'))
U32 = 2.0 ** -24                    # float32's unit roundoff
LAYERS = ('NPairMultiClassLoss', 'Python')
TOPS = ['loss', 'r1', 'r5', 'r10', 'asum']

MARGINS = (0.0, -0.0, 1.0, -1.0, 1e6, -1e6, 0.05, -0.05, 0.2, -0.3)
SNS = (0.0, -0.0, 1.0, -1.0, 1e6, -1e6, 1e30, -1e30, 2.5, 7.0, -0.05, -0.3, -0.5, -2.0)
LAYOUTS = ('gaussian', 'unit', 'duplicates', 'grid', 'collapsed', 'gaussian', 'unit')


@st.composite
def param_sets(draw):
    """ref.Params: every region and method; margins and SN from the extremes above or
    any float32 in a range that reaches past every list length (N - 1 <= 63)."""
    margin = st.one_of(st.sampled_from(MARGINS), st.floats(-2, 2, width=32))
    sn = st.one_of(st.sampled_from(SNS), st.floats(-1.5, 70, width=32))
    return ref.Params(
        margin_ident=draw(margin), margin_diff=draw(margin),
        identsn=draw(sn), diffsn=draw(sn),
        ap_mining_region=draw(st.sampled_from(ref.REGIONS)),
        ap_mining_method=draw(st.sampled_from(ref.METHODS)),
        an_mining_region=draw(st.sampled_from(ref.REGIONS)),
        an_mining_method=draw(st.sampled_from(ref.METHODS)))


@st.composite
def batches(draw):
    """(X float32 N x D, labels float32 N, description)."""
    N = draw(st.integers(1, 64))
    D = draw(st.integers(1, 64))
    # All equal and all distinct come up on their own (hypothesis tries the bounds);
    # half the batches have 2 to N / 2 labels: most queries have positives and negatives.
    few = min(2, N)
    classes = draw(st.one_of(st.integers(1, N), st.integers(few, max(few, N // 2))))
    scale = 10.0 ** draw(st.one_of(st.sampled_from([-3.0, 0.0, 3.0]), st.floats(-3, 3)))
    layout = draw(st.sampled_from(LAYOUTS))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    # Labels: `classes` distinct float32 values, compared as stored; each used once
    # before any is repeated, so `classes` is the number of labels in the batch.
    values = rng.choice([-3.5, -1.0, 0.0, 1.0, 2.0, 7.0, 1e6, 0.25] + list(range(8, 72)),
                        size=classes, replace=False)
    labels = values[np.concatenate([np.arange(classes),
                                    rng.integers(0, classes, N - classes)])]
    labels = rng.permutation(labels).astype(np.float32)
    X = rng.normal(size=(N, D))
    if layout == 'unit':
        X /= np.linalg.norm(X, axis=1, keepdims=True)
    elif layout == 'duplicates':
        X[rng.integers(0, N, N // 2)] = X[rng.integers(0, N, N // 2)]
    elif layout == 'grid':
        X = rng.integers(-1, 2, size=(N, D)).astype(np.float64)
    elif layout == 'collapsed':
        X[:] = X[0]
    X = (scale * X).astype(np.float32)
    return X, labels, f'{layout} N={N} D={D} classes={classes} scale={scale:.3g} seed={seed}'


class Nets:
    """Runs a batch through a one-layer net of either kind (a fresh net each time, since
    the parameters live in the net's definition)."""

    def __init__(self, tmp_dir):
        self.path = tmp_dir / 'net.prototxt'

    def run(self, layer_type, X, labels, params):
        text, tops = loss_net_text(len(X), X.shape[1], params, 5, layer_type)
        self.path.write_text(text)
        net = caffe.Net(str(self.path), caffe.TRAIN)
        feed(net, _Batch(X, labels))
        values = [float(net.blobs[t].data) for t in tops]
        layer = net.layers[list(net._layer_names).index('npair')]
        return values, net.blobs['feat'].diff.copy(), net.blobs['label'].diff.copy(), layer


class _Batch:
    """What test_cpp_layer.feed reads of a case."""

    def __init__(self, X, labels):
        self.X, self.labels = X, labels


@pytest.fixture(scope='module')
def nets(cpp_layer, tmp_path_factory):
    return Nets(tmp_path_factory.mktemp('fuzz'))


def check_invariants(name, tops, grad, label_diff, X, labels):
    """What holds for any batch, near a threshold or not."""
    loss, r1, r5, r10, asum = tops
    N = len(X)
    assert all(math.isfinite(v) for v in tops), f'{name}: tops {tops}'
    assert loss >= 0, f'{name}: loss {loss}'
    assert 0 <= r1 <= r5 <= r10 <= 1, f'{name}: R@K {r1}, {r5}, {r10}'
    eligible = sum(1 for i in range(N) if ref.positives(labels.tolist(), i))
    for K, r in zip(ref.RECALL_KS, (r1, r5, r10)):
        assert abs(r * eligible - round(r * eligible)) <= 1e-4 * max(eligible, 1), \
            f'{name}: R@{K} = {r} is no multiple of 1/{eligible}'
        if eligible == 0:
            assert r == 0, f'{name}: R@{K} = {r} without an eligible query'
        elif N - 2 < K:              # every query has at most N - 2 negatives
            assert r == 1, f'{name}: R@{K} = {r} with N = {N}'
    mean_l1 = np.abs(X.astype(np.float64)).sum() / N
    assert asum >= 0 and abs(asum - mean_l1) <= 1e-4 * mean_l1 + 1e-30, \
        f'{name}: feature_asum {asum}, mean L1 {mean_l1}'
    assert np.isfinite(grad).all(), f'{name}: gradient not finite'
    assert not label_diff.any(), f'{name}: labels got a diff'
    if N == 1 or len(set(labels.tolist())) in (1, N):
        assert loss == 0 and not grad.any(), \
            f'{name}: nothing to learn, yet loss {loss}, |grad| {np.abs(grad).max()}'


def check_fallback_weights(layer, X, labels):
    """The fallback's W = w - w+: 0 off its own kept pairs and on every row without a
    kept positive (so such a row contributes nothing to the gradient)."""
    kept = npair_math.selected_pairs(X, labels, layer.params)
    same = labels[:, None] == labels[None, :]
    has_positive = (kept & same).any(axis=1)
    W = layer.weights
    assert not W[~kept].any(), 'fallback: weight on a pair it did not keep'
    assert not W[~has_positive].any(), 'fallback: weight in a row without a kept positive'
    event(f'rows without a kept positive: {"some" if (~has_positive).any() else "none"}')


def error_bounds(X):
    """delta: a bound on |S_ij - x_i.x_j| for float32 S computed in any order (gamma_D
    times the largest squared row norm, plus the rounding of symmetrising S)."""
    D = X.shape[1]
    norm2 = float((X.astype(np.float64) ** 2).sum(axis=1).max())
    return (D * U32 / (1 - D * U32) + 2 * U32) * norm2


def exact_ties_at_relative_thresholds(S, labels, params):
    """Whether a RELATIVE_* rule with margin 0 has a pair other than its threshold pair
    (and that pair's mirror) exactly at the threshold: the rule keeps them by its own
    equality in float64, but float32 may order them either way."""
    b_pos, b_neg = ref.bounds(S, labels, params)
    for members, b, method, region, margin in (
            (ref.positives, b_pos, params.ap_mining_method, params.ap_mining_region,
             params.margin_ident),
            (ref.negatives, b_neg, params.an_mining_method, params.an_mining_region,
             params.margin_diff)):
        if not method.startswith('RELATIVE_') or ref.f32(margin) != 0:
            continue
        at = [sum(1 for j in members(labels, i) if b[i] is not None and S[i][j] == b[i])
              for i in range(len(labels))]
        if (max(at, default=0) > 1) if region == 'LOCAL' else (sum(at) > 2):
            return True
    return False


def assert_close(name, got, want, tol):
    assert abs(got - want) <= tol, f'{name}: {got} vs {want} (tolerance {tol:.3g})'


def check_agreement(results, X, labels, params, delta):
    """C++, fallback and reference agree (the batch is away from every threshold)."""
    result = ref.evaluate(X, labels, params)
    want = ref.top_values(result, 5)
    N = len(X)
    max_x = float(np.abs(X).max())
    gamma_n = N * U32 / (1 - N * U32)
    # Each layer's S is within delta of the exact one, so within 2 delta of the other's.
    comparisons = [(name, values, grad, want, result.grad, delta)
                   for name, (values, grad) in results.items()]
    comparisons.append(('C++ vs fallback', *results['C++'], *results['fallback'], 2 * delta))
    for name, values, grad, other, other_grad, dS in comparisons:
        other_grad = np.asarray(other_grad, np.float64).reshape(N, -1)
        # Each l_i is two log-sum-exps, each moved by at most dS when S moves by dS;
        # the exp sums add float32 rounding (1e-5 covers 64 terms).
        assert_close(f'{name}: loss', values[0], other[0], 1e-4 * abs(other[0]) + 2 * dS + 1e-5)
        for K, got, exp in zip(ref.RECALL_KS, values[1:4], other[1:4]):
            assert_close(f'{name}: R@{K}', got, exp, 1e-6)
        assert_close(f'{name}: feature_asum', values[4], other[4], 1e-4 * abs(other[4]))
        # The softmax weights move by a factor e^(2 dS) at most, plus float32 rounding;
        # a row of (G + G^T) X sums N weights of each row and one of each column.
        eps_w = math.expm1(min(2 * dS, 700)) + 64 * U32
        tol = 1e-3 * np.abs(other_grad).max() + max_x * (2 * eps_w * (1 + 1 / N) + 4 * gamma_n)
        largest = np.abs(other_grad).max()
        if name == 'C++ vs fallback':
            event('gradient: 0' if largest == 0 else 'gradient compared to ' + next(
                (f'{r:g} of its largest' for r in (2e-3, 1e-2, 1e-1) if tol <= r * largest),
                'no useful precision (float32 S too coarse)'))
        err = np.abs(np.asarray(grad, np.float64).reshape(N, -1) - other_grad).max()
        assert err <= tol, f'{name}: gradient off by {err:.3g} (tolerance {tol:.3g})'
    # A sample that no kept pair touches gets nothing.
    has_positive = [bool(p) for p in result.kept_positives]
    for a in range(N):
        touched = has_positive[a] or any(
            has_positive[j] and (a in result.kept_positives[j] or a in result.kept_negatives[j])
            for j in range(N))
        if not touched:
            for name, (_, grad) in results.items():
                assert not grad[a].any(), f'{name}: gradient on untouched sample {a}'
    event('untouched samples: ' + ('some' if not all(has_positive) else 'none'))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
          print_blob=True)
@given(batch=batches(), params=param_sets())
def test_layers_over_random_batches(batch, params, nets):
    X, labels, description = batch
    N, D = X.shape
    event(f'N {"1" if N == 1 else "2-9" if N < 10 else "10-31" if N < 32 else "32-64"}, '
          f'D {"1-9" if D < 10 else "10-31" if D < 32 else "32-64"}')
    event(description.split()[0] + ' layout')
    event(f'scale 1e{math.floor(math.log10(float(np.abs(X).max()) or 1e-30) + 0.5):+d}')
    results = {}
    for layer_type in LAYERS:
        values, grad, label_diff, layer = nets.run(layer_type, X, labels, params)
        name = 'C++' if layer_type == 'NPairMultiClassLoss' else 'fallback'
        check_invariants(f'{name} ({description}, {params})', values, grad, label_diff,
                         X, labels)
        if layer_type == 'Python':
            check_fallback_weights(layer, X, labels)
        results[name] = (values, grad)
    delta = error_bounds(X)
    S = ref.similarity(ref.as_rows(X))
    near = 2 * delta + 1e-15 * max(1.0, abs(ref.f32(params.margin_ident)),
                                   abs(ref.f32(params.margin_diff)))
    if (ref.boundary_gap(X, labels, params) <= near or ref.recall_gap(X, labels) <= near
            or exact_ties_at_relative_thresholds(S, labels.tolist(), params)):
        event('near a threshold or a tie: invariants only')
        return
    event('compared with the reference')
    check_agreement(results, X, labels, params, delta)
