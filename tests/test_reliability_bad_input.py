"""Bad input, and the message each one gets: a label blob whose first axis is not N, an
empty features blob (N = 0, D = 0, no axes: Caffe's Input layer makes all three), a wrong
number of bottoms, enum values given as out-of-range numbers in a prototxt, and (Python
fallback) a param_str that is not protobuf text format at all.

The C++ layers fail with a CHECK, which aborts the process: those run in a subprocess
(`caffe time`, or a pycaffe script) and the test reads the message from its log. The
label and shape checks of the layers themselves (set-up, tops, non-finite parameters,
gradient to labels) are in the gtests and tests/test_python_fallback_layer.py.
"""
import os
import re
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import npair_reference as ref

caffe = pytest.importorskip('caffe', reason='pycaffe not importable: source build/env.sh')

CAFFE = shutil.which('caffe')
needs_caffe_tool = pytest.mark.skipif(
    CAFFE is None, reason='`caffe` is not on PATH (build the fork, then source build/env.sh)')
CPP = 'NPairMultiClassLoss Layer'
PY = 'NPairMultiClassLoss (Python)'


def input_layer(*shapes):
    tops = ' '.join(f'top: "{name}"' for name in ('feat', 'label')[:len(shapes)])
    dims = ' '.join('shape { ' + ' '.join(f'dim: {d}' for d in s) + ' }' for s in shapes)
    return f'layer {{ name: "data" type: "Input" {tops} input_param {{ {dims} }} }}\n'


def npair_layer(bottoms=('feat', 'label'), body=''):
    bottom = ' '.join(f'bottom: "{b}"' for b in bottoms)
    return (f'layer {{ name: "npair" type: "NPairMultiClassLoss" {bottom} top: "loss"\n'
            f'  {body} }}\n')


def env():
    return dict(os.environ, GLOG_logtostderr='1', GLOG_minloglevel='0',
                OPENBLAS_NUM_THREADS='1')


