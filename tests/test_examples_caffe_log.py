"""The caffe log parser (python/npair_examples/caffe_log.py) and plot_log."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
from npair_examples import caffe_log  # noqa: E402

LOG = """\
I1123 10:00:00.000 123 solver.cpp:60] Solving DigitsNPair
I1123 10:00:00.001 123 solver.cpp:330] Iteration 0, Testing net (#0)
I1123 10:00:00.002 123 solver.cpp:397]     Test net output #0: npair_loss = 0.9 (* 1 = 0.9 loss)
I1123 10:00:00.002 123 solver.cpp:397]     Test net output #1: retrieve_top1 = 0.3
I1123 10:00:00.003 123 solver.cpp:218] Iteration 0 (0 iter/s, 0.01s/50 iters), loss = 0.95
I1123 10:00:00.003 123 solver.cpp:237]     Train net output #0: npair_loss = 0.95 (* 1 = 0.95 loss)
I1123 10:00:00.003 123 solver.cpp:237]     Train net output #1: retrieve_top1 = 0.2
I1123 10:00:00.003 123 solver.cpp:237]     Train net output #2: retrieve_top5 = 0.7
I1123 10:00:00.004 123 sgd_solver.cpp:105] Iteration 0, lr = 0.05
I1123 10:00:01.000 123 solver.cpp:218] Iteration 50, loss = 0.5
I1123 10:00:01.000 123 solver.cpp:237]     Train net output #0: npair_loss = 0.5 (* 1 = 0.5 loss)
I1123 10:00:01.000 123 solver.cpp:237]     Train net output #1: retrieve_top1 = 0.8
I1123 10:00:01.000 123 solver.cpp:237]     Train net output #2: retrieve_top5 = nan
I1123 10:00:02.000 123 solver.cpp:447] Snapshotting to binary proto file runs/x_iter_100.caffemodel
I1123 10:00:02.000 123 solver.cpp:310] Iteration 100, loss = 0.25
I1123 10:00:02.000 123 solver.cpp:330] Iteration 100, Testing net (#0)
I1123 10:00:02.001 123 solver.cpp:397]     Test net output #0: npair_loss = 0.4 (* 1 = 0.4 loss)
I1123 10:00:02.001 123 solver.cpp:397]     Test net output #1: retrieve_top1 = 0.9
I1123 10:00:02.001 123 solver.cpp:315] Optimization Done.
"""


def test_parse_series():
    p = caffe_log.parse_log(LOG.splitlines(True))
    assert p["train"]["npair_loss"] == [(0, 0.95), (50, 0.5)]
    assert p["train"]["retrieve_top1"] == [(0, 0.2), (50, 0.8)]
    assert p["train"]["retrieve_top5"][1][0] == 50
    assert p["train"]["retrieve_top5"][1][1] != p["train"]["retrieve_top5"][1][1]  # nan
    assert p["test"]["npair_loss"] == [(0, 0.9), (100, 0.4)]
    assert p["test"]["retrieve_top1"] == [(0, 0.3), (100, 0.9)]
    assert p["train_order"] == ["npair_loss", "retrieve_top1", "retrieve_top5"]
    assert p["iteration_loss"] == [(0, 0.95), (50, 0.5), (100, 0.25)]


def test_find_series_and_file_input(tmp_path):
    f = tmp_path / "train.log"
    f.write_text(LOG)
    p = caffe_log.parse_log(str(f))
    assert caffe_log.find_series(p, "train", "#0") == "npair_loss"
    assert caffe_log.find_series(p, "train", "loss") == "npair_loss"
    assert caffe_log.find_series(p, "train", "top1") == "retrieve_top1"
    assert caffe_log.find_series(p, "test", "retrieve_top5") is None
    assert caffe_log.find_series(p, "train", "#9") is None


def test_usage_block_names():
    # caffe numbers outputs alphabetically: loss3/feature_asum comes first
    lines = ["I0 solver.cpp:218] Iteration 10 (5 iter/s, 2s/10 iters), loss = 3.1\n",
             "I0 solver.cpp:237]     Train net output #0: loss3/feature_asum = 1.2 "
             "(* 1 = 1.2 loss)\n",
             "I0 solver.cpp:237]     Train net output #1: loss3/type_npair_mc = 0.6 "
             "(* 1 = 0.6 loss)\n",
             "I0 solver.cpp:237]     Train net output #2: loss3/type_npair_mc_retrieve_top1 "
             "= 0.5 (* 1 = 0.5 loss)\n"]
    p = caffe_log.parse_log(lines)
    assert caffe_log.find_series(p, "train", "top1") == "loss3/type_npair_mc_retrieve_top1"
    assert caffe_log.find_series(p, "train", "loss") == "loss3/type_npair_mc"
    assert p["train"]["loss3/type_npair_mc"] == [(10, 0.6)]
    assert p["train_order"][0] == "loss3/feature_asum"


def test_plot_log_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    from npair_examples import plot_log
    f = tmp_path / "train.log"
    f.write_text(LOG)
    out = tmp_path / "training.png"
    assert plot_log.main([str(f), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
