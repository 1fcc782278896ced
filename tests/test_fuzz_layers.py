"""Property-based tests (hypothesis) of the C++ NPairMultiClassLoss layer and the Python
fallback, through pycaffe on CPU, against the float64 reference (tests/npair_reference.py),
over random batches: N and D from 1 to 64 (N of 1 or 2 in about one batch in thirty),
labels from all equal to all distinct, NaN labels in about one batch in seven, every
region/method combination; about one batch in three with references (bottoms 2 and 3:
M from 0 to 64 rows drawn with the batch, labelled from the batch's classes, new ones or
both, NaN in about one set in seven).

The batches are drawn so that most of them can be compared tightly:
  - features: Gaussian or unit rows at moderate scales (S within a few units), or
    integers times a power of two ('grid' layouts, with duplicated rows or all rows
    equal among them), whose S is exact in float32 whatever the summation order, so
    that ties, exact by construction, are resolved alike by every implementation;
  - mostly 2 to N / 2 labels, so that most queries have positives and negatives;
  - margins in units of the batch's own spread of similarities, and identsn / diffsn
    that keep pairs (0, -0.0, counts, fractions); one example in five is 'extreme':
    each of its margins and SNs, and the scale of continuous features, is with even
    odds an extreme value (+-1e6, +-1e30, ..., scales from 1e-3 to 1e3);
  - features are redrawn (up to REDRAWS times) while they put a similarity within
    float32's error of a selection threshold or a Recall@K tie (continuous features),
    or while no query keeps both a positive and a negative (a gradient of 0);
  - a few batches are kept apart for what cannot be compared: continuous rows
    duplicated or all equal (ties that float32 may order either way), and features
    with a NaN, an infinity or an overflowing similarity.

For every example, on both layers (docs/layer_contract.md §2 to §5; "candidates" are
the other batch samples and the references):
  - non-finite features or references: the loss is NaN and the gradient holds a NaN;
    R@K in [0, 1];
  - otherwise: every top finite; loss >= 0; R@K in [0, 1], a multiple of 1/(eligible
    queries), non-decreasing in K, 0 with no eligible query, 1 when K exceeds every
    query's negatives; feature_asum the mean L1 norm of a batch row; both gradients
    finite; the labels' diffs untouched; nothing to learn (no query with both a
    positive and a negative candidate): loss and gradients exactly 0; the fallback's W
    is 0 off its own kept pairs and on every row without a kept positive.
Where no similarity lies within float32's error of a selection threshold or a Recall@K
tie (always, for the exact grid layouts), against the reference:
  - R@K exactly, feature_asum within 1e-4, the loss within 1e-4 relative plus the floor
    float32's S allows (2 delta + 1e-5, delta the bound on |S_ij - x_i.x_j|);
  - both gradients within 1e-3 of their largest element (the contract's float
    tolerance) where the float32 error bound of each element (error_bound below, from
    the reference's own pair weights) is below that: 'tight'; elsewhere within 1e-3 of
    the largest element plus that bound: 'loose';
  - a sample or reference that no kept pair touches gets a gradient of exactly 0.

The statistics (--hypothesis-show-statistics) count each kind: 'compared: tight',
'compared: loose', 'compared: gradient 0', 'invariants only: ...', 'non-finite'.
CI runs NPAIR_FUZZ_EXAMPLES examples (default 300). The long run:

    source build/env.sh
    GLOG_minloglevel=1 NPAIR_FUZZ_EXAMPLES=2000 python3 -m pytest -q \\
        tests/test_fuzz_layers.py --hypothesis-show-statistics

(GLOG_minloglevel=1 keeps Caffe's net set-up log, two nets per example, out of the
captured output.)
"""
import math
import os
from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st

import npair_reference as ref
from conftest import s_error_bound  # noqa: E402

caffe = pytest.importorskip('caffe', reason='pycaffe not importable: source build/env.sh')

from npair_loss import npair_math  # noqa: E402
from test_cpp_layer import feed, loss_net_text  # noqa: E402
from test_layer_references import net_text as reference_net_text  # noqa: E402

