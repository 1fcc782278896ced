"""The C++ NPairMultiClassLoss and L2Normalize layers through pycaffe: the usage
block as written, outputs against the float64 reference, NetSpec, agreement with the Python
fallback, and the usage block converted to the fallback."""
import itertools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import npair_reference as ref
from conftest import Cases
from test_fallback_math import (ALL_RULES, MINUS_INF_POSITIVES, NAN_LABEL_CASES,
                                nan_label_batch, nan_positives_batch, one_non_finite_feature)

caffe = pytest.importorskip('caffe', reason='pycaffe not importable: source build/env.sh')

from npair_loss import convert  # noqa: E402

NORM, LOSS_TOPS = 'loss3/pool5/7x7_s1/norm', [
    'loss3/type_npair_mc', 'loss3/type_npair_mc_retrieve_top1', 'loss3/type_npair_mc_retrieve_top5',
    'loss3/type_npair_mc_retrieve_top10', 'loss3/feature_asum']
EPS = 1e-12      # L2Normalize's


def usage_net_text(usage_block, N, C, features='Input'):
    """The usage block fed by an Input (or DummyData) of features and an Input of labels."""
    if features == 'Input':
        data = f'''layer {{ name: "data" type: "Input" top: "pool5/7x7_s1" top: "label_type_mb"
  input_param {{ shape {{ dim: {N} dim: {C} dim: 1 dim: 1 }} shape {{ dim: {N} }} }} }}'''
    else:
        data = f'''layer {{ name: "feat" type: "DummyData" top: "pool5/7x7_s1"
  dummy_data_param {{ shape {{ dim: {N} dim: {C} dim: 1 dim: 1 }}
                     data_filler {{ type: "gaussian" std: 1 }} }} }}
layer {{ name: "label" type: "Input" top: "label_type_mb"
  input_param {{ shape {{ dim: {N} }} }} }}'''
    return 'force_backward: true\n' + data + '\n' + usage_block


def loss_net_text(N, D, params, ntop=5, layer_type='NPairMultiClassLoss'):
    """Input bottoms and one N-pair layer, C++ (default loss weights) or the fallback."""
    tops = ['loss'] if ntop == 1 else ['loss', 'r1', 'r5', 'r10'][:ntop - 1] + ['asum']
    if layer_type == 'NPairMultiClassLoss':
        body = f'npair_loss_param {{ {ref.to_text(params)} }}'
    else:
        weights = ' '.join(f'loss_weight: {1 if k == 0 else 0}' for k in range(ntop))
        body = (f'{weights} python_param {{ module: "npair_loss" '
                f'layer: "NPairMultiClassLossLayer" param_str: "{ref.to_text(params)}" }}')
    return f'''force_backward: true
layer {{ name: "data" type: "Input" top: "feat" top: "label"
  input_param {{ shape {{ dim: {N} dim: {D} }} shape {{ dim: {N} }} }} }}
layer {{ name: "npair" type: "{layer_type}" bottom: "feat" bottom: "label"
  {' '.join(f'top: "{t}"' for t in tops)} {body} }}
''', tops


@pytest.fixture
def make_net(cpp_layer, tmp_path):
    def make(text, name='net.prototxt'):
        path = tmp_path / name
        path.write_text(text, encoding='utf-8')
        return cpp_layer.Net(str(path), cpp_layer.TRAIN)
    return make


def l2_normalize(x):
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    norm = np.sqrt((x * x).sum(axis=1, keepdims=True) + EPS)
    return x / norm, norm


def l2_normalize_backward(x, top_diff):
    """J^T top_diff of y = x / sqrt(sum x^2 + eps), per sample."""
    y, norm = l2_normalize(x)
    g = np.asarray(top_diff, np.float64).reshape(y.shape)
    return (g - y * (y * g).sum(axis=1, keepdims=True)) / norm


def unnormalized(case, rng):
    """Features whose L2 normalisation is case.X (to float rounding): rows rescaled."""
    return case.X * rng.uniform(0.5, 3.0, size=(case.N, 1)).astype(np.float32)


