"""Evaluate embeddings on held-out data: Recall@1/2/4/8 (the N-pair paper's
table), MAP@R and R-precision (the Metric Learning Reality Check's) and NMI, for
several trained (or untrained) nets side by side.

The held-out splits come from image lists (--list SPLIT=LIST, `path label` per
line, as Caffe's ImageData reads them; pixels scaled by 1/255) or from a .npz
(--data, x_<split> and y_<split> arrays). For every split and model the
embeddings are extracted with pycaffe from one deploy net, L2-normalised, and
scored (see npair_examples.metrics): each sample queries all the other samples
of its split by cosine similarity.

A model is NAME=WEIGHTS.caffemodel, or NAME= (empty) for the deploy net with
its fillers' random initialisation: the same network, untrained. --pixels
adds the raw inputs as a reference row (no network at all).

Writes --out (JSON: {split: {model: {"recall@1": ..., "nmi": ...}}}), prints
its path and a table, and with --embeddings saves every embedding (for
plot_embedding.py).
"""

import argparse
import json
import os
import sys

import numpy as np

from npair_examples.image_list import load_images
from npair_examples.metrics import RECALL_KS, retrieval_metrics
from npair_loss.cli import ArgumentParser, UsageError, read_npz, run


def extract(deploy, weights, x, blob, batch=256, seed=0):
    """Embeddings of x (N x C x H x W) from `blob` of the deploy net."""
    # Caffe logs each net it builds in full; keep its warnings and errors only
    # (GLOG_minloglevel=0 in the environment shows everything).
    os.environ.setdefault("GLOG_minloglevel", "2")
    import caffe
    caffe.set_mode_cpu()
    if weights:
        net = caffe.Net(deploy, caffe.TEST, weights=weights)
    else:
        if hasattr(caffe, "set_random_seed"):
            caffe.set_random_seed(seed)
        net = caffe.Net(deploy, caffe.TEST)
    in_name = net.inputs[0]
    out = []
    for start in range(0, len(x), batch):
        chunk = x[start:start + batch]
        net.blobs[in_name].reshape(*chunk.shape)
        net.reshape()
        net.blobs[in_name].data[...] = chunk
        out.append(net.forward(end=blob)[blob].reshape(len(chunk), -1).copy())
    return np.concatenate(out)


def format_table(results, ks=RECALL_KS):
    cols = ["recall@%d" % k for k in ks] + ["map@r", "r_precision", "nmi"]
    names = {"map@r": "MAP@R", "r_precision": "R-prec", "nmi": "NMI"}
    head = "%-8s %-18s " % ("split", "model") + " ".join(
        "%7s" % names.get(c, c.replace("recall", "R")) for c in cols)
    lines = [head, "-" * len(head)]
    for split, models in results.items():
        for name, m in models.items():
            lines.append("%-8s %-18s " % (split, name) + " ".join(
                "%7s" % "-" if m[c] is None else "%7.4f" % m[c] for c in cols))
    return "\n".join(lines)


def _parser():
    p = ArgumentParser(
        prog="python -m npair_examples.evaluate",
        formatter_class=argparse.RawDescriptionHelpFormatter, description=__doc__,
        epilog="""example (what scripts/run_example.sh runs):
  python -m npair_examples.evaluate --deploy models/glyphs/deploy.prototxt \\
      --list unseen=runs/glyphs/data/unseen.txt --root-folder runs/glyphs/data/ \\
      --blob embed_norm --pixels --model untrained= \\
      --model npair=runs/glyphs/npair_iter_2000.caffemodel \\
      --model softmax=runs/glyphs/softmax_iter_2000.caffemodel \\
      --out runs/glyphs/metrics.json --embeddings runs/glyphs/embeddings.npz""")
    p.add_argument("--deploy", required=True, help="deploy prototxt (one Input)")
    p.add_argument("--list", action="append", default=[], metavar="SPLIT=LIST",
                   help="a split from an image list (repeatable)")
    p.add_argument("--root-folder", default="",
                   help="prefix of the lists' paths, joined to them as Caffe's root_folder "
                        "is (as a string: end a folder with /)")
    p.add_argument("--data", help=".npz with x_<split> and y_<split> arrays")
    p.add_argument("--model", action="append", required=True, metavar="NAME=WEIGHTS",
                   help="a model to evaluate (repeatable); NAME= for random init")
    p.add_argument("--blob", default="embed_norm", help="embedding blob (default: embed_norm)")
    p.add_argument("--splits", default="unseen,seen", help="splits of --data, in order "
                   "(default: unseen,seen)")
    p.add_argument("--no-nmi", default="pixels", metavar="MODELS",
                   help="models whose NMI is not computed (k-means on raw 1024-d pixels "
                        "takes minutes; default: pixels)")
    p.add_argument("--pixels", action="store_true", help="also score the raw inputs")
    p.add_argument("--out", default="runs/glyphs/metrics.json", help="metrics JSON")
    p.add_argument("--embeddings", help="save the embeddings here (.npz)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the untrained init and of k-means (default: 0)")
    return p


def main(argv=None):
    args = _parser().parse_args(argv)
    models = []
    for spec in args.model:
        name, sep, weights = spec.partition("=")
        if not sep or not name:
            raise UsageError("--model wants NAME=WEIGHTS or NAME=, got %r" % spec)
        if weights and not os.path.exists(weights):
            raise UsageError("%s: no such weights file" % weights)
        models.append((name, weights))
    if not os.path.exists(args.deploy):
        raise UsageError("%s: no such deploy net" % args.deploy)
    splits = []
    for spec in args.list:
        split, sep, path = spec.partition("=")
        if not sep or not split:
            raise UsageError("--list wants SPLIT=LIST, got %r" % spec)
        splits.append((split, lambda path=path: load_images(path, args.root_folder)))
    if args.data:
        data = read_npz(args.data)
        for s in filter(None, args.splits.split(",")):
            if "x_" + s not in data or "y_" + s not in data:
                raise UsageError("%s: no arrays x_%s and y_%s for split %r"
                                 % (args.data, s, s, s))
            splits.append((s, lambda s=s: (data["x_" + s], data["y_" + s])))
    if not splits:
        raise UsageError("nothing to evaluate: give --list SPLIT=LIST or --data")
    no_nmi = set(args.no_nmi.split(","))
    results, saved = {}, {}
    for split, load in splits:
        x, y = load()
        results[split] = {}
        rows = [(n, w) for n, w in models] + ([("pixels", None)] if args.pixels else [])
        for name, weights in rows:
            print("evaluate: %s split (%d samples, %d classes): %s%s" % (
                split, len(y), len(np.unique(y)), name,
                "" if weights is None else " <- " + (weights or "random init")),
                flush=True)
            emb = (x.reshape(len(x), -1) if weights is None else
                   extract(args.deploy, weights, x, args.blob, seed=args.seed))
            m = retrieval_metrics(emb, y, with_nmi=name not in no_nmi, seed=args.seed)
            m.update(n=int(len(y)), classes=int(len(np.unique(y))),
                     weights=weights or ("raw input" if weights is None else "random init"))
            results[split][name] = m
            saved["%s__%s" % (split, name)] = emb.astype(np.float32)
            saved["%s__labels" % split] = y
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    if args.embeddings:
        np.savez_compressed(args.embeddings, **saved)
        print("evaluate: embeddings saved to %s" % args.embeddings)
    print()
    print(format_table(results))
    print()
    print("evaluate: metrics written to %s" % args.out)
    return 0


if __name__ == "__main__":
    sys.exit(run(main, "python -m npair_examples.evaluate"))
