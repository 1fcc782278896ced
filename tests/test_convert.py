"""npair_loss.convert: C++ NPairMultiClassLoss and CrossBatchMemory layers <-> their
Python twins, on the usage block and on whole nets; everything but the converted layers'
type, parameter block and what a Python layer must be given is left as it was. (Its
command-line errors: tests/test_cli.py.)"""
import re

import numpy as np
import pytest
from google.protobuf import text_format

import npair_reference as ref
from npair_loss import convert

NET = '''# A whole net: comments, a name, several layers, two N-pair heads.
name: "whole"
force_backward: true
layer {
  name: "data"   # features and labels
  type: "Input"
  top: "x"
  top: "label"
  input_param { shape { dim: 8 dim: 6 } shape { dim: 8 } }
}
layer {
  name: "embed"
  type: "InnerProduct"
  bottom: "x"
  top: "feat"
  param { lr_mult: 1 }
  inner_product_param { num_output: 4 weight_filler { type: "xavier" } }
}
layer {
  name: "npair_train"
  type: "NPairMultiClassLoss"
  bottom: "feat"
  bottom: "label"
  top: "loss"
  top: "asum"
  npair_loss_param { an_mining_method: HARD margin_diff: -0.1 }
  include { phase: TRAIN }
}
layer { name: "npair_test" type: "NPairMultiClassLoss" bottom: "feat" bottom: "label"
        top: "test_loss" top: "r1" top: "test_asum" loss_weight: 2 loss_weight: 0 loss_weight: 0
        include { phase: TEST } }
layer {
  name: "other_python"
  type: "Python"
  bottom: "feat"
  top: "copy"
  python_param { module: "somewhere" layer: "Else" param_str: "margin_diff: 1" }
}
'''


def layer_blocks(text):
    """{name: text of its layer block} for the top-level layers."""
    fields, _ = convert.parse_fields(convert.tokenize(text))
    blocks = {}
    for f in fields:
        if f.name != 'layer':
            continue
        name = convert.string_value(convert.first(f.children, 'name'))
        blocks[name] = text[f.start:f.end]
    return blocks


def npair_params_of(block):
    """ref.Params of the N-pair layer in text, C++ or fallback."""
    from npair_loss.params import message_class
    msg = message_class()()
    fields, _ = convert.parse_fields(convert.tokenize(block))
    layer = [f for f in fields
             if convert.NPAIR in (convert.cpp_kind(f), convert.fallback_kind(f))][0]
    if convert.cpp_kind(layer) is convert.NPAIR:
        cpp = convert.first(layer.children, 'npair_loss_param')
        text_format.Parse(block[cpp.inner[0]:cpp.inner[1]] if cpp else '', msg)
    else:
        python_param = convert.first(layer.children, 'python_param')
        param_str = convert.first(python_param.children, 'param_str')
        text_format.Parse(convert.string_value(param_str) if param_str else '', msg)
    return ref.params_from_message(msg)


def test_usage_block_to_python_and_back(usage_block):
    py, names = convert.convert(usage_block, 'python')
    assert names == ['loss3/type_mb']
    assert 'type: "Python"' in py and 'module: "npair_loss" layer: "NPairMultiClassLossLayer"' in py
    assert npair_params_of(py) == npair_params_of(usage_block)
    # Outside the type line and the parameter block, not a character changed.
    before = re.sub(r'type: "NPairMultiClassLoss"', '', usage_block)
    before = re.sub(r'npair_loss_param \{.*?\n    \}', '', before, flags=re.S)
    after = re.sub(r'type: "Python"', '', py)
    after = re.sub(r'python_param \{[^\n]*\}', '', after)
    assert after == before
    assert len(re.findall(r'^ *loss_weight: 1', py, re.M)) == 5    # given: kept, none added
    back, names = convert.convert(py, 'cpp')
    assert names == ['loss3/type_mb'] and 'type: "NPairMultiClassLoss"' in back
    assert npair_params_of(back) == npair_params_of(usage_block)
    assert back.replace('    ', '').count('\n') <= usage_block.count('\n')


def test_whole_net_to_python():
    py, names = convert.convert(NET, 'python')
    assert names == ['npair_train', 'npair_test']
    old, new = layer_blocks(NET), layer_blocks(py)
    assert list(new) == list(old)
    for name in ('data', 'embed', 'other_python'):
        assert new[name] == old[name]
    assert py.split('layer {')[0] == NET.split('layer {')[0]       # header and comments
    train = new['npair_train']
    assert 'loss_weight: 1\n  loss_weight: 0\n' in train            # Caffe's defaults, explicit
    assert 'include { phase: TRAIN }' in train and 'bottom: "label"' in train
    assert npair_params_of(train) == npair_params_of(old['npair_train'])
    test = new['npair_test']
    assert test.count('loss_weight') == 3 and 'loss_weight: 2' in test
    assert 'include { phase: TEST }' in test
    back, names = convert.convert(py, 'cpp')
    assert names == ['npair_train', 'npair_test']
    for name, block in layer_blocks(back).items():
        if name.startswith('npair'):
            assert npair_params_of(block) == npair_params_of(old[name])
            assert 'type: "NPairMultiClassLoss"' in block and 'python_param' not in block
        else:
            assert block == old[name]


