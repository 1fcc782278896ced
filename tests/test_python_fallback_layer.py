"""The Python fallback layer through pycaffe: its tops and gradient in a net against the
reference, gradient checks with npair_loss.gradcheck, errors at set-up, and the two
pycaffe patches it relies on (iterating bottom/top, caffe.get_mode)."""
import numpy as np
import pytest
from google.protobuf import text_encoding

import npair_reference as ref
from conftest import Cases
from test_fallback_math import one_non_finite_feature

caffe = pytest.importorskip('caffe', reason='pycaffe not importable: source build/env.sh')

from npair_loss import gradcheck, layer as npair_layer  # noqa: E402

TOP_NAMES = ['loss', 'r1', 'r5', 'r10', 'asum']


def top_names(ntop):
    return ['loss'] if ntop == 1 else ['loss'] + TOP_NAMES[1:ntop - 1] + ['asum']


def net_text(N, D, params=ref.Params(), ntop=5, weights=None, param_str=None,
             module='npair_loss', layer='NPairMultiClassLossLayer', label_shape=None):
    weights = [1.0] + [0.0] * (ntop - 1) if weights is None else weights
    param_str = ref.to_text(params) if param_str is None else param_str
    label_dims = ' '.join(f'dim: {d}' for d in (label_shape or (N,)))
    return f'''
force_backward: true
layer {{ name: "data" type: "Input" top: "feat" top: "label"
  input_param {{ shape {{ dim: {N} dim: {D} }} shape {{ {label_dims} }} }} }}
layer {{ name: "npair" type: "Python" bottom: "feat" bottom: "label"
  {' '.join(f'top: "{t}"' for t in top_names(ntop))}
  {' '.join(f'loss_weight: {w}' for w in weights)}
  python_param {{ module: "{module}" layer: "{layer}" param_str: "{param_str}" }} }}
'''


@pytest.fixture
def make_net(caffe, tmp_path):
    def make(text, phase=None):
        path = tmp_path / 'net.prototxt'
        path.write_text(text)
        return caffe.Net(str(path), caffe.TRAIN if phase is None else phase)
    return make


def run(net, case):
    net.blobs['feat'].data[...] = case.X
    net.blobs['label'].data[...] = case.labels.reshape(net.blobs['label'].data.shape)
    net.forward()
    net.backward()


@pytest.mark.parametrize('ntop', [1, 2, 3, 4, 5])
def test_tops_and_gradient_match_reference(ntop, make_net, npair_cases, assert_matches_reference):
    rng = np.random.default_rng(100 + ntop)
    for _ in range(4):
        case = npair_cases.case(rng, npair_cases.params(rng), N=10, D=4)
        net = make_net(net_text(10, 4, case.params, ntop))
        run(net, case)
        tops = [float(net.blobs[t].data) for t in top_names(ntop)]
        assert all(net.blobs[t].data.shape == () for t in top_names(ntop))
        assert_matches_reference(case, tops, net.blobs['feat'].diff)


def test_loss_weight_scales_gradient_and_monitor_weights_do_not(make_net, npair_cases):
    rng = np.random.default_rng(8)
    case = npair_cases.case(rng, ref.Params(an_mining_method='HARD', margin_diff=-0.05), N=8, D=3)
    diffs = []
    for weights in ([1, 0, 0, 0, 0], [1, 1, 1, 1, 1], [2.5, 0, 0, 0, 0]):
        net = make_net(net_text(8, 3, case.params, weights=weights))
        run(net, case)
        diffs.append(net.blobs['feat'].diff.copy())
    np.testing.assert_array_equal(diffs[0], diffs[1])
    np.testing.assert_allclose(diffs[2], 2.5 * diffs[0], rtol=1e-6)
    np.testing.assert_allclose(diffs[0], case.reference().grad, atol=1e-3 * np.abs(diffs[0]).max())


def test_labels_never_get_a_diff(make_net, npair_cases):
    rng = np.random.default_rng(2)
    case = npair_cases.case(rng, ref.Params(), N=6, D=2)
    net = make_net(net_text(6, 2, case.params, label_shape=(6, 1, 1, 1)))
    net.blobs['label'].diff[...] = 7.0
    run(net, case)
    assert (net.blobs['label'].diff == 7.0).all()
    assert np.abs(net.blobs['feat'].diff).max() > 0


def test_usage_block_configuration(make_net, npair_cases, assert_matches_reference,
                                   usage_params, usage_param_str):
    params = usage_params
    param_str = text_encoding.CEscape(usage_param_str, as_utf8=True)
    rng = np.random.default_rng(21)
    case = npair_cases.case(rng, params, N=12, D=8, classes=4)
    net = make_net(net_text(12, 8, params, weights=[1] * 5, param_str=param_str))
    run(net, case)
    assert_matches_reference(case, [float(net.blobs[t].data) for t in TOP_NAMES],
                             net.blobs['feat'].diff)