def test_usage_block_runs_as_written(usage_block, make_net, npair_cases,
                                     assert_matches_reference, usage_params):
    rng = np.random.default_rng(2024)
    N, C = 16, 8
    case = npair_cases.case(rng, usage_params, N=N, D=C, classes=5)
    net = make_net(usage_net_text(usage_block, N, C))
    assert [net.blob_loss_weights[t] for t in LOSS_TOPS] == [1.0] * 5
    x = unnormalized(case, rng)
    net.blobs['pool5/7x7_s1'].data[...] = x.reshape(N, C, 1, 1)
    net.blobs['label_type_mb'].data[...] = case.labels
    net.forward()
    net.backward()
    assert_matches_reference(case, [float(net.blobs[t].data) for t in LOSS_TOPS],
                             net.blobs[NORM].diff)
    # Only the loss carries a gradient (weight 1): monitors with weight 1 add none.
    expected = l2_normalize_backward(x, case.reference().grad)
    got = net.blobs['pool5/7x7_s1'].diff.reshape(N, C)
    assert np.abs(got - expected).max() <= 1e-3 * np.abs(expected).max()
    assert not net.blobs['label_type_mb'].diff.any()


def test_usage_block_with_dummy_data(usage_block, cpp_layer, make_net, npair_cases,
                                     assert_matches_reference, usage_params):
    N, C = 12, 6
    net = make_net(usage_net_text(usage_block, N, C, features='DummyData'))
    labels = np.repeat(np.arange(4), 3).astype(np.float32)
    net.blobs['label_type_mb'].data[...] = labels
    for seed in range(50):
        cpp_layer.set_random_seed(seed)
        net.forward()
        X = net.blobs[NORM].data.reshape(N, C).copy()
        if min(ref.boundary_gap(X, labels, usage_params), ref.recall_gap(X, labels)) > 1e-3:
            break
    else:
        pytest.fail('no DummyData batch away from the selection thresholds')
    net.backward()
    case = npair_cases.of(X, labels, usage_params)
    assert_matches_reference(case, [float(net.blobs[t].data) for t in LOSS_TOPS],
                             net.blobs[NORM].diff)


def feed(net, case, features='feat', labels='label'):
    net.blobs[features].data[...] = case.X.reshape(net.blobs[features].data.shape)
    net.blobs[labels].data[...] = case.labels.reshape(net.blobs[labels].data.shape)
    net.forward()
    net.backward()


@pytest.mark.parametrize('ntop', [1, 2, 3, 4, 5])
def test_default_loss_weights(ntop, make_net):
    text, tops = loss_net_text(4, 2, ref.Params(), ntop)
    net = make_net(text)
    assert [net.blob_loss_weights[t] for t in tops] == [1.0] + [0.0] * (ntop - 1)


@pytest.mark.parametrize('ntop', [1, 2, 3, 4, 5])
def test_randomized_against_reference(ntop, make_net, npair_cases, assert_matches_reference):
    rng = np.random.default_rng(500 + ntop)
    for _ in range(6):
        case = npair_cases.case(rng, npair_cases.params(rng), N=int(rng.integers(2, 17)), D=5)
        text, tops = loss_net_text(case.N, 5, case.params, ntop)
        net = make_net(text)
        feed(net, case)
        assert_matches_reference(case, [float(net.blobs[t].data) for t in tops],
                                 net.blobs['feat'].diff)
        assert not net.blobs['label'].diff.any()


@pytest.mark.parametrize('labels', [[0], [0, 1, 2, 3], [5, 5, 5, 5]],
                         ids=['N=1', 'no-positive', 'no-negative'])
def test_empty_cases(labels, make_net, npair_cases, assert_matches_reference):
    params = ref.Params(ap_mining_method='HARD', an_mining_method='RELATIVE_HARD')
    X = np.random.default_rng(1).normal(size=(len(labels), 3)).astype(np.float32)
    case = npair_cases.of(X, labels, params)
    text, tops = loss_net_text(len(labels), 3, params)
    net = make_net(text)
    feed(net, case)
    assert float(net.blobs['loss'].data) == 0 and not net.blobs['feat'].diff.any()
    assert_matches_reference(case, [float(net.blobs[t].data) for t in tops])


def test_netspec_writes_the_layer_and_it_parses_back(cpp_layer, make_net, usage_params):
    from caffe import layers as L, params as P
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format

    n = cpp_layer.NetSpec()
    n.feat, n.label = L.Input(shape=[dict(dim=[8, 4]), dict(dim=[8])], ntop=2)
    n.loss, n.r1, n.r5, n.r10, n.asum = L.NPairMultiClassLoss(
        n.feat, n.label, ntop=5, npair_loss_param={  # enums as NetSpec's numbers
            name: getattr(P.NPairLoss, value) if isinstance(value, str) else value
            for name, value in usage_params._asdict().items()})
    text = str(n.to_proto())
    assert 'type: "NPairMultiClassLoss"' in text and 'npair_loss_param {' in text
    parsed = text_format.Parse(text, caffe_pb2.NetParameter())
    layer = [x for x in parsed.layer if x.type == 'NPairMultiClassLoss'][0]
    assert list(layer.top) == ['loss', 'r1', 'r5', 'r10', 'asum']
    assert ref.params_from_message(layer.npair_loss_param) == usage_params
    net = make_net(text)
    net.blobs['feat'].data[...] = np.random.default_rng(0).normal(size=(8, 4))
    net.blobs['label'].data[...] = np.repeat(np.arange(4), 2)
    assert np.isfinite(net.forward()['loss'])