EXAMPLES = int(os.environ.get('NPAIR_FUZZ_EXAMPLES', '300'))
U32 = 2.0 ** -24                    # float32's unit roundoff
FLT_MIN = float(np.finfo(np.float32).tiny)
LAYERS = ('NPairMultiClassLoss', 'Python')
REDRAWS = 4

# Layouts, repeated by weight. Continuous features are compared where they keep slack;
# the grid ones always (S exact); the last three only for what holds anyway.
CONTINUOUS = ('gaussian', 'unit')
GRID = ('grid', 'grid duplicates', 'grid collapsed')
LAYOUTS = (('gaussian',) * 9 + ('duplicates', 'collapsed') + ('unit',) * 9 + ('grid',) * 6
           + ('grid duplicates',) * 2 + ('grid collapsed', 'non-finite'))

# Pair-keeping SNs; the extremes of the extreme examples.
SNS = (0.0, -0.0, 1.0, 2.0, 2.5, 7.0, -0.05, -0.25, -0.3, -0.5, -0.9, -1.0)
EXTREME_SNS = (1e6, -1e6, 1e30, -1e30, -2.0, 63.0, 1e38)
EXTREME_MARGINS = (1.0, -1.0, 1e6, -1e6, 1e30, -1e30)


class Example(NamedTuple):
    X: np.ndarray           # float32, N x D
    labels: np.ndarray      # float32, N
    params: ref.Params
    layout: str
    extreme: bool           # extreme margins, SNs or scale drawn
    redraws: int            # feature draws thrown away (near a threshold, or no gradient)
    description: str
    R: np.ndarray = None    # float32, M x D: references, or None (two bottoms)
    ref_labels: np.ndarray = None


def similarities(X, R=None):
    """The reference's S of the queries X against their candidates (R too, if given)."""
    rows = ref.as_rows(X)
    return ref.similarity(rows, rows + (ref.as_rows(R) if R is not None and len(R) else []))


def candidate_labels(labels, ref_labels=None):
    """The candidates' labels, as a list: the batch's, then the references'."""
    return labels.tolist() + ([] if ref_labels is None else ref_labels.tolist())


def exact_ties_at_relative_thresholds(S, labels, params):
    """Whether a RELATIVE_* rule with margin 0 has a pair other than its threshold pair
    (and that pair's mirror) exactly at the threshold: the rule keeps them by its own
    equality in float64, but float32 may order them either way. labels: the
    candidates'."""
    b_pos, b_neg = ref.bounds(S, labels, params)
    for members, b, method, region, margin in (
            (ref.positives, b_pos, params.ap_mining_method, params.ap_mining_region,
             params.margin_ident),
            (ref.negatives, b_neg, params.an_mining_method, params.an_mining_region,
             params.margin_diff)):
        if not method.startswith('RELATIVE_') or ref.f32(margin) != 0:
            continue
        at = [sum(1 for j in members(labels, i) if b[i] is not None and S[i][j] == b[i])
              for i in range(len(S))]
        if (max(at, default=0) > 1) if region == 'LOCAL' else (sum(at) > 2):
            return True
    return False


def near_a_threshold(X, labels, params, S=None, R=None, ref_labels=None):
    """Whether float32's S may change the selection or a Recall@K count: a similarity
    within twice delta of a threshold (each S_ic and each threshold may be off by delta)
    or of the best positive, or a tie a RELATIVE_* rule would see. S, if given, is
    similarities(X, R)."""
    S = similarities(X, R) if S is None else S
    near = 2 * s_error_bound(X, R) + 1e-15 * max(1.0, abs(ref.f32(params.margin_ident)),
                                               abs(ref.f32(params.margin_diff)))
    return (ref.boundary_gap(X, labels, params, S=S, R=R, ref_labels=ref_labels) <= near
            or ref.recall_gap(X, labels, S=S, R=R, ref_labels=ref_labels) <= near
            or exact_ties_at_relative_thresholds(S, candidate_labels(labels, ref_labels),
                                                 params))


