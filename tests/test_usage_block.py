"""docs/usage_block.prototxt, the usage block of the layer's original definition: it is
still that block, README shows it as it is, GoogLeNet's N-pair head is it verbatim, and
that net runs under `caffe time` with no data and no weights."""
import hashlib
import os
import re
import subprocess

import numpy as np
from google.protobuf import text_format

import npair_reference as ref
from conftest import ROOT, USAGE_BLOCK, USAGE_BLOCK_FILE

GOOGLENET = os.path.join(ROOT, 'models', 'googlenet_npair', 'train_val.prototxt')

# SHA-256 of docs/usage_block.prototxt, the block exactly as the original layer's
# documentation gives it, taken when it was copied in: any edit, a trimmed trailing
# space included, fails.
ORIGINAL_SHA256 = 'f5bf832853b4c520732c67a59e13778cbfe0b260d62697f2e5d5358df3801586'


def test_the_file_is_the_original_block_byte_for_byte():
    with open(USAGE_BLOCK_FILE, 'rb') as f:
        assert hashlib.sha256(f.read()).hexdigest() == ORIGINAL_SHA256


def test_the_block_holds_the_original_layers(caffe):
    """What the original block says, read through Caffe's own NetParameter."""
    from caffe.proto import caffe_pb2

    net = text_format.Parse(USAGE_BLOCK, caffe_pb2.NetParameter())
    norm, loss = net.layer
    assert (norm.name, norm.type, list(norm.bottom), list(norm.top)) == (
        'loss3/pool5/7x7_s1/norm', 'L2Normalize', ['pool5/7x7_s1'], ['loss3/pool5/7x7_s1/norm'])
    assert (loss.name, loss.type) == ('loss3/type_mb', 'NPairMultiClassLoss')
    assert list(loss.bottom) == ['loss3/pool5/7x7_s1/norm', 'label_type_mb']
    assert list(loss.top) == ['loss3/type_npair_mc', 'loss3/type_npair_mc_retrieve_top1',
                              'loss3/type_npair_mc_retrieve_top5',
                              'loss3/type_npair_mc_retrieve_top10', 'loss3/feature_asum']
    assert list(loss.loss_weight) == [1.0] * 5
    assert len(loss.include) == 0 and len(loss.exclude) == 0     # commented out
    assert ref.params_from_message(loss.npair_loss_param) == ref.Params(
        margin_ident=0.0, margin_diff=ref.f32(-0.05), identsn=-0.0, diffsn=ref.f32(-0.3),
        ap_mining_region='GLOBAL', ap_mining_method='RELATIVE_HARD',
        an_mining_region='LOCAL', an_mining_method='HARD')
    assert np.signbit(loss.npair_loss_param.identsn)


def test_the_fixtures_read_the_same_parameters(caffe, usage_params, usage_param_str):
    from caffe.proto import caffe_pb2

    net = text_format.Parse(USAGE_BLOCK, caffe_pb2.NetParameter())
    assert usage_params == ref.params_from_message(net.layer[1].npair_loss_param)
    assert np.signbit(usage_params.identsn)
    assert '#对于绝对选择来说该项无效' in usage_param_str and 'an_mining_method: HARD' in usage_param_str


def test_the_comments_are_kept():
    for comment in ('#bottom: "pool5/7x7_s1"', 'diffsn: -0.3 #对于绝对选择来说该项无效',
                    'an_mining_method: HARD # RELATIVE_HARD', '#loss_weight: 1',
                    '#include {', '#    phase: TRAIN', '#}'):
        assert comment in USAGE_BLOCK


def test_readme_shows_the_file():
    with open(os.path.join(ROOT, 'README.md'), encoding='utf-8') as f:
        readme = f.read()
    shown = re.search(r'^## Using the layer\n\n```\n(.*?)```\n', readme, re.S | re.M)
    assert shown is not None, "README's \"Using the layer\" no longer starts with the block"
    assert shown.group(1) == USAGE_BLOCK


def test_googlenet_head_is_the_usage_block_verbatim():
    with open(GOOGLENET, encoding='utf-8') as f:
        assert f.read().endswith(USAGE_BLOCK)


def test_googlenet_npair_caffe_time(caffe_tool):
    env = dict(os.environ, GLOG_logtostderr='1', GLOG_minloglevel='0')
    p = subprocess.run([caffe_tool, 'time', '-model', GOOGLENET, '-iterations', '2'],
                       cwd=ROOT, env=env, timeout=300, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    assert p.returncode == 0, p.stdout[-3000:]
    assert 'Average Forward-Backward' in p.stdout
    assert 'loss3/type_mb' in p.stdout


def test_one_line_param_str_keeps_the_values(usage_param_str):
    from npair_loss.params import one_line_param_str, parse_param_str

    line = one_line_param_str(usage_param_str)
    assert '\n' not in line and '#' not in line
    assert parse_param_str(line) == parse_param_str(usage_param_str)
    assert parse_param_str(line).ap_mining_method == 'RELATIVE_HARD'