def test_l2_normalize_against_numpy(make_net):
    rng = np.random.default_rng(3)
    net = make_net('''force_backward: true
layer { name: "data" type: "Input" top: "x" input_param { shape { dim: 5 dim: 3 dim: 2 dim: 2 } } }
layer { name: "norm" type: "L2Normalize" bottom: "x" top: "y" }
''')
    x = rng.normal(size=(5, 3, 2, 2)).astype(np.float32)
    x[1] *= 1e-7                     # where eps = 1e-12 matters
    x[2] = 0                         # and where it is everything
    x[3] *= 1e4
    net.blobs['x'].data[...] = x
    net.forward()
    y, _ = l2_normalize(x)
    np.testing.assert_allclose(net.blobs['y'].data.reshape(5, -1), y, rtol=1e-5, atol=1e-7)
    g = rng.normal(size=x.shape).astype(np.float32)
    net.backward(y=g)
    expected = l2_normalize_backward(x, g.reshape(5, -1))
    got = net.blobs['x'].diff.reshape(5, -1)
    tolerance = 1e-4 * np.abs(expected) + 1e-5 * np.abs(expected).max(axis=1, keepdims=True)
    assert (np.abs(got - expected) <= tolerance).all(), (got, expected)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), ntop=st.integers(1, 5))
def test_cpp_and_python_layers_agree(seed, ntop, cpp_layer, tmp_path_factory, npair_cases):
    rng = np.random.default_rng(seed)
    case = npair_cases.case(rng, npair_cases.params(rng))
    outputs = []
    for layer_type in ('NPairMultiClassLoss', 'Python'):
        text, tops = loss_net_text(case.N, case.X.shape[1], case.params, ntop, layer_type)
        path = tmp_path_factory.mktemp('agree') / 'net.prototxt'
        path.write_text(text)
        net = cpp_layer.Net(str(path), cpp_layer.TRAIN)
        feed(net, case)
        outputs.append(([float(net.blobs[t].data) for t in tops], net.blobs['feat'].diff.copy()))
    (cpp_tops, cpp_grad), (py_tops, py_grad) = outputs
    assert cpp_tops == pytest.approx(py_tops, rel=1e-4, abs=1e-7), case
    assert np.abs(cpp_grad - py_grad).max() <= 1e-3 * max(np.abs(py_grad).max(), 1e-12), case


def test_usage_block_converted_to_the_fallback_gives_the_same_numbers(
        usage_block, make_net, npair_cases, usage_params):
    rng = np.random.default_rng(77)
    N, C = 16, 8
    case = npair_cases.case(rng, usage_params, N=N, D=C, classes=5)
    x = unnormalized(case, rng).reshape(N, C, 1, 1)
    cpp_text = usage_net_text(usage_block, N, C)
    py_text, names = convert.convert(cpp_text, 'python')
    assert names == ['loss3/type_mb'] and 'type: "NPairMultiClassLoss"' not in py_text
    assert convert.convert(py_text, 'cpp')[0].replace(' ', '').count('npair_loss_param') == 1
    results = []
    for text, name in ((cpp_text, 'cpp.prototxt'), (py_text, 'py.prototxt')):
        net = make_net(text, name)
        assert [net.blob_loss_weights[t] for t in LOSS_TOPS] == [1.0] * 5
        net.blobs['pool5/7x7_s1'].data[...] = x
        net.blobs['label_type_mb'].data[...] = case.labels
        net.forward()
        net.backward()
        results.append(([float(net.blobs[t].data) for t in LOSS_TOPS],
                        net.blobs['pool5/7x7_s1'].diff.copy()))
    (cpp_tops, cpp_grad), (py_tops, py_grad) = results
    assert cpp_tops == pytest.approx(py_tops, rel=1e-4)
    assert np.abs(cpp_grad - py_grad).max() <= 1e-3 * np.abs(cpp_grad).max()


