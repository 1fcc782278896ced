"""Both N-pair layers with references (bottoms 2 and 3) through pycaffe: tops and both
gradients against the float64 reference and against each other, M = 0 as the two-bottom
layer, npair_loss.gradcheck of the features and the references, and the fallback's
errors for references that do not fit.

An Input blob with no rows (M = 0) has no memory, and pycaffe aborts the process on its
data or diff: Net.backward() reads the diff of every Input top, so nets with M = 0 run
through Net._forward / Net._backward, and no test touches such a blob."""
import numpy as np
import pytest

import npair_reference as ref
from conftest import REFERENCE_LAYOUTS

caffe = pytest.importorskip('caffe', reason='pycaffe not importable: source build/env.sh')

from caffe.proto import caffe_pb2  # noqa: E402
from google.protobuf import text_format  # noqa: E402
from npair_loss import gradcheck, layer as npair_layer  # noqa: E402
from test_fallback_math import ALL_RULES  # noqa: E402

LAYERS = ('NPairMultiClassLoss', 'Python')
TOPS = ['loss', 'r1', 'r5', 'r10', 'asum']


def net_text(N, M, D, params, layer_type, module='npair_loss',
             layer='NPairMultiClassLossLayer', ref_shape=None, ref_label_shape=None,
             bottoms=('feat', 'label', 'ref', 'ref_label')):
    """Input blobs and one N-pair layer with references, C++ or the fallback, 5 tops."""
    ref_dims = ' '.join(f'dim: {d}' for d in (ref_shape or (M, D)))
    ref_label_dims = ' '.join(f'dim: {d}' for d in (ref_label_shape or (M,)))
    if layer_type == 'NPairMultiClassLoss':
        body = f'npair_loss_param {{ {ref.to_text(params)} }}'
    else:
        body = ('loss_weight: 1 loss_weight: 0 loss_weight: 0 loss_weight: 0 loss_weight: 0 '
                f'python_param {{ module: "{module}" layer: "{layer}" '
                f'param_str: "{ref.to_text(params)}" }}')
    return f'''force_backward: true
layer {{ name: "data" type: "Input" top: "feat" top: "label" top: "ref" top: "ref_label"
  input_param {{ shape {{ dim: {N} dim: {D} }} shape {{ dim: {N} }}
                shape {{ {ref_dims} }} shape {{ {ref_label_dims} }} }} }}
layer {{ name: "npair" type: "{layer_type}" {' '.join(f'bottom: "{b}"' for b in bottoms)}
  {' '.join(f'top: "{t}"' for t in TOPS)} {body} }}
'''


@pytest.fixture
def make_net(cpp_layer, tmp_path):
    def make(text, name='net.prototxt'):
        path = tmp_path / name
        path.write_text(text)
        return cpp_layer.Net(str(path), cpp_layer.TRAIN)
    return make


def run(net, case):
    """Forward and backward on the case; the tops, the features' diff and the
    references' diff (None when M = 0, whose blob is never touched)."""
    net.blobs['feat'].data[...] = case.X
    net.blobs['label'].data[...] = case.labels
    M = len(case.R)
    if M:
        net.blobs['ref'].data[...] = case.R
        net.blobs['ref_label'].data[...] = case.ref_labels
        net.blobs['label'].diff[...] = 7
        net.blobs['ref_label'].diff[...] = 7
    net._forward(0, len(net.layers) - 1)
    net._backward(len(net.layers) - 1, 0)
    tops = [float(net.blobs[t].data) for t in TOPS]
    if not M:
        return tops, net.blobs['feat'].diff.copy(), None
    assert (net.blobs['label'].diff == 7).all() and (net.blobs['ref_label'].diff == 7).all()
    return tops, net.blobs['feat'].diff.copy(), net.blobs['ref'].diff.copy()


@pytest.mark.parametrize('layer_type', LAYERS)
@pytest.mark.parametrize('layout', REFERENCE_LAYOUTS)
def test_tops_and_both_gradients_match_reference(layout, layer_type, make_net, npair_cases,
                                                 assert_matches_reference):
    rng = np.random.default_rng(40 + REFERENCE_LAYOUTS.index(layout))
    for ap in ALL_RULES:
        params = npair_cases.params(rng, ap_mining_region=ap[0], ap_mining_method=ap[1])
        case = npair_cases.with_references(rng, params, layout, D=3)
        net = make_net(net_text(case.N, len(case.R), 3, params, layer_type))
        tops, grad, ref_grad = run(net, case)
        assert_matches_reference(case, tops, grad, ref_grad=ref_grad)


@pytest.mark.parametrize('layout', REFERENCE_LAYOUTS)
def test_fallback_and_cpp_layer_agree(layout, cpp_layer, tmp_path_factory, npair_cases):
    rng = np.random.default_rng(60 + REFERENCE_LAYOUTS.index(layout))
    for _ in range(6):
        case = npair_cases.with_references(rng, npair_cases.params(rng), layout, D=4)
        outputs = []
        for layer_type in LAYERS:
            path = tmp_path_factory.mktemp('agree') / 'net.prototxt'
            path.write_text(net_text(case.N, len(case.R), 4, case.params, layer_type))
            outputs.append(run(cpp_layer.Net(str(path), cpp_layer.TRAIN), case))
        (cpp_tops, cpp_grad, cpp_ref), (py_tops, py_grad, py_ref) = outputs
        assert cpp_tops == pytest.approx(py_tops, rel=1e-4, abs=1e-7), case
        largest = max(np.abs(py_grad).max(), 0 if py_ref is None else np.abs(py_ref).max())
        assert np.abs(cpp_grad - py_grad).max() <= 1e-3 * max(largest, 1e-12), case
        if py_ref is not None:
            assert np.abs(cpp_ref - py_ref).max() <= 1e-3 * max(largest, 1e-12), case


