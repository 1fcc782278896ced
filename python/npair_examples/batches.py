"""Write data in P x K batch order for Caffe's standard data layers.

The multi-class N-pair loss (Sohn, NIPS 2016) wants batches of N classes with
2 examples each: every example then has exactly one positive in the batch and
2(N - 1) negatives. More generally a batch can hold P classes x K examples.

On this fork the NPairImageData layer builds such batches itself from an image
list. This tool is for HDF5 data and for a stock Caffe without that layer:
Caffe's ImageData and HDF5Data layers read their source in order when
`shuffle: false`, so the batch structure can be laid down in the file itself.
It reorders an image list (or an HDF5 file) into consecutive batches of
`classes_per_batch * per_class` rows, every batch `classes_per_batch` different
classes, each `per_class` times, side by side.

Each epoch is drawn by NPairImageData's policy (its header,
include/caffe/layers/npair_image_data_layer.hpp, states it in full):
  1. every class's examples are shuffled and cut into K-tuples; a class's
     n mod K examples left over sit the epoch out, and a class with fewer than
     K examples is left out (the tool says how many);
  2. batches are filled one at a time from the P classes with the most tuples
     left (ties broken at random), until fewer than P classes have one left;
  3. the batches, and the classes within each, are put in random order.
Every example is used at most once per epoch, and the epoch is as long as any
grouping into batches of P distinct classes can be: with C classes of t tuples,
floor(C t / P) batches. The batches are not those the layer draws (another
random stream), but they follow the same rules.

Why several epochs in one file: with `shuffle: false` Caffe replays the file
from the top when it reaches the end, so a file holding one epoch would show
the net the same pairs and the same class groupings every epoch. Turning
`shuffle: true` on instead would scatter the rows and destroy the batches.
So the tool writes E epochs one after another, each drawn afresh, and the
solver's max_iter should stay within the E x (batches per epoch) batches
written. Each epoch is a whole number of batches, so batches never straddle an
epoch or the wrap-around.

The image list is read by Caffe's rules (npair_examples.image_list).
"""

import argparse
import os
import sys

import numpy as np

from npair_examples.image_list import labels_of, read_list
from npair_loss.cli import ArgumentParser, UsageError, run

PROG = "python -m npair_examples.batches"


def npair_epoch(labels, classes_per_batch, per_class=2, rng=None):
    """One epoch of P x K batches by NPairImageData's policy, as a list of index
    arrays (module docstring).

    labels: 1-D array of class labels (compared exactly). Each returned batch holds
    `classes_per_batch` distinct classes, each `per_class` times, side by side.
    """
    rng = np.random.default_rng(rng)
    labels = np.asarray(labels)
    if classes_per_batch < 1 or per_class < 1:
        raise ValueError("classes_per_batch and per_class must be >= 1")
    # 1. Each class's examples in a fresh order, one row per K-tuple.
    tuples = []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        count = len(members) // per_class
        if count:
            tuples.append(members[:count * per_class].reshape(count, per_class))
    left = np.array([len(t) for t in tuples], dtype=np.int64)
    # 2. Batches of the fullest classes; a random key orders equally full ones.
    plan = []
    while np.count_nonzero(left) >= classes_per_batch:
        fullest = np.lexsort((rng.random(len(left)), -left))[:classes_per_batch]
        left[fullest] -= 1
        plan.append(fullest)
    # 3. The batches in random order, each class giving its tuples in turn.
    given = np.zeros(len(tuples), dtype=np.int64)
    batches = []
    for b in rng.permutation(len(plan)):
        classes = rng.permutation(plan[b])
        batches.append(np.concatenate([tuples[c][given[c]] for c in classes]))
        given[classes] += 1
    return batches


def npair_order(labels, classes_per_batch, per_class=2, epochs=1, seed=0):
    """Row order for `epochs` epochs of P x K batches, each drawn afresh.

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


def check_classes(labels, classes_per_batch, per_class, source):
    """The number of usable classes (at least per_class examples); says how many are
    left out, and raises UsageError when fewer than classes_per_batch remain."""
    _, sizes = np.unique(labels, return_counts=True)
    small = sizes < per_class
    if small.any():
        print("%s: %d of %d classes have fewer than --per-class %d examples and are "
              "left out; examples left out: %d"
              % (source, small.sum(), len(sizes), per_class, sizes[small].sum()))
    usable = int((~small).sum())
    if usable < classes_per_batch:
        raise UsageError("%s: %d classes have at least --per-class %d examples, but a "
                         "batch needs --classes-per-batch %d distinct classes"
                         % (source, usable, per_class, classes_per_batch))
    return usable


def write_image_list(path, paths, labels, order):
    """The list's lines in `order` (paths written back byte for byte)."""
    with open(path, "w", encoding="utf-8", errors="surrogateescape") as f:
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
    p = ArgumentParser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
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
                   help="epochs written one after another, each drawn afresh (default: 10)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    return p


def read_hdf5(path):
    """(data, labels) of an HDF5 file with datasets `data` (N x ...) and `label` (N)."""
    import h5py
    if not os.path.exists(path):  # h5py's own message names no file
        raise FileNotFoundError(2, "No such file or directory", path)
    try:
        with h5py.File(path, "r") as h:
            if "data" not in h or "label" not in h:
                raise UsageError("%s: needs the datasets 'data' and 'label' (has: %s)"
                                 % (path, ", ".join(h.keys()) or "none"))
            data, labels = h["data"][...], h["label"][...].reshape(-1)
    except OSError as e:
        raise UsageError("%s: not an HDF5 file (%s)" % (path, e)) from None
    if len(data) != len(labels):
        raise UsageError("%s: %d rows of data but %d labels" % (path, len(data), len(labels)))
    return data, labels


def main(argv=None):
    args = _parser().parse_args(argv)
    for name in ("classes_per_batch", "per_class", "epochs"):
        if getattr(args, name) < 1:
            raise UsageError("--%s must be at least 1, got %d"
                             % (name.replace("_", "-"), getattr(args, name)))
    is_h5 = args.input.lower().endswith((".h5", ".hdf5"))
    if is_h5:
        data, labels = read_hdf5(args.input)
        print("read %d rows from %s" % (len(labels), args.input), flush=True)
    else:
        images = read_list(args.input)
        paths, labels = [image.path for image in images], labels_of(images)
        print("read %d images from %s" % (len(paths), args.input), flush=True)
    n_classes = check_classes(labels, args.classes_per_batch, args.per_class, args.input)
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
    # Every epoch is equally long: the policy's length depends on the class sizes only.
    print("%d classes; %d epochs x %d batches of %d (%d classes x %d); %d rows "
          "(%.0f%% of the data per epoch)"
          % (n_classes, args.epochs, counts[0], batch, args.classes_per_batch,
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
    sys.exit(run(main, PROG))
