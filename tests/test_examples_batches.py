"""The N-pair batch tool (python/npair_examples/batches.py, digits.py): its epochs
held to the invariants NPairImageData's gtests hold the layer to, on the same lists."""
import os
import sys
from collections import Counter

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
from npair_examples import batches  # noqa: E402
from npair_examples.image_list import labels_of, read_list  # noqa: E402
from npair_loss.cli import UsageError  # noqa: E402


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
    written = read_list(str(out))
    paths, labels = [i.path for i in written], labels_of(written)
    # the file is the tool's three reshuffled epochs, in sequence
    read = read_list(str(src))
    in_paths, in_labels = [i.path for i in read], labels_of(read)
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
    with pytest.raises(UsageError, match="bad.txt:2: expected 'path label'"):
        batches.main([str(bad), "--out", str(tmp_path / "o.txt"), "-N", "1"])


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


# --- NPairImageData's policy ------------------------------------------------------------
# The lists of the layer's gtests (src/caffe/test/test_npair_image_data_layer.cpp), written
# as they write them, run through the tool's command line, and held to the same
# invariants. The tool draws from another random stream than the layer, so the batches
# differ; the rules do not. (The layer's split over several solvers has no counterpart
# in the tool.)

def class_labels(sizes):
    """The gtests' ClassLabels: class c has label 10 c + 3 and sizes[c] images, the
    classes interleaved in the list."""
    labels = []
    for round_ in range(max(sizes)):
        labels += [10 * c + 3 for c, n in enumerate(sizes) if round_ < n]
    return labels


def longest_epoch(sizes, p, k):
    """The gtests' LongestEpoch: the largest B with sum_c min(t_c, B) >= p B, where t_c
    is class c's number of K-tuples."""
    tuples = [n // k for n in sizes]
    b = 0
    while sum(min(t, b + 1) for t in tuples) >= p * (b + 1):
        b += 1
    return b


def tool_epochs(tmp_path, sizes, p, k, epochs, seed, capsys=None):
    """(labels of the list, epochs x batches x P K image indices) from the tool's file."""
    labels = class_labels(sizes)
    (tmp_path / "list.txt").write_text(
        "".join("images/%05d.png %d\n" % (i, label) for i, label in enumerate(labels)))
    out = tmp_path / ("order_%d.txt" % seed)
    assert batches.main([str(tmp_path / "list.txt"), "--out", str(out), "-N", str(p),
                         "-K", str(k), "-E", str(epochs), "--seed", str(seed)]) == 0
    written = read_list(str(out))
    index = np.array([int(image.path[len("images/"):-len(".png")]) for image in written])
    labels = np.array(labels)
    assert (labels_of(written) == labels[index]).all()
    per_epoch = longest_epoch(sizes, p, k)
    # The epoch as long as the policy says.
    assert len(index) == epochs * per_epoch * p * k
    return labels, index.reshape(epochs, per_epoch, p * k)


GTEST_LISTS = {  # the gtest: (class sizes, P, K, epochs, seed)
    "TestBalancedEpochUsesEveryImage": ([6] * 6, 4, 3, 4, 11),
    "TestBalancedEpochLeavesFewerThanPTuples": ([5] * 5, 3, 2, 3, 5),
    "TestUnbalancedEpochIsAsLongAsPossible": ([17, 2, 3, 5, 1, 4, 2, 7], 3, 2, 4, 9),
    "TestLargeClassSpreadOverTheEpoch": ([12] + [2] * 40, 4, 2, 20, 2),
    "TestEpochsAreRedrawn": ([4] * 6, 3, 2, 2, 1),
    "TestSeedDecidesTheOrder": ([5] * 7, 3, 2, 2, 42),
}


@pytest.mark.parametrize("name", sorted(GTEST_LISTS))
def test_epochs_follow_the_layers_policy(tmp_path, capsys, name):
    sizes, p, k, epochs, seed = GTEST_LISTS[name]
    labels, drawn = tool_epochs(tmp_path, sizes, p, k, epochs, seed)
    small = [n for n in sizes if n < k]
    printed = capsys.readouterr().out
    if small:  # classes with fewer than K images are left out, with one line that says so
        assert ("%d of %d classes have fewer than --per-class %d examples and are left out; "
                "examples left out: %d" % (len(small), len(sizes), k, sum(small))) in printed
    else:
        assert "left out" not in printed
    for epoch in drawn:
        # Each image at most once per epoch.
        assert len(set(epoch.ravel().tolist())) == epoch.size
        for batch in epoch:
            # P distinct classes, K consecutive images of each.
            slots = labels[batch].reshape(p, k)
            assert (slots == slots[:, :1]).all() and len(set(slots[:, 0])) == p
        # Leftovers as documented: a class gives whole K-tuples, at most one a batch, and
        # never its n mod K images beyond its floor(n / K) tuples.
        used = Counter(labels[epoch.ravel()].tolist())
        for c, n in enumerate(sizes):
            assert used[10 * c + 3] % k == 0
            assert used[10 * c + 3] <= min(n // k, len(epoch)) * k


def test_a_large_class_gives_a_tuple_to_every_batch(tmp_path):
    sizes, p, k, epochs, seed = GTEST_LISTS["TestUnbalancedEpochIsAsLongAsPossible"]
    labels, drawn = tool_epochs(tmp_path, sizes, p, k, epochs, seed)
    per_epoch = drawn.shape[1]
    largest = labels[drawn] == 3
    assert largest.sum() == epochs * per_epoch * k      # a tuple in every batch
    # Its other images wait; later epochs choose again which of them are used.
    assert len(set(drawn[largest].tolist())) > per_epoch * k


def test_a_large_class_is_spread_over_the_epoch(tmp_path):
    sizes, p, k, epochs, seed = GTEST_LISTS["TestLargeClassSpreadOverTheEpoch"]
    labels, drawn = tool_epochs(tmp_path, sizes, p, k, epochs, seed)
    assert drawn.shape[1] == 11
    at_position = (labels[drawn] == 3).sum(axis=(0, 2))
    assert (at_position > 0).all(), at_position
    # Fullest first, it is in a batch while it has more tuples than the others (5 of
    # its 6); its last one ties with the 25 classes left for 24 places.
    per_epoch = (labels[drawn] == 3).sum(axis=(1, 2)) // k
    assert set(per_epoch.tolist()) <= {5, 6}, per_epoch


def test_epochs_are_redrawn(tmp_path):
    sizes, p, k, epochs, seed = GTEST_LISTS["TestEpochsAreRedrawn"]
    _, drawn = tool_epochs(tmp_path, sizes, p, k, epochs, seed)
    assert not np.array_equal(drawn[0], drawn[1])
    # Not just the batch order: the pairs and the class groupings change.
    pairs = [{frozenset(t) for t in epoch.reshape(-1, k).tolist()} for epoch in drawn]
    assert pairs[0] != pairs[1]


def test_the_seed_decides_the_order(tmp_path):
    sizes, p, k, epochs, seed = GTEST_LISTS["TestSeedDecidesTheOrder"]
    _, a = tool_epochs(tmp_path, sizes, p, k, epochs, seed)
    _, again = tool_epochs(tmp_path, sizes, p, k, epochs, seed)
    _, other = tool_epochs(tmp_path, sizes, p, k, epochs, seed + 1)
    assert np.array_equal(a, again) and not np.array_equal(a, other)