def caffe_fails(tmp_path, text):
    """`caffe time` on the net text (set-up, forward, backward): it must fail; its log."""
    path = tmp_path / 'net.prototxt'
    path.write_text(text)
    p = subprocess.run([CAFFE, 'time', '-model', str(path), '-iterations', '1'], env=env(),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    assert p.returncode != 0, p.stdout[-2000:]
    return p.stdout


def pycaffe_fails(tmp_path, script):
    """A pycaffe script that must die (a CHECK in a layer); its log."""
    path = tmp_path / 'script.py'
    path.write_text(textwrap.dedent(script))
    p = subprocess.run([sys.executable, str(path)], env=env(), cwd=tmp_path,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    assert p.returncode != 0 and 'REACHED THE END' not in p.stdout, p.stdout[-2000:]
    return p.stdout


# --- the C++ layers -------------------------------------------------------------------

@needs_caffe_tool
@pytest.mark.parametrize('label_shape', [(5,), (3,), (2, 2), (4, 2)])
def test_label_first_axis_not_n(label_shape, tmp_path):
    out = caffe_fails(tmp_path, input_layer((4, 3), label_shape) + npair_layer())
    shape = ' '.join(map(str, label_shape))
    assert (f'{CPP}: bottom[1] must hold exactly one label per sample, with the batch '
            f'size N = 4 as its first axis; got shape {shape}') in out, out[-2000:]


@needs_caffe_tool
@pytest.mark.parametrize('features, labels, shape', [
    ((0, 3), (0,), '0 3 (0)'),      # N = 0
    ((4, 0), (4,), '4 0 (0)'),      # D = 0
    ((), (1,), '(1)'),              # no axes at all
], ids=['N=0', 'D=0', '0-D'])
def test_empty_features(features, labels, shape, tmp_path):
    out = caffe_fails(tmp_path, input_layer(features, labels) + npair_layer())
    assert (f'{CPP}: bottom[0] (the features) must hold N >= 1 samples of at least one '
            f'value each; got shape {shape}') in out, out[-2000:]


@needs_caffe_tool
@pytest.mark.parametrize('features', [(0, 3), (3, 0)], ids=['N=0', 'D=0'])
def test_empty_input_to_l2_normalize(features, tmp_path):
    text = input_layer(features) + 'layer { name: "n" type: "L2Normalize" bottom: "feat" top: "y" }'
    out = caffe_fails(tmp_path, text)
    assert 'L2Normalize Layer: bottom[0] must hold N >= 1 samples' in out, out[-2000:]


@needs_caffe_tool
@pytest.mark.parametrize('bottoms, message', [
    (('feat',), ' takes at least 2 bottom blob(s) as input.'),
    (('feat', 'label', 'feat'), ': references come as two bottoms, bottom[2] the features and '
                                'bottom[3] the labels; got only bottom[2]'),
    (('feat', 'label', 'feat', 'label', 'feat'), ' takes at most 4 bottom blob(s) as input.'),
], ids=['1', '3', '5'])
def test_wrong_number_of_bottoms(bottoms, message, tmp_path):
    out = caffe_fails(tmp_path, input_layer((4, 3), (4,)) + npair_layer(bottoms))
    assert CPP + message in out, out[-2000:]


@needs_caffe_tool
def test_l2_normalize_takes_one_bottom(tmp_path):
    text = input_layer((4, 3), (4,)) + \
        'layer { name: "n" type: "L2Normalize" bottom: "feat" bottom: "label" top: "y" }'
    assert 'L2Normalize Layer takes 1 bottom blob(s) as input.' in caffe_fails(tmp_path, text)


@needs_caffe_tool
@pytest.mark.parametrize('field, number', [
    ('an_mining_method', 7), ('ap_mining_method', -1), ('ap_mining_region', 2),
    ('an_mining_region', 99)])
def test_enum_as_out_of_range_number(field, number, tmp_path):
    """protobuf's text parser refuses the file, naming the field, its line and column,
    and Caffe says which file: nothing of the layer runs."""
    text = input_layer((4, 3), (4,)) + npair_layer(body=f'npair_loss_param {{ {field}: {number} }}')
    out = caffe_fails(tmp_path, text)
    assert f'Unknown enumeration value of "{number}" for field "{field}"' in out, out[-2000:]
    assert 'Error parsing text-format caffe.NetParameter: 3:' in out
    assert 'Failed to parse NetParameter file' in out and 'net.prototxt' in out


def test_enum_as_in_range_number_is_the_named_value(cpp_layer, tmp_path):
    """Numbers inside the enum's range are accepted, and mean the value of that number."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(8, 3)).astype(np.float32)
    labels = np.repeat(np.arange(4), 2).astype(np.float32)
    outputs = []
    for body in ('ap_mining_region: GLOBAL ap_mining_method: RELATIVE_HARD '
                 'an_mining_region: LOCAL an_mining_method: HARD',
                 'ap_mining_region: 0 ap_mining_method: 3 an_mining_region: 1 '
                 'an_mining_method: 0'):
        path = tmp_path / 'net.prototxt'
        path.write_text('force_backward: true\n' + input_layer((8, 3), (8,)) + npair_layer(
            body=f'npair_loss_param {{ margin_diff: -0.05 {body} }}').replace(
            'top: "loss"', 'top: "loss" top: "r1" top: "asum"'))
        net = cpp_layer.Net(str(path), cpp_layer.TRAIN)
        net.blobs['feat'].data[...] = X
        net.blobs['label'].data[...] = labels
        net.forward()
        net.backward()
        outputs.append([net.blobs[t].data.copy() for t in ('loss', 'r1', 'asum')] +
                       [net.blobs['feat'].diff.copy()])
    for a, b in zip(*outputs):
        np.testing.assert_array_equal(a, b)


PYCAFFE_NET = '''
import caffe
caffe.set_mode_cpu()
open('net.prototxt', 'w').write({text!r})
net = caffe.Net('net.prototxt', caffe.TRAIN)
net.forward()
'''


@pytest.mark.parametrize('new_shape, message', [
    ((6, 3), f'{CPP}: bottom[1] must hold exactly one label per sample, with the batch size '
             'N = 6 as its first axis; got shape 4 (4)'),
    ((0, 3), f'{CPP}: bottom[0] (the features) must hold N >= 1 samples'),
], ids=['labels-left-behind', 'N=0'])
def test_pycaffe_reshape_to_a_bad_batch(new_shape, message, cpp_layer, tmp_path):
    """Reshaping the features alone, then net.reshape(): the layer's Reshape says what is
    wrong (pycaffe cannot catch a CHECK: the process ends)."""
    script = PYCAFFE_NET.format(text=input_layer((4, 3), (4,)) + npair_layer()) + f'''
net.blobs['feat'].reshape(*{new_shape!r})
net.reshape()
print('REACHED THE END')
'''
    out = pycaffe_fails(tmp_path, script)
    assert message in out, out[-2000:]


# --- the Python fallback --------------------------------------------------------------

def python_layer_net(tmp_path, features=(6, 2), labels=(6,), param_str=''):
    path = tmp_path / 'net.prototxt'
    path.write_text(input_layer(features, labels) + f'''
layer {{ name: "npair" type: "Python" bottom: "feat" bottom: "label" top: "loss" loss_weight: 1
  python_param {{ module: "npair_loss" layer: "NPairMultiClassLossLayer"
                 param_str: "{param_str}" }} }}''')
    return path


@pytest.mark.parametrize('param_str', [
    '{\\"margin_diff\\": -0.05, \\"an_mining_method\\": \\"HARD\\"}',     # JSON
    "{'margin_diff': -0.05}",                                            # a Python dict
    'margin_diff=-0.05 an_mining_method=HARD',                           # key=value
    '<npair margin_diff=\\"-0.05\\"/>',                                  # XML
    'hard negatives please',                                             # words
    '\\001\\002\\003',                                                   # control bytes
    '[1, 2]',
], ids=['json', 'dict', 'key=value', 'xml', 'words', 'control', 'list'])
def test_param_str_not_text_format(param_str, caffe, tmp_path):
    with pytest.raises(ValueError) as e:
        caffe.Net(str(python_layer_net(tmp_path, param_str=param_str)), caffe.TRAIN)
    message = str(e.value)
    assert message.startswith(f'{PY}: bad param_str'), message
    assert 'protobuf text format' in message and 'e.g. "margin_diff: -0.05' in message


@pytest.mark.parametrize('field, number', [
    ('an_mining_method', 7), ('ap_mining_method', -1), ('ap_mining_region', 2)])
def test_param_str_enum_as_out_of_range_number(field, number, caffe, tmp_path):
    with pytest.raises(ValueError) as e:
        caffe.Net(str(python_layer_net(tmp_path, param_str=f'{field}: {number}')), caffe.TRAIN)
    assert str(e.value).startswith(f'{PY}: bad param_str (field {field})'), str(e.value)
    assert f'has no value with number {number}' in str(e.value)


def test_param_str_enum_as_in_range_number(caffe, tmp_path):
    net = caffe.Net(str(python_layer_net(
        tmp_path, param_str='ap_mining_region: 0 ap_mining_method: 3 an_mining_method: 0')),
        caffe.TRAIN)
    assert net.layers[1].params == net.layers[1].params._replace(
        ap_mining_region='GLOBAL', ap_mining_method='RELATIVE_HARD', an_mining_method='HARD')


@pytest.mark.parametrize('features, labels, shape', [
    ((0, 3), (0,), '(0, 3)'), ((4, 0), (4,), '(4, 0)')], ids=['N=0', 'D=0'])
def test_fallback_empty_features(features, labels, shape, caffe, tmp_path):
    message = f'{PY}: features must hold N >= 1 samples of at least one value each, got shape'
    with pytest.raises(ValueError, match=re.escape(f'{message} {shape}')):
        caffe.Net(str(python_layer_net(tmp_path, features, labels)), caffe.TRAIN)


def test_fallback_reshape_with_labels_left_behind(caffe, tmp_path):
    net = caffe.Net(str(python_layer_net(tmp_path)), caffe.TRAIN)
    net.blobs['feat'].reshape(9, 2)
    with pytest.raises(ValueError, match=r'needs one label per sample: 9 samples, labels of '
                                         r'shape \(6,\)'):
        net.reshape()
    # Fixing the labels makes the net usable again.
    net.blobs['label'].reshape(9)
    net.reshape()
    net.blobs['feat'].data[...] = np.random.default_rng(1).normal(size=(9, 2))
    net.blobs['label'].data[...] = [0, 0, 1, 1, 2, 2, 3, 3, 3]
    net.forward()
    result = ref.evaluate(net.blobs['feat'].data, net.blobs['label'].data, ref.Params())
    assert float(net.blobs['loss'].data) == pytest.approx(result.loss, rel=1e-4)
