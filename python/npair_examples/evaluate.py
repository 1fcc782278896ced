"""Evaluate embeddings on held-out data: Recall@1/2/4/8 and NMI (the N-pair
paper's table), for several trained (or untrained) nets side by side.

For every split in the data file (x_<split>, y_<split> arrays; digits.py
writes "unseen", classes never trained on, and "seen", held-out samples of
the training classes) and every model, the embeddings are extracted with
pycaffe from one deploy net, L2-normalised, and scored:

  recall@K  each sample queries all other samples of its split by cosine
            similarity; a hit when one of its K nearest has its class
            (ties count against the query)
  nmi       k-means (k = number of classes) on the embeddings, then
            normalized_mutual_info_score against the true classes

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

from npair_examples.metrics import RECALL_KS, retrieval_metrics


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
    cols = ["recall@%d" % k for k in ks] + ["nmi"]
    head = "%-8s %-10s " % ("split", "model") + " ".join("%8s" % c.replace("recall", "R")
                                                       for c in cols)
    lines = [head, "-" * len(head)]
    for split, models in results.items():
        for name, m in models.items():
            lines.append("%-8s %-10s " % (split, name) +
                         " ".join("%8.4f" % m[c] for c in cols))
    return "\n".join(lines)


def _parser():
    p = argparse.ArgumentParser(
        prog="python -m npair_examples.evaluate",
        formatter_class=argparse.RawDescriptionHelpFormatter, description=__doc__,
        epilog="""example (what scripts/run_example.sh runs):
  python -m npair_examples.evaluate --deploy models/digits/deploy.prototxt \\
      --data runs/digits/data/eval.npz --blob embed_norm --pixels \\
      --model npair=runs/digits/npair_iter_3000.caffemodel --model untrained= \\
      --model softmax=runs/digits/softmax_iter_3000.caffemodel \\
      --out runs/digits/metrics.json --embeddings runs/digits/embeddings.npz""")
    p.add_argument("--deploy", required=True, help="deploy prototxt (one Input)")
    p.add_argument("--data", required=True,
                   help=".npz with x_<split> and y_<split> arrays")
    p.add_argument("--model", action="append", required=True, metavar="NAME=WEIGHTS",
                   help="a model to evaluate (repeatable); NAME= for random init")
    p.add_argument("--blob", default="embed_norm", help="embedding blob (default: embed_norm)")
    p.add_argument("--splits", default="unseen,seen", help="splits, in order (default: "
                   "unseen,seen)")
    p.add_argument("--pixels", action="store_true", help="also score the raw inputs")
    p.add_argument("--out", default="runs/digits/metrics.json", help="metrics JSON")
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
            sys.exit("error: --model wants NAME=WEIGHTS or NAME=, got %r" % spec)
        if weights and not os.path.exists(weights):
            sys.exit("error: %s: no such weights file" % weights)
        models.append((name, weights))
    data = np.load(args.data)
    results, saved = {}, {}
    for split in [s for s in args.splits.split(",") if s]:
        x, y = data["x_" + split], data["y_" + split]
        results[split] = {}
        rows = [(n, w) for n, w in models] + ([("pixels", None)] if args.pixels else [])
        for name, weights in rows:
            print("evaluate: %s split (%d samples, %d classes): %s%s" % (
                split, len(y), len(np.unique(y)), name,
                "" if weights is None else " <- " + (weights or "random init")),
                flush=True)
            emb = (x.reshape(len(x), -1) if weights is None else
                   extract(args.deploy, weights, x, args.blob, seed=args.seed))
            m = retrieval_metrics(emb, y, seed=args.seed)
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
    sys.exit(main())
