"""Reshaping: the C++ layer and the Python fallback follow batch-size changes between
forward passes (pycaffe's blob.reshape + net.reshape(), and a solver's TEST net with
another batch size than its TRAIN net), with nothing left over from an earlier batch:

  - after any sequence of sizes (growing, shrinking, N = 1, back again), a batch gives
    bit for bit what a net built for that size gives, and matches the reference;
  - on CPU the same input twice gives bit-identical tops and gradients, whether run
    twice in a row or with batches of other sizes in between.
"""
import numpy as np
import pytest

import npair_reference as ref

caffe = pytest.importorskip('caffe', reason='pycaffe not importable: source build/env.sh')

D = 5
TOPS = ['loss', 'r1', 'r5', 'r10', 'asum']
SIZES = [8, 3, 20, 1, 8, 64, 2, 8]        # grows, shrinks, 1, and back to 8 twice
PARAMS = {'relative-local': ref.Params(ap_mining_method='RELATIVE_EASY', identsn=-0.5,
                                       an_mining_method='RELATIVE_HARD', diffsn=1.0,
                                       margin_diff=0.05),
          'easy-global': ref.Params(ap_mining_region='GLOBAL', ap_mining_method='EASY',
                                    an_mining_region='GLOBAL', an_mining_method='HARD')}


def net_text(N, params, layer_type):
    """Input features -> L2Normalize -> the N-pair layer (C++ or fallback), five tops."""
    if layer_type == 'cpp':
        loss = f'type: "NPairMultiClassLoss" npair_loss_param {{ {ref.to_text(params)} }}'
    else:
        loss = ('type: "Python" loss_weight: 1 loss_weight: 0 loss_weight: 0 '
                'loss_weight: 0 loss_weight: 0 python_param { module: "npair_loss" '
                f'layer: "NPairMultiClassLossLayer" param_str: "{ref.to_text(params)}" }}')
    return f'''force_backward: true
layer {{ name: "data" type: "Input" top: "x" top: "label"
  input_param {{ shape {{ dim: {N} dim: {D} }} shape {{ dim: {N} }} }} }}
layer {{ name: "norm" type: "L2Normalize" bottom: "x" top: "feat" }}
layer {{ name: "npair" {loss} bottom: "feat" bottom: "label"
  {' '.join(f'top: "{t}"' for t in TOPS)} }}
'''


@pytest.fixture
def make_net(caffe, tmp_path):
    def make(N, params, layer_type):
        path = tmp_path / f'{layer_type}_{N}.prototxt'
        path.write_text(net_text(N, params, layer_type))
        return caffe.Net(str(path), caffe.TRAIN)
    return make


def run(net, case):
    """Forward and backward; (tops, d loss / d feat, d loss / d x), copies."""
    net.blobs['x'].data[...] = case.X
    net.blobs['label'].data[...] = case.labels
    net.forward()
    net.backward()
    return ([net.blobs[t].data.copy() for t in TOPS], net.blobs['feat'].diff.copy(),
            net.blobs['x'].diff.copy())


def resize(net, N):
    net.blobs['x'].reshape(N, D)
    net.blobs['label'].reshape(N)
    net.reshape()


