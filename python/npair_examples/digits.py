"""Prepare scikit-learn's digits (8x8 images, 10 classes, shipped inside the
package: no download) for metric learning with `caffe train`.

The metric-learning protocol: the net trains on some classes (default digits
0-4) and is judged on classes it never saw (default 5-9, "unseen"), by
retrieval and clustering of their embeddings. A stratified fraction of the
training classes' samples is held out too ("seen": new samples, known classes).

Writes into --out:
  train_npair.txt + train_npair_epochXXX.h5   HDF5Data source for TRAIN: the
      training samples in N-pair batches (N classes x 2 by default), one file
      per epoch, each epoch a fresh shuffle (see `python -m npair_examples.batches
      --help` for why). Labels are 0..C-1 (the index among the training classes)
      so that the softmax baseline can train on the very same files.
  unseen_npair.txt + unseen_npair_epoch000.h5  HDF5Data source for TEST: the
      unseen classes in N-pair batches, for the in-training monitor of the
      loss and in-batch R@K on classes the net never trains on.
  seen.txt + seen_epoch000.h5   HDF5Data source for the softmax baseline's TEST
      net: the seen split, labels 0..C-1.
  eval.npz    the held-out sets for evaluate.py: x_unseen, y_unseen, x_seen,
      y_seen (images N x 1 x 8 x 8 in [0, 1]; labels are the digits).
  meta.json   the split and the batch geometry.
"""

import argparse
import json
import os
import sys

import numpy as np

from npair_examples.batches import check_classes, npair_order, write_hdf5_epochs
from npair_loss.cli import ArgumentParser, UsageError, run

PROG = "python -m npair_examples.digits"


def parse_classes(text):
    """'0-4' or '0,1,2,3,4' or '0-2,7' -> sorted list of ints; UsageError otherwise."""
    out = set()
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                a, b = part.split("-")
                out.update(range(int(a), int(b) + 1))
            elif part:
                out.add(int(part))
    except ValueError:
        raise UsageError("--train-classes wants digits and ranges such as 0-2,7, got %r"
                         % text) from None
    return sorted(out)


def split_digits(train_classes, seen_holdout=0.2, seed=0):
    """(x_train, y_train, x_seen, y_seen, x_unseen, y_unseen); x as N x 1 x 8 x 8
    float32 in [0, 1], y the digit."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None, :, :]
    y = d.target.astype(np.int64)
    is_train = np.isin(y, train_classes)
    x_tr, x_seen, y_tr, y_seen = train_test_split(
        x[is_train], y[is_train], test_size=seen_holdout, stratify=y[is_train],
        random_state=seed)
    return x_tr, y_tr, x_seen, y_seen, x[~is_train], y[~is_train]


def _parser():
    p = ArgumentParser(
        prog=PROG,
        formatter_class=argparse.RawDescriptionHelpFormatter, description=__doc__,
        epilog="example:\n  python -m npair_examples.digits --out runs/digits/data\n"
               "  caffe train --solver=models/digits/solver.prototxt")
    p.add_argument("--out", default="runs/digits/data", help="output folder "
                   "(default: runs/digits/data, which models/digits/*.prototxt read)")
    p.add_argument("--train-classes", default="0-4",
                   help="digits to train on, e.g. 0-4 or 0-5 or 0,2,4,6,8; the rest "
                        "are the unseen split (default: 0-4)")
    p.add_argument("--seen-holdout", type=float, default=0.2,
                   help="fraction of the training classes' samples held out as the "
                        "seen split (default: 0.2)")
    p.add_argument("--classes-per-batch", "-N", type=int, default=0,
                   help="N classes per batch (default: every training class)")
    p.add_argument("--per-class", "-K", type=int, default=2,
                   help="examples per class in a batch (default: 2, N-pair)")
    p.add_argument("--epochs", "-E", type=int, default=50,
                   help="training epochs written, each reshuffled (default: 50)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    return p


def main(argv=None):
    args = _parser().parse_args(argv)
    train_classes = parse_classes(args.train_classes)
    if not set(train_classes) <= set(range(10)) or not 1 < len(train_classes) < 10:
        raise UsageError("--train-classes must name 2 to 9 of the digits 0-9")
    print("loading scikit-learn digits; training classes %s, unseen %s"
          % (train_classes, [c for c in range(10) if c not in train_classes]), flush=True)
    x_tr, y_tr, x_seen, y_seen, x_un, y_un = split_digits(
        train_classes, args.seen_holdout, args.seed)
    print("  train %d samples, seen held-out %d, unseen %d"
          % (len(y_tr), len(y_seen), len(y_un)), flush=True)

    n = args.classes_per_batch or len(train_classes)
    k = args.per_class
    if n < 1 or k < 1 or args.epochs < 1:
        raise UsageError("--classes-per-batch, --per-class and --epochs must be at least 1")
    remap = {c: i for i, c in enumerate(train_classes)}
    y_tr_idx = np.array([remap[c] for c in y_tr])
    check_classes(y_tr_idx, n, k, "the training digits")
    print("writing %d training epochs of N-pair batches (%d classes x %d)"
          % (args.epochs, n, k), flush=True)
    order, counts = npair_order(y_tr_idx, n, k, args.epochs, args.seed)
    train_src = write_hdf5_epochs(args.out, "train_npair", x_tr, y_tr_idx, order)

    n_un = min(n, len(np.unique(y_un)))
    order_un, counts_un = npair_order(y_un, n_un, k, 1, args.seed + 1)
    unseen_src = write_hdf5_epochs(args.out, "unseen_npair", x_un, y_un, order_un,
                                   progress=False)
    y_seen_idx = np.array([remap[c] for c in y_seen])
    seen_src = write_hdf5_epochs(args.out, "seen", x_seen, y_seen_idx,
                                 [np.arange(len(y_seen))], progress=False)
    np.savez_compressed(os.path.join(args.out, "eval.npz"), x_unseen=x_un,
                        y_unseen=y_un, x_seen=x_seen, y_seen=y_seen)
    meta = {
        "train_classes": train_classes,
        "unseen_classes": sorted(set(range(10)) - set(train_classes)),
        "train_label_is_index_of": train_classes,
        "n_train": int(len(y_tr)), "n_seen": int(len(y_seen)), "n_unseen": int(len(y_un)),
        "classes_per_batch": n, "per_class": k, "batch_size": n * k,
        "epochs": args.epochs, "batches_per_epoch": counts,
        "train_batches": int(sum(counts)),
        "unseen_batch_size": n_un * k, "unseen_batches": int(sum(counts_un)),
        "seed": args.seed,
    }
    with open(os.path.join(args.out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print("  %s: %d batches of %d (%d per epoch)" % (train_src, sum(counts), n * k,
                                                   counts[0]))
    print("  %s: %d batches of %d" % (unseen_src, sum(counts_un), n_un * k))
    print("  %s: %d samples (labels 0..%d, for the softmax baseline's test net)"
          % (seen_src, len(y_seen), len(train_classes) - 1))
    print("  %s" % os.path.join(args.out, "eval.npz"))
    if n * k != 10 or n_un * k != 10 or len(train_classes) != 5:
        print("note: models/digits/*.prototxt expect batch_size 10 and 5 training "
              "classes (softmax num_output); edit them to match batch_size %d / %d "
              "and %d classes" % (n * k, n_un * k, len(train_classes)))
    return 0


if __name__ == "__main__":
    sys.exit(run(main, PROG))