def test_gradcheck_of_the_usage_block(usage_block, tmp_path, capsys, npair_cases, usage_params):
    """npair_loss.gradcheck through L2Normalize into the C++ layer, from the command line:
    the monitors (loss_weight 1 each) are left out of the objective."""
    from npair_loss import gradcheck
    rng = np.random.default_rng(5)
    N, C = 8, 3
    case = npair_cases.case(rng, usage_params, N=N, D=C, classes=3)
    (tmp_path / 'net.prototxt').write_text(usage_net_text(usage_block, N, C), encoding='utf-8')
    np.savez(tmp_path / 'in.npz', **{'pool5/7x7_s1': unnormalized(case, rng).reshape(N, C, 1, 1),
                                     'label_type_mb': case.labels})
    status = gradcheck.main([str(tmp_path / 'net.prototxt'), '--blob', 'pool5/7x7_s1',
                             '--inputs', str(tmp_path / 'in.npz'), '--step', '1e-3',
                             '--threshold', '1e-3'])
    out = capsys.readouterr().out
    assert status == 0 and 'pool5/7x7_s1: ' in out and ' 0 failed' in out, out


def test_gradcheck_sees_the_cpp_selection(make_net):
    """A step that moves a negative across the HARD threshold is skipped, not failed."""
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format
    from npair_loss import gradcheck
    text, _ = loss_net_text(4, 2, ref.Params(an_mining_method='HARD'))
    net = make_net(text)
    net.blobs['feat'].data[...] = [[1, 0], [0.5, 0.8], [0.5001, -0.8], [-0.9, 0.1]]
    net.blobs['label'].data[...] = [0, 0, 1, 2]
    layers = gradcheck.npair_layers(net, text_format.Parse(text, caffe_pb2.NetParameter()))
    assert [(layer.name, layer.params.an_mining_method) for layer in layers] == [('npair', 'HARD')]
    report = gradcheck.check_gradient(net, 'feat', selection=gradcheck.npair_selection(layers))
    assert report.ok and (2, 0) in report.skipped, report
    with pytest.raises(ValueError, match='pass the NetParameter'):
        gradcheck.npair_layers(net)


# --- NaN labels, non-finite values, Recall@K eligibility (docs/layer_contract.md §3) ---

def run_batch(make_net, X, labels, params, ntop=5):
    """The tops and the features' gradient of the C++ layer on one batch."""
    text, tops = loss_net_text(len(X), X.shape[1], params, ntop)
    net = make_net(text)
    feed(net, Cases.of(X, labels, params))
    return [float(net.blobs[t].data) for t in tops], net.blobs['feat'].diff.copy()


@pytest.mark.parametrize('name', NAN_LABEL_CASES)
def test_nan_labels_are_never_their_own_negative(name, make_net, assert_matches_reference):
    params, loss = NAN_LABEL_CASES[name]
    case = Cases.of(*nan_label_batch(), params)
    tops, grad = run_batch(make_net, case.X, case.labels, params)
    assert tops[0] == pytest.approx(loss, rel=1e-6, abs=1e-7)
    assert_matches_reference(case, tops, grad)


@pytest.mark.parametrize('value', [np.nan, np.inf, -np.inf, 'overflow'],
                         ids=['nan', 'inf', '-inf', 'overflow'])
def test_non_finite_similarities_make_the_loss_nan(value, make_net):
    X, labels = one_non_finite_feature(value)
    for ap, an in itertools.product(ALL_RULES, ALL_RULES):
        params = ref.Params(ap_mining_region=ap[0], ap_mining_method=ap[1],
                            an_mining_region=an[0], an_mining_method=an[1])
        tops, grad = run_batch(make_net, X, labels, params)
        assert np.isnan(tops[0]) and np.isnan(grad).any(), params
        assert all(0 <= r <= 1 for r in tops[1:4]), params


def test_rand_with_a_nan_feature(make_net):
    """N = 3, D = 1, X = (1, 1, NaN), labels (0, 0, 1), every default: NaN, not a loss
    of 0 over a NaN gradient."""
    X = np.array([[1], [1], [np.nan]], np.float32)
    tops, grad = run_batch(make_net, X, np.array([0, 0, 1], np.float32), ref.Params())
    assert np.isnan(tops[0]) and np.isnan(grad).any()


def test_recall_counts_queries_whose_positives_are_minus_inf(make_net):
    X, labels, expected = MINUS_INF_POSITIVES
    tops, _ = run_batch(make_net, X, labels, ref.Params())
    assert tuple(tops[1:4]) == pytest.approx(expected, rel=1e-6)


def test_recall_counts_queries_whose_positives_are_nan(make_net):
    X, labels, expected = nan_positives_batch()
    tops, _ = run_batch(make_net, X, labels, ref.Params())
    assert all(any(r == pytest.approx(a, rel=1e-6) for a in allowed)
               for r, allowed in zip(tops[1:4], expected)), tops