def mines_a_gradient(S, labels, params):
    """Whether some query keeps both a positive and a negative (else the loss and the
    gradient are exactly 0). labels: the candidates'."""
    kept_pos, kept_neg = ref.selection(S, labels, params)
    return any(p and n for p, n in zip(kept_pos, kept_neg))


def draw_labels(draw, rng, N):
    """N float32 labels with `classes` distinct values, each used once before any is
    repeated: mostly 2 to N / 2 of them (most queries have positives and negatives),
    one batch in ten from 1 (all equal) to N (all distinct); in about one batch in
    seven, some labels NaN."""
    if rng.random() < 0.1:
        classes = draw(st.integers(1, N))
    else:
        classes = draw(st.integers(min(2, N), max(min(2, N), N // 2)))
    values = rng.choice([-3.5, -1.0, 0.0, 1.0, 2.0, 7.0, 1e6, 0.25] + list(range(8, 72)),
                        size=classes, replace=False)
    labels = values[np.concatenate([np.arange(classes), rng.integers(0, classes, N - classes)])]
    labels = rng.permutation(labels).astype(np.float32)
    if rng.random() < 1 / 7:
        labels[rng.choice(N, size=draw(st.integers(1, max(1, N // 4))), replace=False)] = np.nan
    return labels


def draw_reference_labels(rng, labels, M):
    """M float32 labels for references: mostly the batch's classes and new ones, one set
    in six of the batch's classes only (as many positives as can be), one in six of new
    ones only (every reference a negative); in about one set in seven, some NaN."""
    ours = np.unique(labels[~np.isnan(labels)])
    new = np.arange(100.0, 164.0)
    kind = rng.integers(0, 6)
    values = new if kind == 0 or not len(ours) else ours if kind == 1 else \
        np.concatenate([ours, new[:max(1, len(ours) // 2)]])
    ref_labels = rng.choice(values, size=M).astype(np.float32)
    if M and rng.random() < 1 / 7:
        ref_labels[rng.random(M) < 0.3] = np.nan
    return ref_labels


def draw_features(rng, layout, labels, D, scale, clustering, queries=None):
    """len(labels) x D float32 features of the layout. Each class (NaN labels together)
    has a centre, `clustering` times as far out as a row lies around it (0: features
    that know nothing of the labels; larger: positives more alike than negatives, which
    HARD and EASY mining need to keep pairs of both kinds). The first `queries` rows
    (all, if not given) are the batch: an overflowing row is one of them."""
    N = len(labels)
    classes = np.unique(labels, return_inverse=True)[1].reshape(N)
    if layout in GRID:
        centres = np.rint(clustering * rng.integers(-2, 3, size=(classes.max() + 1, D)))
        X = (rng.integers(-2, 3, size=(N, D)) + centres[classes]).astype(np.float64)
    else:
        X = rng.normal(size=(N, D)) + clustering * rng.normal(size=(classes.max() + 1, D))[classes]
    if layout in ('unit', 'duplicates', 'collapsed'):
        X /= np.linalg.norm(X, axis=1, keepdims=True)
    if layout in ('grid duplicates', 'duplicates'):
        X[rng.integers(0, N, N // 2)] = X[rng.integers(0, N, N // 2)]
    elif layout in ('grid collapsed', 'collapsed'):
        X[:] = X[0]
    X *= scale
    if layout == 'non-finite':
        kind = rng.integers(0, 4)
        if kind == 3:                               # S_ii > 1e40 overflows float32
            k = rng.integers(0, N if queries is None else queries)
            X[k] *= 1e20 / np.abs(X[k]).max()
        else:
            X[rng.integers(0, N), rng.integers(0, D)] = (np.nan, np.inf, -np.inf)[kind]
    return X.astype(np.float32)


def draw_scale(draw, layout, D, extreme):
    """A power of two for the grid (S stays exact); for continuous rows a scale that
    keeps S within a few units, or (half the extreme examples) one from 1e-3 to 1e3."""
    if layout in GRID:
        return 2.0 ** draw(st.integers(-4, 0))
    if extreme and draw(st.booleans()):
        return 10.0 ** draw(st.one_of(st.sampled_from([-3.0, 3.0]), st.floats(-3, 3)))
    gaussian = 1 / math.sqrt(D) if layout not in ('unit', 'duplicates', 'collapsed') else 1
    return gaussian * 10.0 ** draw(st.floats(-0.7, 0.3))


def draw_params(draw, X, extreme):
    """ref.Params: every region and method; margins in units of the spread of the
    batch's similarities and SNs that keep pairs, each of them an extreme value in
    half the extreme examples."""
    S = X.astype(np.float64) @ X.T.astype(np.float64)
    off = S[~np.eye(len(X), dtype=bool)]
    spread = float(off.std()) if off.size > 1 and np.isfinite(off).all() else 1.0
    spread = spread if spread > 0 else 1.0

    def margin():
        if extreme and draw(st.booleans()):
            return draw(st.sampled_from(EXTREME_MARGINS))
        if draw(st.integers(0, 2)) == 0:
            return draw(st.sampled_from([0.0, -0.0]))
        return ref.f32(draw(st.floats(-0.5, 0.5)) * spread)

    def sn():
        if extreme and draw(st.booleans()):
            return draw(st.one_of(st.sampled_from(EXTREME_SNS), st.floats(-1.5, 70, width=32)))
        return draw(st.one_of(st.sampled_from(SNS), st.floats(-1, 8, width=32)))

    return ref.Params(
        margin_ident=margin(), margin_diff=margin(), identsn=sn(), diffsn=sn(),
        ap_mining_region=draw(st.sampled_from(ref.REGIONS)),
        ap_mining_method=draw(st.sampled_from(ref.METHODS)),
        an_mining_region=draw(st.sampled_from(ref.REGIONS)),
        an_mining_method=draw(st.sampled_from(ref.METHODS)))


@st.composite
def examples(draw):
    """An Example. Hypothesis draws the sizes, the layout and the values; the kind of
    batch (tiny, extreme, NaN labels...) is chosen by the seeded generator at the odds
    stated, which hypothesis's preference for boundary values would otherwise skew."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    N = draw(st.integers(1, 2)) if rng.random() < 0.03 else draw(st.integers(3, 64))
    D = draw(st.integers(1, 64))
    # By index: st.sampled_from left some layouts out of whole runs.
    layout = LAYOUTS[draw(st.integers(0, len(LAYOUTS) - 1))]
    labels = draw_labels(draw, rng, N)
    ref_labels = None
    if rng.random() < 1 / 3:
        ref_labels = draw_reference_labels(rng, labels, draw(st.integers(0, 64)))
    every_label = labels if ref_labels is None else np.concatenate([labels, ref_labels])
    extreme = rng.random() < 0.2
    clustering = 0.0 if rng.random() < 0.25 else draw(st.floats(0.2, 2.0))
    scale = draw_scale(draw, layout, D, extreme)

    def features():
        """The batch's features and the references' (None without), drawn together."""
        rows = draw_features(rng, layout, every_label, D, scale, clustering, N)
        return rows[:N], None if ref_labels is None else rows[N:]

    X, R = features()
    params = draw_params(draw, X, extreme)
    # Features are drawn again (up to REDRAWS times) while a continuous batch lies near
    # a threshold, or while nothing is mined that has a gradient.
    redraws = 0
    while redraws < REDRAWS and layout != 'non-finite':
        S = similarities(X, R)
        if ((layout not in CONTINUOUS
             or not near_a_threshold(X, labels, params, S, R, ref_labels))
                and mines_a_gradient(S, candidate_labels(labels, ref_labels), params)):
            break
        X, R = features()
        redraws += 1
    description = (f'{layout} N={N} D={D} scale={scale:.3g} clustering={clustering:.2g} '
                   f'seed={seed}' + ('' if R is None else f' M={len(R)}'))
    return Example(X, labels, params, layout, extreme, redraws, description, R, ref_labels)


class Run(NamedTuple):
    """What one layer did with a batch."""
    tops: list
    grad: np.ndarray            # the features' diff
    label_diffs: list           # the labels' diffs (the references' too, M > 0)
    ref_grad: np.ndarray        # the references' diff (None without references, or M = 0)
    layer: object


class Nets:
    """Runs a batch through a one-layer net of either kind (a fresh net each time, since
    the parameters live in the net's definition)."""

    def __init__(self, tmp_dir):
        self.path = tmp_dir / 'net.prototxt'

    def run(self, layer_type, X, labels, params, R=None, ref_labels=None):
        if R is None:
            text, tops = loss_net_text(len(X), X.shape[1], params, 5, layer_type)
        else:
            text, tops = reference_net_text(len(X), len(R), X.shape[1], params,
                                            layer_type), ['loss', 'r1', 'r5', 'r10', 'asum']
        self.path.write_text(text)
        net = caffe.Net(str(self.path), caffe.TRAIN)
        layer = net.layers[list(net._layer_names).index('npair')]
        with np.errstate(all='ignore'):             # the non-finite batches
            if R is None:
                feed(net, _Batch(X, labels))
                return Run([float(net.blobs[t].data) for t in tops], net.blobs['feat'].diff.copy(),
                           [net.blobs['label'].diff.copy()], None, layer)
            # Through Net._forward / _backward: Net.backward() reads the diff of every
            # Input top, which aborts on an empty one (M = 0).
            net.blobs['feat'].data[...] = X
            net.blobs['label'].data[...] = labels
            if len(R):
                net.blobs['ref'].data[...] = R
                net.blobs['ref_label'].data[...] = ref_labels
            net._forward(0, len(net.layers) - 1)
            net._backward(len(net.layers) - 1, 0)
        label_diffs = [net.blobs['label'].diff.copy()]
        if len(R):
            label_diffs.append(net.blobs['ref_label'].diff.copy())
        return Run([float(net.blobs[t].data) for t in tops], net.blobs['feat'].diff.copy(),
                   label_diffs, net.blobs['ref'].diff.copy() if len(R) else None, layer)


class _Batch:
    """What test_cpp_layer.feed reads of a case."""

    def __init__(self, X, labels):
        self.X, self.labels = X, labels


@pytest.fixture(scope='module')
def nets(cpp_layer, tmp_path_factory):
    return Nets(tmp_path_factory.mktemp('fuzz'))


def check_non_finite(name, tops, grad):
    loss, r1, r5, r10, _ = tops
    assert math.isnan(loss), f'{name}: loss {loss} from non-finite features'
    assert np.isnan(grad).any(), f'{name}: no NaN in the gradient of non-finite features'
    assert all(0 <= r <= 1 for r in (r1, r5, r10)), f'{name}: R@K {r1}, {r5}, {r10}'


def check_invariants(name, run, X, labels, ref_labels=None):
    """What holds for any finite batch, near a threshold or not."""
    loss, r1, r5, r10, asum = run.tops
    grads = [run.grad] + ([] if run.ref_grad is None else [run.ref_grad])
    N = len(X)
    labels = candidate_labels(labels, ref_labels)
    C = len(labels)
    assert all(math.isfinite(v) for v in run.tops), f'{name}: tops {run.tops}'
    assert loss >= 0, f'{name}: loss {loss}'
    assert 0 <= r1 <= r5 <= r10 <= 1, f'{name}: R@K {r1}, {r5}, {r10}'
    eligible = sum(1 for i in range(N) if ref.positives(labels, i))
    for K, r in zip(ref.RECALL_KS, (r1, r5, r10)):
        assert abs(r * eligible - round(r * eligible)) <= 1e-4 * max(eligible, 1), \
            f'{name}: R@{K} = {r} is no multiple of 1/{eligible}'
        if eligible == 0:
            assert r == 0, f'{name}: R@{K} = {r} without an eligible query'
        elif C - 2 < K:              # a query with a positive has at most C - 2 negatives
            assert r == 1, f'{name}: R@{K} = {r} with C = {C}'
    mean_l1 = np.abs(X.astype(np.float64)).sum() / N
    assert asum >= 0 and abs(asum - mean_l1) <= 1e-4 * mean_l1 + 1e-30, \
        f'{name}: feature_asum {asum}, mean L1 {mean_l1}'
    assert all(np.isfinite(g).all() for g in grads), f'{name}: gradient not finite'
    assert not any(d.any() for d in run.label_diffs), f'{name}: labels got a diff'
    if not any(ref.positives(labels, i) and ref.negatives(labels, i) for i in range(N)):
        assert loss == 0 and not any(g.any() for g in grads), \
            f'{name}: nothing to learn, yet loss {loss}, |grad| {np.abs(run.grad).max()}'


def check_fallback_weights(layer, X, labels, R=None, ref_labels=None):
    """The fallback's W = G / (g / N): 0 off its own kept pairs and on every row without
    a kept positive (so such a row contributes nothing to the gradients)."""
    kept = npair_math.selected_pairs(X, labels, layer.params, R, ref_labels)
    same = labels[:, None] == np.array(candidate_labels(labels, ref_labels),
                                       np.float32)[None, :]
    has_positive = (kept & same).any(axis=1)
    W = layer.weights
    assert not W[~kept].any(), 'fallback: weight on a pair it did not keep'
    assert not W[~has_positive].any(), 'fallback: weight in a row without a kept positive'


def error_bound(X, result, delta, R=None):
    """Bounds on each element of |layer gradient - reference gradient| (N x D), and of
    the references' (M x D), to first order. The layer's S is within delta of the exact
    one, which moves each softmax weight w_ic and w+_ic by a factor e^(+-2 delta);
    float32 exponentials and sums of C = N + M terms add (C + 4) unit roundoffs, and
    the products with X and R dot products of C + 2 terms. Row a of the gradient sums
    (g / N)(W_aj + W_ja) x_j over the batch and (g / N) W_a,N+m r_m over the references,
    so its error is at most that relative error times those sums over (w + w+) and |x|,
    |r|; reference m's, times (g / N) sum_i (w + w+)_i,N+m |x_i|. Below float32's
    smallest normal number a weight or the gradient itself keeps no relative precision:
    that much more, absolutely, for each."""
    N, C = result.w.shape
    A = (np.abs(result.w) + np.abs(result.w_pos)) / N
    absX = np.abs(X.astype(np.float64))
    absR = np.zeros((0, X.shape[1])) if R is None else np.abs(R.astype(np.float64))
    relative = math.expm1(min(2 * delta, 700)) + (C + 4) * U32 + (C + 2) * U32 / (1 - (C + 2) * U32)
    tiny = FLT_MIN * (4 / N * (absX.sum(axis=0) + absR.sum(axis=0)) + 1)
    A_B, A_R = A[:, :N], A[:, N:]
    return (relative * ((A_B + A_B.T) @ absX + A_R @ absR) + tiny,
            relative * (A_R.T @ absX) + tiny)


def assert_close(name, got, want, tol):
    assert abs(got - want) <= tol, f'{name}: {got} vs {want} (tolerance {tol:.3g})'


def check_against_reference(results, X, labels, params, delta, R=None, ref_labels=None):
    """Both layers against the reference (the batch is clear of every threshold); the
    kind of gradient comparison it allowed, as a statistics event."""
    result = ref.evaluate(X, labels, params, R=R, ref_labels=ref_labels)
    want = ref.top_values(result, 5)
    N = len(X)
    largest = max(float(np.abs(result.grad).max()), float(np.abs(result.ref_grad).max(initial=0)))
    bound, ref_bound = error_bound(X, result, delta, R)
    tight = max(float(bound.max()), float(ref_bound.max(initial=0))) <= 1e-3 * largest
    for name, (values, grad, ref_grad) in results.items():
        # Each l_i is two log-sum-exps, each moved by at most delta when S moves by
        # delta; the exp sums add float32 rounding (1e-5 covers 64 terms).
        assert_close(f'{name}: loss', values[0], want[0], 1e-4 * abs(want[0]) + 2 * delta + 1e-5)
        for K, got, exp in zip(ref.RECALL_KS, values[1:4], want[1:4]):
            assert_close(f'{name}: R@{K}', got, exp, 1e-6)
        assert_close(f'{name}: feature_asum', values[4], want[4], 1e-4 * abs(want[4]))
        for what, got, expected, b in (('gradient', grad, result.grad, bound),
                                       ("references' gradient", ref_grad, result.ref_grad,
                                        ref_bound)):
            if got is None:
                continue
            tol = 1e-3 * largest + (0 if tight else b)
            err = np.abs(np.asarray(got, np.float64).reshape(expected.shape) - expected)
            worst = np.unravel_index(np.argmax(err - tol), err.shape)
            assert (err <= tol).all(), (
                f'{name}: {what} off by {err[worst]:.3g} at {worst} (tolerance '
                f'{np.broadcast_to(tol, err.shape)[worst]:.3g}, largest element {largest:.3g})')
    # A sample or reference that no kept pair touches gets nothing: candidate c is
    # touched by its own row (a batch sample with a kept positive) or by a row with a
    # kept positive that keeps it.
    has_positive = [bool(p) for p in result.kept_positives]
    for c in range(result.w.shape[1]):
        touched = (c < N and has_positive[c]) or any(
            has_positive[j] and (c in result.kept_positives[j] or c in result.kept_negatives[j])
            for j in range(N))
        if not touched:
            for name, (_, grad, ref_grad) in results.items():
                got = grad[c] if c < N else ref_grad[c - N]
                assert not got.any(), f'{name}: gradient on untouched candidate {c}'
    return 'compared: gradient 0' if largest == 0 else (
        'compared: tight' if tight else 'compared: loose')


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
          print_blob=True)
@given(example=examples())
def test_layers_over_random_batches(example, nets):
    X, labels, params = example.X, example.labels, example.params
    N, D = X.shape
    event(f'N {"1" if N == 1 else "2-9" if N < 10 else "10-31" if N < 32 else "32-64"}, '
          f'D {"1-9" if D < 10 else "10-31" if D < 32 else "32-64"}')
    event(f'{example.layout} layout')
    event('NaN labels' if np.isnan(labels).any() else 'no NaN label')
    event(f'feature redraws: {example.redraws}')
    R, ref_labels = example.R, example.ref_labels
    if R is None:
        event('references: none (2 bottoms)')
    else:
        M = len(R)
        event(f'references: {"M = 0" if M == 0 else "M < N" if M < N else "M >= N"}')
        if np.isnan(ref_labels).any():
            event('references: NaN labels')
    results = {}
    for layer_type in LAYERS:
        run = nets.run(layer_type, X, labels, params, R, ref_labels)
        name = f"{'C++' if layer_type == 'NPairMultiClassLoss' else 'fallback'} " \
               f'({example.description}, {params})'
        if example.layout == 'non-finite':
            check_non_finite(name, run.tops, run.grad)
            continue
        check_invariants(name, run, X, labels, ref_labels)
        if layer_type == 'Python':
            check_fallback_weights(run.layer, X, labels, R, ref_labels)
        results[name.split()[0]] = (run.tops, run.grad, run.ref_grad)
    if example.layout == 'non-finite':
        event('non-finite: NaN loss')
        return
    exact = example.layout in GRID
    if not exact and near_a_threshold(X, labels, params, R=R, ref_labels=ref_labels):
        event('invariants only: near a threshold or a tie')
        return
    event(check_against_reference(results, X, labels, params,
                                  0.0 if exact else s_error_bound(X, R), R, ref_labels))
