"""Write data in N-pair batch order for Caffe's standard data layers.

The multi-class N-pair loss (Sohn, NIPS 2016) wants batches of N classes with
2 examples each: every example then has exactly one positive in the batch and
2(N - 1) negatives. More generally a batch can hold P classes x K examples.

Caffe's ImageData and HDF5Data layers read their source in order when
`shuffle: false`, so the batch structure can be laid down in the file itself:
this tool reorders an image list (or an HDF5 file) into consecutive batches of
`classes_per_batch * per_class` rows. Every batch holds `classes_per_batch`
different classes, each exactly `per_class` times, side by side.

Why several epochs in one file: with `shuffle: false` Caffe replays the file
from the top when it reaches the end, so a file holding one epoch would show
the net the same pairs and the same class groupings every epoch. Turning
`shuffle: true` on instead would scatter the rows and destroy the batches.
So the tool writes E epochs one after another, each a fresh random pairing
and grouping (examples of a class are reshuffled and re-paired, classes are
regrouped), and the solver's max_iter should stay within the
E x (batches per epoch) batches written. Each epoch is a whole number of
batches, so batches never straddle an epoch or the wrap-around.

Within an epoch each example is used at most once; examples left over (a
class's odd one out, or classes still holding groups when fewer than
`classes_per_batch` classes have any left) wait for the next epoch's shuffle.
"""

import argparse
import os
import sys

import numpy as np


def npair_epoch(labels, classes_per_batch, per_class=2, rng=None):
    """One epoch of N-pair (P x K) batches, as a list of index arrays.

    labels: 1-D array of class labels (any hashable values, compared exactly).
    Each returned batch has `classes_per_batch` distinct classes, each exactly
    `per_class` times, grouped side by side (class order random). A class's
    examples are shuffled and cut into groups of `per_class`; batches are drawn
    by picking classes without replacement with probability proportional to
    the groups they have left, which spends nearly every group while keeping
    the class groupings random.
    """
    rng = np.random.default_rng(rng)
    labels = np.asarray(labels)
    if classes_per_batch < 1 or per_class < 1:
        raise ValueError("classes_per_batch and per_class must be >= 1")
    groups = {}
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_groups = len(idx) // per_class
        if n_groups:
            groups[c] = list(idx[:n_groups * per_class].reshape(n_groups, per_class))
    batches = []
    while True:
        classes = [c for c, g in groups.items() if g]
        if len(classes) < classes_per_batch:
            break
        left = np.array([len(groups[c]) for c in classes], dtype=float)
        pick = rng.choice(len(classes), size=classes_per_batch, replace=False,
                          p=left / left.sum())
        batches.append(np.concatenate([groups[classes[i]].pop() for i in pick]))
    return batches


def npair_order(labels, classes_per_batch, per_class=2, epochs=1, seed=0):
    """Row order for `epochs` epochs of N-pair batches, each epoch reshuffled.

    Returns (order, batches_per_epoch): `order` is a list with one 1-D index
    array per epoch, each a whole number of batches of
    classes_per_batch * per_class rows.
    """
    rng = np.random.default_rng(seed)
    order, counts = [], []
    for _ in range(epochs):
        batches = npair_epoch(labels, classes_per_batch, per_class, rng)
        if not batches:
            raise ValueError(
                "no batch can be formed: need at least %d classes with %d examples "
                "each" % (classes_per_batch, per_class))
        order.append(np.concatenate(batches))
        counts.append(len(batches))
    return order, counts


def read_image_list(path):
    """Read Caffe's ImageData list: one `path label` a line (the path may hold
    spaces; the label is the last field, an integer)."""
    paths, labels = [], []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            head, sep, tail = line.rstrip().rpartition(" ")
            try:
                label = int(tail)
            except ValueError:
                label = None
            if not sep or not head or label is None:
                raise ValueError("%s:%d: expected 'path label', got %r" % (path, n, line))
            paths.append(head)
            labels.append(label)
    return paths, np.array(labels)


def write_image_list(path, paths, labels, order):
    with open(path, "w") as f:
        for i in order:
            f.write("%s %d\n" % (paths[i], labels[i]))


def write_hdf5_epochs(out_dir, name, data, labels, order, progress=True):
    """Write one HDF5 file per epoch (datasets `data` and `label`, rows in
    batch order) and the list file that HDF5Data's `source` points at.
    Returns the list file's path."""
    import h5py
    os.makedirs(out_dir, exist_ok=True)
    files = []
    for e, idx in enumerate(order):
        fn = os.path.abspath(os.path.join(out_dir, "%s_epoch%03d.h5" % (name, e)))
        with h5py.File(fn, "w") as h:
            h.create_dataset("data", data=np.asarray(data[idx], dtype=np.float32))
            h.create_dataset("label", data=np.asarray(labels[idx], dtype=np.float32))
        files.append(fn)
        if progress and (e + 1 == len(order) or (e + 1) % 10 == 0):
            print("  %s: wrote epoch %d/%d" % (name, e + 1, len(order)), flush=True)
    list_path = os.path.join(out_dir, name + ".txt")
    with open(list_path, "w") as f:
        f.write("".join(fn + "\n" for fn in files))
    return list_path


