"""The N-pair batch tool (python/npair_examples/batches.py, digits.py)."""
import os
import sys
from collections import Counter

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
from npair_examples import batches  # noqa: E402


def check_epoch(order, labels, n, k):
    """Every batch: n distinct classes, each exactly k times, side by side;
    no example twice in the epoch."""
    assert len(order) % (n * k) == 0
    assert len(set(order.tolist())) == len(order)
    for b in np.asarray(order).reshape(-1, n * k):
        groups = labels[b].reshape(n, k)
        assert (groups == groups[:, :1]).all(), "a class's examples are not side by side"
        assert len(set(groups[:, 0].tolist())) == n, "a class twice in one batch"


@pytest.mark.parametrize("n,k", [(5, 2), (3, 2), (4, 3), (1, 2)])
def test_batches_hold_n_classes_k_each(n, k):
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(7), rng.integers(3, 12, size=7))
    order, counts = batches.npair_order(labels, n, k, epochs=4, seed=3)
    assert len(order) == 4
    for o, c in zip(order, counts):
        check_epoch(o, labels, n, k)
        assert len(o) == c * n * k


def test_nearly_all_pairs_are_used_with_balanced_classes():
    labels = np.repeat(np.arange(5), 20)
    order, counts = batches.npair_order(labels, 5, 2, epochs=3, seed=0)
    assert counts == [10, 10, 10]  # 5 classes x 10 pairs each: every example used
    assert all(sorted(o.tolist()) == list(range(100)) for o in order)


def test_epochs_are_reshuffled_and_seed_is_reproducible():
    labels = np.repeat(np.arange(6), 10)
    order, _ = batches.npair_order(labels, 3, 2, epochs=3, seed=0)
    assert not np.array_equal(order[0], order[1])
    assert not np.array_equal(order[1], order[2])
    # the pairs themselves change, not only the batch order
    pairs = [set(map(tuple, np.sort(o.reshape(-1, 2), axis=1).tolist())) for o in order]
    assert pairs[0] != pairs[1]
    again, _ = batches.npair_order(labels, 3, 2, epochs=3, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(order, again))
    other, _ = batches.npair_order(labels, 3, 2, epochs=3, seed=1)
    assert not np.array_equal(order[0], other[0])


def test_too_few_classes_is_an_error():
    with pytest.raises(ValueError, match="no batch"):
        batches.npair_order(np.array([0, 0, 1, 1]), 3, 2)


def test_image_list_mode(tmp_path, capsys):
    src = tmp_path / "train.txt"
    lines = ["images/class %d/img_%02d.jpg %d" % (c, i, c)
             for c in range(4) for i in range(5 + c)]
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "train_npair.txt"
    assert batches.main([str(src), "--out", str(out), "-N", "3", "--epochs", "3"]) == 0
    printed = capsys.readouterr().out
    assert "batch_size: 6" in printed and "shuffle: false" in printed
    got = out.read_text().splitlines()
    assert set(got) <= set(lines)                       # paths with spaces kept whole
    paths, labels = batches.read_image_list(str(out))
    # the file is the tool's three reshuffled epochs, in sequence
    in_paths, in_labels = batches.read_image_list(str(src))
    order, _ = batches.npair_order(in_labels, 3, 2, epochs=3, seed=0)
    assert paths == [in_paths[i] for i in np.concatenate(order)]
    for o in order:
        check_epoch(o, in_labels, 3, 2)
    for b in np.arange(len(paths)).reshape(-1, 6):
        g = labels[b].reshape(3, 2)
        assert (g[:, 0] == g[:, 1]).all() and len(set(g[:, 0])) == 3


def test_image_list_rejects_bad_lines(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("a.jpg 1\nno_label_here\n")
    with pytest.raises(ValueError, match="bad.txt:2"):
        batches.read_image_list(str(bad))


def test_hdf5_mode(tmp_path):
    h5py = pytest.importorskip("h5py")
    labels = np.repeat(np.arange(4), 6).astype(np.float32)
    data = np.arange(len(labels), dtype=np.float32).reshape(-1, 1, 1, 1) * np.ones((1, 1, 2, 2))
    with h5py.File(tmp_path / "in.h5", "w") as h:
        h["data"], h["label"] = data, labels
    assert batches.main([str(tmp_path / "in.h5"), "--out", str(tmp_path / "o"),
                         "-N", "2", "--epochs", "2"]) == 0
    files = (tmp_path / "o" / "in.txt").read_text().split()
    assert len(files) == 2
    for fn in files:
        with h5py.File(fn, "r") as h:
            d, lab = h["data"][...], h["label"][...]
        idx = d[:, 0, 0, 0].astype(int)                 # the row's original index
        np.testing.assert_array_equal(lab, labels[idx])
        check_epoch(idx, labels, 2, 2)


def test_digits_tool_writes_npair_batches(tmp_path):
    h5py = pytest.importorskip("h5py")
    pytest.importorskip("sklearn")
    from npair_examples import digits
    out = tmp_path / "data"
    assert digits.main(["--out", str(out), "--epochs", "2"]) == 0
    files = (out / "train_npair.txt").read_text().split()
    assert len(files) == 2
    for fn in files:
        with h5py.File(fn, "r") as h:
            assert h["data"].shape[1:] == (1, 8, 8)
            lab = h["label"][...]
        assert len(lab) % 10 == 0
        assert set(np.unique(lab)) == {0, 1, 2, 3, 4}
        for b in lab.reshape(-1, 5, 2):
            assert (b[:, 0] == b[:, 1]).all() and len(set(b[:, 0])) == 5
    ev = np.load(out / "eval.npz")
    assert set(np.unique(ev["y_unseen"])) == {5, 6, 7, 8, 9}
    assert set(np.unique(ev["y_seen"])) == {0, 1, 2, 3, 4}
    assert Counter(ev["y_seen"].tolist())[0] >= 30
    assert digits.parse_classes("0-2,7") == [0, 1, 2, 7]