def cases_for(sizes, params, npair_cases, seed):
    """A batch per size: away from the thresholds up to N = 20 (beyond, a random batch
    of unit rows, which the reference judges only if it happens to be away too)."""
    rng = np.random.default_rng(seed)
    out = {}
    for N in sorted(set(sizes)):
        if N == 1:
            out[N] = npair_cases.of(rng.normal(size=(1, D)) / np.sqrt(D), [0], params)
        elif N <= 20:
            out[N] = npair_cases.case(rng, params, N=N, D=D, classes=max(1, N // 2))
        else:
            X = rng.normal(size=(N, D))
            X /= np.linalg.norm(X, axis=1, keepdims=True)
            out[N] = npair_cases.of(X, rng.permutation(np.arange(N) // 2), params)
    return out


def assert_identical(a, b, what, asum_rtol=0.0):
    """Two run() results hold the same bytes; feature_asum (tops[4]) may be asum_rtol
    apart, relatively."""
    (tops_a, *diffs_a), (tops_b, *diffs_b) = a, b
    for u, v in zip(tops_a[:4] + diffs_a, tops_b[:4] + diffs_b):
        assert u.shape == v.shape and u.tobytes() == v.tobytes(), what
    assert abs(tops_a[4] - tops_b[4]) <= asum_rtol * abs(tops_b[4]), \
        f'{what}: feature_asum {tops_a[4]} vs {tops_b[4]}'


@pytest.mark.parametrize('layer_type', ['cpp', 'python'])
@pytest.mark.parametrize('config', ['usage', *PARAMS])
def test_batch_size_changes(layer_type, config, make_net, cpp_layer, npair_cases,
                            assert_matches_reference, usage_params):
    params = usage_params if config == 'usage' else PARAMS[config]
    cases = cases_for(SIZES, params, npair_cases, seed=len(config))
    net = make_net(SIZES[0], params, layer_type)
    first = {}
    for N in SIZES:
        resize(net, N)
        outputs = run(net, cases[N])
        # A fresh net's features sit at another address, and BLAS sasum's order of
        # summation depends on the alignment: feature_asum may differ by float32 rounding
        # (at most (count - 1) u relative for a sum of count terms).
        assert_identical(outputs, run(make_net(N, params, layer_type), cases[N]),
                         f'N = {N} after a reshape differs from a net built for it',
                         asum_rtol=N * D * 2.0 ** -24)
        # L2Normalize of the (unit) rows moves them by an ulp: judge the loss layer on
        # what it was given.
        X = net.blobs['feat'].data.reshape(N, D)
        if N <= 20 or away_from_thresholds(X, cases[N].labels, params):
            given = npair_cases.of(X, cases[N].labels, params)
            assert_matches_reference(given, [float(t) for t in outputs[0]], outputs[1])
        if N in first:
            assert_identical(outputs, first[N], f'N = {N} again: not bit-identical')
        first[N] = outputs


@pytest.mark.parametrize('layer_type', ['cpp', 'python'])
def test_same_input_twice_in_a_row(layer_type, make_net, cpp_layer, npair_cases, usage_params):
    case = cases_for([16], usage_params, npair_cases, seed=3)[16]
    net = make_net(16, usage_params, layer_type)
    once = run(net, case)
    assert_identical(once, run(net, case), 'the same input twice differs')
    net.reshape()                           # a reshape to the same shape changes nothing
    assert_identical(once, run(net, case), 'the same input after reshape() differs')


SOLVER_NET = '''
layer {{ name: "data" type: "Input" top: "x" top: "label" include {{ phase: TRAIN }}
  input_param {{ shape {{ dim: {train} dim: 6 }} shape {{ dim: {train} }} }} }}
layer {{ name: "data" type: "Input" top: "x" top: "label" include {{ phase: TEST }}
  input_param {{ shape {{ dim: {test} dim: 6 }} shape {{ dim: {test} }} }} }}
layer {{ name: "embed" type: "InnerProduct" bottom: "x" top: "embed"
  inner_product_param {{ num_output: 4 weight_filler {{ type: "gaussian" std: 0.5 }} }} }}
layer {{ name: "norm" type: "L2Normalize" bottom: "embed" top: "feat" }}
layer {{ name: "npair" type: "NPairMultiClassLoss" bottom: "feat" bottom: "label"
  top: "loss" top: "r1" top: "r5" top: "r10" top: "asum"
  npair_loss_param {{ {params} }} }}
'''


def away_from_thresholds(X, labels, params):
    S = np.abs(X.astype(np.float64) @ X.T.astype(np.float64)).max()
    gap = 1e-3 * max(1.0, S)
    return ref.boundary_gap(X, labels, params) >= gap and ref.recall_gap(X, labels) >= gap


def test_solver_test_net_with_another_batch_size(cpp_layer, tmp_path, usage_params):
    """TRAIN batches of 10 and TEST batches of 6 in one solver, alternating: each net's
    outputs match the reference on its own batch, every time."""
    (tmp_path / 'net.prototxt').write_text(SOLVER_NET.format(
        train=10, test=6, params=ref.to_text(usage_params)))
    (tmp_path / 'solver.prototxt').write_text(
        f'net: "{tmp_path / "net.prototxt"}" test_iter: 1 test_interval: 1000000 '
        'test_initialization: false base_lr: 0.1 lr_policy: "fixed" momentum: 0.9 '
        'display: 0 random_seed: 3 snapshot_after_train: false')
    solver = cpp_layer.SGDSolver(str(tmp_path / 'solver.prototxt'))
    train, test = solver.net, solver.test_nets[0]
    rng = np.random.default_rng(11)
    checked = 0
    for step in range(12):
        for net, N in ((train, 10), (test, 6)):
            net.blobs['x'].data[...] = rng.normal(size=(N, 6))
            net.blobs['label'].data[...] = rng.permutation(np.arange(N) // 2)
            if net is test:
                test.share_with(train)
            net.forward()
            X = net.blobs['feat'].data.copy()
            labels = net.blobs['label'].data.copy()
            values = [float(net.blobs[t].data) for t in ('loss', 'r1', 'r5', 'r10', 'asum')]
            assert all(np.isfinite(values)), values
            if away_from_thresholds(X, labels, usage_params):
                want = ref.top_values(ref.evaluate(X, labels, usage_params), 5)
                assert values == pytest.approx(want, rel=1e-4, abs=1e-6), (step, N)
                checked += 1
        solver.step(1)          # trains on the batch it was just given
    assert checked >= 12, f'only {checked} of 24 batches away from the thresholds'