def test_whole_net_parses_as_caffe_netparameter():
    caffe_pb2 = pytest.importorskip('caffe.proto.caffe_pb2', reason='pycaffe not importable')
    py, _ = convert.convert(NET, 'python')
    original = text_format.Parse(NET, caffe_pb2.NetParameter())
    converted = text_format.Parse(py, caffe_pb2.NetParameter())
    assert original.name == converted.name and original.force_backward == converted.force_backward
    for a, b in zip(original.layer, converted.layer):
        assert (a.name, list(a.bottom), list(a.top), list(a.include)) == \
               (b.name, list(b.bottom), list(b.top), list(b.include))
        if a.type == 'NPairMultiClassLoss':
            assert b.type == 'Python' and list(b.loss_weight) == (
                list(a.loss_weight) or [1.0] + [0.0] * (len(a.top) - 1))
            assert b.python_param.module == 'npair_loss'
        else:
            assert a == b
    back = text_format.Parse(convert.convert(py, 'cpp')[0], caffe_pb2.NetParameter())
    for a, b in zip(original.layer, back.layer):
        assert a.npair_loss_param == b.npair_loss_param and a.type == b.type


def test_nothing_to_convert_leaves_the_text_alone():
    text = NET.replace('NPairMultiClassLoss', 'Softmax')
    text = text.replace('npair_loss_param', 'softmax_param')
    assert convert.convert(text, 'python') == (text, [])
    assert convert.convert(NET, 'cpp') == (NET, [])


def test_layer_without_parameters_gets_defaults():
    text = 'layer { name: "l" type: "NPairMultiClassLoss" bottom: "f" bottom: "y" top: "loss" }\n'
    py, _ = convert.convert(text, 'python')
    assert 'param_str: ""' in py and 'loss_weight: 1' in py
    assert npair_params_of(py) == ref.Params()


def test_bad_parameters_are_an_error_at_their_place():
    text = NET.replace('margin_diff: -0.1', 'margin_dif: -0.1')
    with pytest.raises(convert.PrototxtError, match='margin_dif') as e:
        convert.convert(text, 'python')
    assert text[e.value.offset:].startswith('margin_dif: -0.1')


def test_command_line(tmp_path, capsys):
    (tmp_path / 'net.prototxt').write_text(NET)
    assert convert.main([str(tmp_path / 'net.prototxt'), str(tmp_path / 'py.prototxt')]) == 0
    assert 'npair_train, npair_test' in capsys.readouterr().err
    assert (tmp_path / 'py.prototxt').read_text() == convert.convert(NET, 'python')[0]
    assert convert.main([str(tmp_path / 'py.prototxt'), '-', '--to', 'cpp']) == 0
    assert capsys.readouterr().out == convert.convert(convert.convert(NET)[0], 'cpp')[0]
    with pytest.raises(SystemExit) as e:
        convert.main(['--help'])
    assert e.value.code == 0 and '--to' in capsys.readouterr().out


MEMORY_NET = '''name: "memory"
layer { name: "data" type: "Input" top: "feat" top: "label"
  input_param { shape { dim: 6 dim: 3 } shape { dim: 6 } } }
layer {
  name: "memory"   # the last 9 samples
  type: "CrossBatchMemory"
  bottom: "feat"
  bottom: "label"
  top: "ref"
  top: "ref_label"
  propagate_down: false
  propagate_down: false
  cross_batch_memory_param { size: 9 warmup: 2 }
}
layer { name: "shared" type: "CrossBatchMemory" bottom: "feat" bottom: "label"
  top: "ref2" top: "ref_label2" param { name: "kept" lr_mult: 0 decay_mult: 0 }
  cross_batch_memory_param { size: 5 } }
layer { name: "npair" type: "NPairMultiClassLoss" bottom: "feat" bottom: "label"
  bottom: "ref" bottom: "ref_label" top: "loss" }
'''


