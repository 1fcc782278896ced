"""The example models: the digits nets train for a few iterations and load in pycaffe.
(GoogLeNet's N-pair definition is checked in tests/test_usage_block.py.)"""
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.join(ROOT, "python"))
DIGITS = os.path.join(ROOT, "models", "digits")
CAFFE = shutil.which("caffe")
needs_caffe = pytest.mark.skipif(CAFFE is None, reason="`caffe` is not on PATH "
                                 "(build the fork, then `source build/env.sh`)")


def run_caffe(args, cwd, timeout=300):
    env = dict(os.environ, GLOG_logtostderr="1", GLOG_minloglevel="0")
    p = subprocess.run([CAFFE] + args, cwd=cwd, env=env, timeout=timeout,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert p.returncode == 0, p.stdout[-3000:]
    return p.stdout


@needs_caffe
def test_digits_nets_train_a_few_iterations(tmp_path):
    pytest.importorskip("sklearn")
    pytest.importorskip("h5py")
    from npair_examples import digits
    data = tmp_path / "data"
    assert digits.main(["--out", str(data), "--epochs", "1"]) == 0
    for net, solver in (("train_val", "solver"), ("softmax_train_val", "softmax_solver")):
        text = open(os.path.join(DIGITS, net + ".prototxt")).read()
        (tmp_path / (net + ".prototxt")).write_text(
            text.replace("runs/digits/data/", str(data) + "/"))
        s = open(os.path.join(DIGITS, solver + ".prototxt")).read()
        s = re.sub(r'net: ".*"', 'net: "%s"' % (tmp_path / (net + ".prototxt")), s)
        s = re.sub(r"max_iter: \d+", "max_iter: 40", s)
        s = re.sub(r"test_interval: \d+", "test_interval: 20", s)
        s = re.sub(r"display: \d+", "display: 10", s)
        s = re.sub(r'snapshot_prefix: ".*"', 'snapshot_prefix: "%s"' % (tmp_path / net), s)
        (tmp_path / (solver + ".prototxt")).write_text(s)
        out = run_caffe(["train", "--solver=" + str(tmp_path / (solver + ".prototxt"))],
                        cwd=ROOT)
        assert "Optimization Done" in out
        assert (tmp_path / (net + "_iter_40.caffemodel")).exists()
    from npair_examples import caffe_log
    p = caffe_log.parse_log(out.splitlines(True))  # the softmax run's log
    assert "softmax_loss" in p["train"] and "accuracy" in p["test"]


def test_deploy_net_embeds_unit_vectors():
    caffe = pytest.importorskip("caffe")
    from npair_examples import evaluate
    x = np.random.default_rng(0).random((7, 1, 8, 8)).astype(np.float32)
    try:
        emb = evaluate.extract(os.path.join(DIGITS, "deploy.prototxt"), "", x, "embed_norm",
                               batch=4)
    except Exception as e:  # noqa: BLE001
        pytest.fail("deploy net did not run: %s" % e)
    assert emb.shape == (7, 32)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)


@needs_caffe
def test_image_list_batches_feed_imagedata(tmp_path):
    """The batch tool's image-list output is what ImageData reads: a tiny net on
    it trains (paths with spaces included) with the printed batch_size."""
    Image = pytest.importorskip("PIL.Image")
    from npair_examples import batches
    rng = np.random.default_rng(0)
    lines = []
    for c in range(4):
        os.makedirs(tmp_path / ("class %d" % c))
        for i in range(4):
            rel = "class %d/img %d.png" % (c, i)
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(tmp_path / rel)
            lines.append("%s %d" % (rel, c))
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path / "train_npair.txt"
    assert batches.main([str(tmp_path / "train.txt"), "--out", str(out), "-N", "3",
                         "--epochs", "2"]) == 0
    net = tmp_path / "net.prototxt"
    net.write_text('''
layer { name: "data" type: "ImageData" top: "data" top: "label"
  image_data_param { source: "%s" root_folder: "%s/" batch_size: 6 shuffle: false } }
layer { name: "embed" type: "InnerProduct" bottom: "data" top: "embed"
  inner_product_param { num_output: 4 weight_filler { type: "xavier" } } }
layer { name: "norm" type: "L2Normalize" bottom: "embed" top: "norm" }
layer { name: "loss" type: "NPairMultiClassLoss" bottom: "norm" bottom: "label"
  top: "loss" top: "r1" top: "asum" loss_weight: 1 loss_weight: 0 loss_weight: 0 }
''' % (out, tmp_path))
    solver = tmp_path / "solver.prototxt"
    solver.write_text('net: "%s"\nbase_lr: 0.01\nlr_policy: "fixed"\nmax_iter: 6\n'
                      'display: 1\nsnapshot_after_train: false\nsolver_mode: CPU\n' % net)
    log = run_caffe(["train", "--solver=" + str(solver)], cwd=str(tmp_path))
    assert "Optimization Done" in log
    from npair_examples import caffe_log
    p = caffe_log.parse_log(log.splitlines(True))
    assert len(p["train"]["r1"]) >= 6