IMAGE_DATA_SNIPPET = """\
layer {{
  name: "data"
  type: "ImageData"
  top: "data"
  top: "label"
  image_data_param {{
    source: "{source}"
    batch_size: {batch}   # {n} classes x {k} examples: must match the tool's options
    shuffle: false        # the order IS the batch construction; never shuffle here
    new_height: 256
    new_width: 256
  }}
  transform_param {{ crop_size: 224 mirror: true mean_value: 104 mean_value: 117 mean_value: 123 }}
  include {{ phase: TRAIN }}
}}"""


def _parser():
    p = argparse.ArgumentParser(
        prog="python -m npair_examples.batches",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__,
        epilog="""examples:
  # CUB-200 / Stanford Online Products: a Caffe image list 'relative/path.jpg label'
  python -m npair_examples.batches train.txt --out train_npair.txt \\
      --classes-per-batch 60 --epochs 20
  # then in train_val.prototxt: ImageData with source: "train_npair.txt",
  # batch_size: 120, shuffle: false (the tool prints the layer to paste).

  # an HDF5 file with datasets 'data' (N x ...) and 'label' (N)
  python -m npair_examples.batches train.h5 --out npair_h5/ --classes-per-batch 5
  # then HDF5Data with source: "npair_h5/train.txt", batch_size: 10, shuffle: false.
""")
    p.add_argument("input", help="image list ('path label' lines) or .h5/.hdf5 file "
                                 "with datasets 'data' and 'label'")
    p.add_argument("--out", required=True,
                   help="image list: the reordered list file to write; "
                        "HDF5: the folder for per-epoch files and their list")
    p.add_argument("--classes-per-batch", "-N", type=int, required=True,
                   help="N: distinct classes in a batch")
    p.add_argument("--per-class", "-K", type=int, default=2,
                   help="K: examples of each class in a batch (2 = the paper's N-pair "
                        "batches; more gives P x K batches) (default: 2)")
    p.add_argument("--epochs", "-E", type=int, default=10,
                   help="epochs written one after another, each reshuffled (default: 10)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    return p


def main(argv=None):
    args = _parser().parse_args(argv)
    is_h5 = args.input.lower().endswith((".h5", ".hdf5"))
    if is_h5:
        import h5py
        with h5py.File(args.input, "r") as h:
            data, labels = h["data"][...], h["label"][...].reshape(-1)
        print("read %d rows from %s" % (len(labels), args.input), flush=True)
    else:
        paths, labels = read_image_list(args.input)
        print("read %d images from %s" % (len(paths), args.input), flush=True)
    n_classes = len(np.unique(labels))
    if n_classes < args.classes_per_batch:
        sys.exit("error: %d classes in %s, fewer than --classes-per-batch %d"
                 % (n_classes, args.input, args.classes_per_batch))
    order, counts = npair_order(labels, args.classes_per_batch, args.per_class,
                                args.epochs, args.seed)
    batch = args.classes_per_batch * args.per_class
    used = sum(len(o) for o in order)
    if is_h5:
        name = os.path.splitext(os.path.basename(args.input))[0]
        source = write_hdf5_epochs(args.out, name, data, labels, order)
    else:
        source = args.out
        write_image_list(source, paths, labels, np.concatenate(order))
    print("%d classes; %d epochs x %s batches of %d (%d classes x %d); %d rows "
          "(%.0f%% of the data per epoch on average)"
          % (n_classes, args.epochs, counts[0] if len(set(counts)) == 1 else
             "%d-%d" % (min(counts), max(counts)), batch, args.classes_per_batch,
             args.per_class, used, 100.0 * used / (len(labels) * args.epochs)))
    print("wrote %s" % source)
    print("use it with shuffle: false and batch_size: %d; keep the solver's max_iter "
          "<= %d (the batches written) for every batch to be a fresh pairing"
          % (batch, sum(counts)))
    if not is_h5:
        print("ImageData layer for it (adjust the sizes and mean to your net):")
        print(IMAGE_DATA_SNIPPET.format(source=source, batch=batch,
                                        n=args.classes_per_batch, k=args.per_class))
    return 0


if __name__ == "__main__":
    sys.exit(main())