@pytest.mark.parametrize('layer_type', LAYERS)
def test_no_references_is_the_two_bottom_layer(layer_type, make_net):
    """M = 0 rows in bottoms 2 and 3: every top and the gradient, to the bit, at every
    mining, NaN labels included."""
    rng = np.random.default_rng(9)
    X = rng.normal(size=(9, 4)).astype(np.float32)
    labels = np.array([0, 1, 0, 2, 1, np.nan, 2, 3, 0], np.float32)
    for ap in ALL_RULES:
        for an in ALL_RULES[::3]:
            params = ref.Params(ap_mining_region=ap[0], ap_mining_method=ap[1],
                                an_mining_region=an[0], an_mining_method=an[1],
                                identsn=-0.4, diffsn=1.0)
            outputs = []
            for bottoms in (('feat', 'label'), ('feat', 'label', 'ref', 'ref_label')):
                net = make_net(net_text(9, 0, 4, params, layer_type, bottoms=bottoms))
                net.blobs['feat'].data[...] = X
                net.blobs['label'].data[...] = labels
                net._forward(0, len(net.layers) - 1)
                net._backward(len(net.layers) - 1, 0)
                outputs.append(np.concatenate([
                    [net.blobs[t].data for t in TOPS], net.blobs['feat'].diff.ravel()]))
            assert outputs[0].tobytes() == outputs[1].tobytes(), params


def gradcheck_case(npair_cases, params):
    """A batch with references (M > N) away from every threshold by more than the
    checker's steps can move a similarity."""
    rng = np.random.default_rng(77)
    return npair_cases.with_references(rng, params, 'M>N', D=3)


GRADCHECK_PARAMS = {
    'rand': ref.Params(),
    'hard': ref.Params(ap_mining_method='HARD', an_mining_method='HARD', margin_diff=-0.05),
    'global-relative': ref.Params(
        ap_mining_method='RELATIVE_HARD', ap_mining_region='GLOBAL', identsn=-0.5,
        an_mining_method='RELATIVE_EASY', an_mining_region='GLOBAL', diffsn=2.0),
    'usage': 'usage',
}


@pytest.mark.parametrize('layer_type', LAYERS)
@pytest.mark.parametrize('name', GRADCHECK_PARAMS)
def test_gradcheck_of_features_and_references(name, layer_type, make_net, npair_cases,
                                              usage_params):
    """npair_loss.gradcheck through pycaffe, the references coming from an Input blob:
    d loss / d features and d loss / d references."""
    params = usage_params if GRADCHECK_PARAMS[name] == 'usage' else GRADCHECK_PARAMS[name]
    case = gradcheck_case(npair_cases, params)
    text = net_text(case.N, len(case.R), 3, params, layer_type)
    net = make_net(text)
    run(net, case)
    layers = gradcheck.npair_layers(net, text_format.Parse(text, caffe_pb2.NetParameter()))
    assert [layer.bottoms for layer in layers] == [['feat', 'label', 'ref', 'ref_label']]
    for blob in ('feat', 'ref'):
        report = gradcheck.check_gradient(net, blob, {'loss': 1.0}, step=1e-3, threshold=1e-3,
                                          selection=gradcheck.npair_selection(layers))
        assert report.ok, report
        assert report.checked + len(report.skipped) == net.blobs[blob].count


class HalfReferenceGradientLayer(npair_layer.NPairMultiClassLossLayer):
    """A wrong gradient into the references, for the checker to catch."""

    def backward(self, top, propagate_down, bottom):
        super().backward(top, propagate_down, bottom)
        bottom[2].diff[...] *= 0.5


def test_gradcheck_catches_a_wrong_reference_gradient(make_net, npair_cases):
    case = gradcheck_case(npair_cases, ref.Params())
    net = make_net(net_text(case.N, len(case.R), 3, case.params, 'Python',
                            module='test_layer_references', layer='HalfReferenceGradientLayer'))
    run(net, case)
    assert gradcheck.check_gradient(net, 'feat', {'loss': 1.0}, step=1e-3, threshold=1e-3).ok
    report = gradcheck.check_gradient(net, 'ref', {'loss': 1.0}, step=1e-3, threshold=1e-3)
    assert not report.ok and report.failures


BAD_NETS = {
    'three bottoms': (dict(bottoms=('feat', 'label', 'ref')),
                      'references come as two bottoms, bottom[2] the features and '
                      'bottom[3] the labels; got only bottom[2]'),
    'reference D': (dict(ref_shape=(5, 2)),
                    "bottom[2] (the references) must hold M >= 0 rows of the features' "
                    'D = 3 values; got shape (5, 2)'),
    'reference D, no rows': (dict(ref_shape=(0, 2), ref_label_shape=(0,)),
                             "bottom[2] (the references) must hold M >= 0 rows of the "
                             "features' D = 3 values; got shape (0, 2)"),
    'reference label count': (dict(ref_label_shape=(4,)),
                              'bottom[3] must hold exactly one label per reference, M = 5; '
                              'got shape (4,)'),
    'reference label shape': (dict(ref_label_shape=(5, 2)),
                              'bottom[3] must hold exactly one label per reference, M = 5; '
                              'got shape (5, 2)'),
}


@pytest.mark.parametrize('name', BAD_NETS)
def test_references_that_do_not_fit_are_an_error_naming_the_layer(name, make_net):
    change, message = BAD_NETS[name]
    with pytest.raises(ValueError) as e:
        make_net(net_text(6, 5, 3, ref.Params(), 'Python', **change))
    assert str(e.value) == f'NPairMultiClassLoss (Python): {message}'