def test_memory_layers_to_python_and_back():
    py, names = convert.convert(MEMORY_NET, 'python')
    assert names == ['memory', 'shared', 'npair']
    blocks = layer_blocks(py)
    memory = blocks['memory']
    assert 'type: "Python"' in memory and 'cross_batch_memory_param' not in memory
    assert ('python_param { module: "npair_loss" layer: "CrossBatchMemoryLayer" '
            'param_str: "size: 9 warmup: 2" }') in memory
    assert memory.count('param { lr_mult: 0 decay_mult: 0 }') == 3
    assert '  top: "ref_label"\n  param { lr_mult: 0 decay_mult: 0 }\n' in memory
    shared = blocks['shared']          # its own spec kept, two more added after it
    assert len(re.findall(r'(?<!_)param \{', shared)) == 3
    assert ('param { name: "kept" lr_mult: 0 decay_mult: 0 }\n  param { lr_mult: 0 decay_mult: 0 }'
            '\n  param { lr_mult: 0 decay_mult: 0 }') in shared
    assert 'param_str: "size: 5"' in shared
    assert 'loss_weight' not in memory + shared                    # not a loss
    back, names = convert.convert(py, 'cpp')
    assert names == ['memory', 'shared', 'npair']
    blocks = layer_blocks(back)
    assert 'type: "CrossBatchMemory"' in blocks['memory']
    assert 'cross_batch_memory_param {\n    size: 9\n    warmup: 2\n  }' in blocks['memory']
    assert blocks['memory'].count('param { lr_mult: 0 decay_mult: 0 }') == 3   # stay
    assert convert.convert(back, 'python')[0] == py
    assert layer_blocks(back)['data'] == layer_blocks(MEMORY_NET)['data']


def test_memory_net_parses_as_caffe_netparameter():
    caffe_pb2 = pytest.importorskip('caffe.proto.caffe_pb2', reason='pycaffe not importable')
    original = text_format.Parse(MEMORY_NET, caffe_pb2.NetParameter())
    py = text_format.Parse(convert.convert(MEMORY_NET, 'python')[0], caffe_pb2.NetParameter())
    back = text_format.Parse(convert.convert(convert.convert(MEMORY_NET)[0], 'cpp')[0],
                             caffe_pb2.NetParameter())
    for a, b, c in zip(original.layer, py.layer, back.layer):
        assert (a.name, list(a.bottom), list(a.top), list(a.propagate_down)) == \
               (b.name, list(b.bottom), list(b.top), list(b.propagate_down))
        assert c.type == a.type
        if a.type == 'CrossBatchMemory':
            assert b.python_param.layer == 'CrossBatchMemoryLayer'
            assert [(p.lr_mult, p.decay_mult) for p in b.param] == [(0, 0)] * 3
            assert c.cross_batch_memory_param == a.cross_batch_memory_param
            assert list(c.param) == list(b.param)


def test_bad_memory_parameters_are_an_error_at_their_place():
    text = MEMORY_NET.replace('warmup: 2', 'warm_up: 2')
    with pytest.raises(convert.PrototxtError, match='warm_up') as e:
        convert.convert(text, 'python')
    assert text[e.value.offset:].startswith('warm_up: 2')
    py = convert.convert(MEMORY_NET)[0].replace('size: 9 warmup: 2', 'size: nine')
    with pytest.raises(convert.PrototxtError, match="param_str: Couldn't parse integer: nine"):
        convert.convert(py, 'cpp')


def test_converted_memory_net_runs_as_the_cpp_one(cpp_layer, tmp_path):
    """The net above and its conversion: the same memory tops and loss at every step
    through the warm-up, filling and wrap-around."""
    nets = []
    for name, text in (('cpp', MEMORY_NET), ('py', convert.convert(MEMORY_NET)[0])):
        (tmp_path / f'{name}.prototxt').write_text('force_backward: true\n' + text)
        nets.append(cpp_layer.Net(str(tmp_path / f'{name}.prototxt'), cpp_layer.TRAIN))
    rng = np.random.default_rng(1)
    for step in range(7):
        outputs = []
        X = rng.normal(size=(6, 3))
        for net in nets:
            net.blobs['feat'].data[...] = X
            net.blobs['label'].data[...] = [step, step, 7, 7, 8, 9]
            net._forward(0, len(net.layers) - 1)
            net._backward(len(net.layers) - 1, 0)
            M = net.blobs['ref_label'].count
            outputs.append((M, float(net.blobs['loss'].data), net.blobs['feat'].diff.copy(),
                            net.blobs['ref'].data.copy() if M else None))
        (m0, loss0, grad0, ref0), (m1, loss1, grad1, ref1) = outputs
        assert m0 == m1 == min(9, 6 * max(0, step - 2)), step
        assert loss1 == pytest.approx(loss0, rel=1e-5), step
        np.testing.assert_allclose(grad1, grad0, atol=1e-5 * np.abs(grad0).max())
        if m0:
            assert ref0.tobytes() == ref1.tobytes()