@pytest.mark.parametrize('params', [
    ref.Params(),
    ref.Params(ap_mining_method='HARD', an_mining_method='HARD', margin_diff=-0.05),
    ref.Params(ap_mining_method='RELATIVE_HARD', ap_mining_region='GLOBAL', identsn=-0.5,
               an_mining_method='RELATIVE_EASY', diffsn=2.0, margin_ident=0.05),
    ref.Params(ap_mining_method='EASY', an_mining_method='EASY', an_mining_region='GLOBAL'),
], ids=['rand', 'hard', 'relative', 'easy-global'])
def test_gradcheck_passes(params, make_net, npair_cases):
    rng = np.random.default_rng(31)
    case = npair_cases.case(rng, params, N=8, D=3, classes=3)
    net = make_net(net_text(8, 3, params))
    run(net, case)
    layers = gradcheck.npair_layers(net)
    assert [layer.name for layer in layers] == ['npair']
    report = gradcheck.check_gradient(net, 'feat', step=1e-3, threshold=1e-3,
                                      selection=gradcheck.npair_selection(layers))
    assert report.ok, report
    assert report.checked + len(report.skipped) == case.X.size


def test_gradcheck_skips_a_step_that_changes_the_selection(make_net):
    # HARD negatives of row 0: kept when S > t-_0 = S_01 = 0.5; S_02 = 0.5 + 1e-4 is kept,
    # and a step of 1e-2 on x_2 or x_0 moves it across.
    X = np.array([[1, 0], [0.5, 0.8], [0.5001, -0.8], [-0.9, 0.1]], np.float32)
    labels = np.array([0, 0, 1, 2], np.float32)
    params = ref.Params(an_mining_method='HARD')
    net = make_net(net_text(4, 2, params))
    net.blobs['feat'].data[...] = X
    net.blobs['label'].data[...] = labels
    layers = gradcheck.npair_layers(net)
    report = gradcheck.check_gradient(net, 'feat', selection=gradcheck.npair_selection(layers))
    assert (2, 0) in report.skipped and report.checked + len(report.skipped) == X.size
    assert report.ok, report
    np.testing.assert_array_equal(net.blobs['feat'].data, X)    # left as it was


class HalfGradientLayer(npair_layer.NPairMultiClassLossLayer):
    """The original multi-GPU code's defect (docs/layer_contract.md §6): half the gradient."""

    def backward(self, top, propagate_down, bottom):
        super().backward(top, propagate_down, bottom)
        bottom[0].diff[...] *= 0.5


def test_gradcheck_catches_a_wrong_gradient(make_net, npair_cases):
    rng = np.random.default_rng(4)
    case = npair_cases.case(rng, ref.Params(), N=6, D=2)
    net = make_net(net_text(6, 2, case.params, module='test_python_fallback_layer',
                            layer='HalfGradientLayer'))
    run(net, case)
    report = gradcheck.check_gradient(net, 'feat', step=1e-3, threshold=1e-3)
    assert not report.ok and report.failures


def test_gradcheck_command_line(tmp_path, capsys, npair_cases):
    rng = np.random.default_rng(6)
    case = npair_cases.case(rng, ref.Params(an_mining_method='HARD', margin_diff=-0.1), N=6, D=2)
    (tmp_path / 'net.prototxt').write_text(net_text(6, 2, case.params, weights=[1] * 5))
    np.savez(tmp_path / 'in.npz', feat=case.X, label=case.labels)
    status = gradcheck.main([str(tmp_path / 'net.prototxt'), '--blob', 'feat',
                             '--inputs', str(tmp_path / 'in.npz'), '--step', '1e-3'])
    out = capsys.readouterr().out
    assert status == 0, out
    assert 'feat: ' in out and ' 0 failed' in out


def test_gradcheck_help(capsys):
    with pytest.raises(SystemExit) as e:
        gradcheck.main(['--help'])
    assert e.value.code == 0 and '--blob' in capsys.readouterr().out


class IteratingLayer(caffe.Layer):
    """Iterates bottom and top, which stock pycaffe cannot (patch 20)."""

    def setup(self, bottom, top):
        self.bottom_shapes = [tuple(b.data.shape) for b in bottom]

    def reshape(self, bottom, top):
        for t, b in zip(top, bottom):
            t.reshape(*b.data.shape)

    def forward(self, bottom, top):
        for t, b in zip(top, bottom):
            t.data[...] = 2 * b.data

    def backward(self, top, propagate_down, bottom):
        for t, b, down in zip(top, bottom, propagate_down):
            if down:
                b.diff[...] = 2 * t.diff


def test_python_layer_can_iterate_bottom_and_top(make_net):
    net = make_net('''
layer { name: "data" type: "Input" top: "a" top: "b"
  input_param { shape { dim: 2 dim: 3 } shape { dim: 4 } } }
layer { name: "it" type: "Python" bottom: "a" bottom: "b" top: "c" top: "d"
  python_param { module: "test_python_fallback_layer" layer: "IteratingLayer" } }
''')
    assert net.layers[1].bottom_shapes == [(2, 3), (4,)]
    net.blobs['a'].data[...] = 1.5
    net.blobs['b'].data[...] = np.arange(4)
    net.forward()
    assert (net.blobs['c'].data == 3).all() and net.blobs['d'].data.tolist() == [0, 2, 4, 6]


def test_mode_is_exposed_and_picks_the_array_module(caffe, monkeypatch):
    caffe.set_mode_cpu()
    assert caffe.get_mode() == 'CPU'
    assert npair_layer.array_module() is np
    fake_cupy = object()
    monkeypatch.setattr(caffe, 'get_mode', lambda: 'GPU')
    monkeypatch.setattr(npair_layer, '_cupy', lambda: fake_cupy)
    assert npair_layer.array_module() is fake_cupy
    monkeypatch.setattr(npair_layer, '_cupy', lambda: None)          # CuPy not installed
    assert npair_layer.array_module() is np
    monkeypatch.setattr(npair_layer, '_cupy', lambda: fake_cupy)
    monkeypatch.delattr(caffe, 'get_mode')                            # stock pycaffe
    assert npair_layer.array_module() is np


BAD_NETS = {
    'label count': (dict(label_shape=(5,)), 'one label per sample'),
    'label shape': (dict(label_shape=(6, 2)), 'one label per sample'),
    'unknown field': (dict(param_str='margin_dif: 0.1'), 'margin_dif'),
    'unknown enum': (dict(param_str='an_mining_method: HARDER'), 'an_mining_method'),
    'inf margin': (dict(param_str='margin_diff: inf'), 'margin_diff must be finite'),
    'nan sn': (dict(param_str='identsn: nan ap_mining_method: HARD'), 'identsn must be finite'),
}


@pytest.mark.parametrize('name', BAD_NETS)
def test_errors_at_setup_name_the_layer(name, make_net):
    change, message = BAD_NETS[name]
    with pytest.raises(ValueError) as e:
        make_net(net_text(6, 2, **change))
    assert 'NPairMultiClassLoss (Python)' in str(e.value) and message in str(e.value)


def test_six_tops_is_an_error(make_net):
    text = net_text(6, 2, weights=[1] + [0] * 5).replace('top: "asum"', 'top: "asum" top: "x"')
    with pytest.raises(ValueError, match=r'NPairMultiClassLoss \(Python\): takes 1 to 5 tops'):
        make_net(text)


def test_one_bottom_is_an_error(make_net):
    text = net_text(6, 2).replace('bottom: "label"', '')
    with pytest.raises(ValueError, match=r'NPairMultiClassLoss \(Python\): takes 2 bottoms'):
        make_net(text)


def test_trains_with_sgd(caffe, tmp_path, npair_cases):
    """A linear embedding learned through the fallback: the loss goes down."""
    (tmp_path / 'net.prototxt').write_text('''
layer { name: "data" type: "Input" top: "x" top: "label"
  input_param { shape { dim: 16 dim: 6 } shape { dim: 16 } } }
layer { name: "embed" type: "InnerProduct" bottom: "x" top: "feat"
  inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "npair" type: "Python" bottom: "feat" bottom: "label" top: "loss" top: "asum"
  loss_weight: 1 loss_weight: 0
  python_param { module: "npair_loss" layer: "NPairMultiClassLossLayer" } }
''')
    (tmp_path / 'solver.prototxt').write_text(
        f'net: "{tmp_path / "net.prototxt"}" base_lr: 0.5 lr_policy: "fixed" momentum: 0.9 '
        'max_iter: 100 display: 0 snapshot_after_train: false random_seed: 1')
    solver = caffe.SGDSolver(str(tmp_path / 'solver.prototxt'))
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 4).astype(np.float32)
    centers = rng.normal(size=(4, 6))
    solver.net.blobs['x'].data[...] = centers[labels.astype(int)] + 0.3 * rng.normal(size=(16, 6))
    solver.net.blobs['label'].data[...] = labels
    solver.net.forward()
    before = float(solver.net.blobs['loss'].data)
    solver.step(40)
    solver.net.forward()
    assert float(solver.net.blobs['loss'].data) < 0.5 * before


@pytest.mark.parametrize('value', [np.nan, np.inf], ids=['nan', 'inf'])
def test_non_finite_features_show_in_the_loss_and_the_gradient(value, make_net):
    X, labels = one_non_finite_feature(value)
    params = ref.Params(ap_mining_method='HARD', an_mining_method='RELATIVE_EASY')
    net = make_net(net_text(len(X), X.shape[1], params))
    with np.errstate(all='ignore'):
        run(net, Cases.of(X, labels, params))
    assert np.isnan(net.blobs['loss'].data) and np.isnan(net.blobs['feat'].diff).any()
