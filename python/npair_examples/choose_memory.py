"""Choose npair_xbm's CrossBatchMemory (its size and warm-up) without the unseen
characters: on training characters held out of the trainings.

The training list is split by class: --holdout characters (a seeded choice) are
set aside, and every candidate trains on the others, with the glyphs example's
trunk, batches, iterations and solver (npair_examples.glyph_nets), its TEST phase
reading the held-out characters. Each trained model is then scored the way the
example scores the unseen characters (npair_examples.evaluate's protocol: every
held-out image queries all the others) by MAP@R and R@1. The candidates are
npair (no memory: the baseline) and npair_xbm with every --sizes x --warmups;
the best MAP@R wins. The unseen list is never read.

    python -m npair_examples.choose_memory --data runs/glyphs/data --out runs/memory_choice

Writes the split lists, the nets, the training logs and choice.json (every
candidate's figures and the winner) under --out, and prints the table.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

from npair_examples import glyph_nets
from npair_examples.evaluate import extract
from npair_examples.image_list import load_images, read_list
from npair_examples.metrics import retrieval_metrics
from npair_loss.cli import ArgumentParser, UsageError, run

PROG = "python -m npair_examples.choose_memory"


def split_by_class(images, holdout, seed):
    """(kept, held out): the images of all but `holdout` classes, and of those."""
    classes = sorted({im.label for im in images})
    if not 0 < holdout < len(classes):
        raise UsageError("--holdout %d: the list has %d classes" % (holdout, len(classes)))
    held = set(np.random.default_rng(seed).choice(classes, holdout, replace=False).tolist())
    return ([im for im in images if im.label not in held],
            [im for im in images if im.label in held])


def write_list(images, root, path):
    with open(path, "w", encoding="utf-8") as f:
        for im in images:
            f.write("%s %d\n" % (im.path[len(root):], im.label))


def candidates(sizes, warmups):
    """(name, model, size, warmup) of every run: the baseline, then each memory."""
    runs = [("npair", "npair", None, None)]
    for size in sizes:
        for warmup in warmups:
            runs.append(("xbm_%d_w%d" % (size, warmup), "npair_xbm", size, warmup))
    return runs


def train_all(runs, args, lists, classes):
    """caffe train of every run, --jobs at a time on one thread each."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               GLOG_logtostderr="1")
    pending, active = list(runs), []
    while pending or active:
        while pending and len(active) < args.jobs:
            name, model, size, warmup = pending.pop(0)
            net = os.path.join(args.out, name + ".prototxt")
            with open(net, "w", encoding="utf-8") as f:
                f.write(glyph_nets.train_net(model, classes, args.data, lists=lists,
                                             memory_size=size, memory_warmup=warmup))
            text = glyph_nets.solver(model, args.out, name=name, snapshot_dir=args.out)
            text = text.replace('net: "%s/%s.prototxt"' % (args.out, model),
                                'net: "%s"' % net)
            solver = os.path.join(args.out, name + "_solver.prototxt")
            with open(solver, "w", encoding="utf-8") as f:
                f.write(text)
            log = open(os.path.join(args.out, name + "_train.log"), "w")
            proc = subprocess.Popen(["caffe", "train", "--solver=" + solver], env=env,
                                    stdout=log, stderr=subprocess.STDOUT)
            active.append((name, proc, log, time.time()))
            print("choose_memory: training %s" % name, flush=True)
        time.sleep(1)
        for item in list(active):
            name, proc, log, start = item
            if proc.poll() is None:
                continue
            log.close()
            active.remove(item)
            if proc.returncode != 0:
                raise UsageError("caffe train of %s failed: see %s" % (name, log.name))
            print("choose_memory: %s trained in %d s" % (name, time.time() - start),
                  flush=True)


def _parser():
    p = ArgumentParser(prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
                       description=__doc__)
    p.add_argument("--data", default=glyph_nets.DATA,
                   help="the glyphs data folder, with train.txt (default: %(default)s)")
    p.add_argument("--out", default="runs/memory_choice", help="(default: %(default)s)")
    p.add_argument("--holdout", type=int, default=300,
                   help="training characters held out to score on (default: 300)")
    p.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384, 32768],
                   help="memory sizes to try (default: 4096 16384 32768)")
    p.add_argument("--warmups", type=int, nargs="+", default=[250, 500],
                   help="warm-ups to try, in iterations (default: 250 500)")
    p.add_argument("--jobs", type=int, default=(os.cpu_count() or 1) + 1,
                   help="trainings at a time, one thread each (default: cores + 1)")
    p.add_argument("--seed", type=int, default=1, help="seed of the held-out choice")
    return p


def main(argv=None):
    args = _parser().parse_args(argv)
    if args.jobs < 1 or min(args.sizes) < 1 or min(args.warmups) < 0:
        raise UsageError("--jobs and --sizes must be at least 1, --warmups at least 0")
    args.data = args.data.rstrip("/") + "/"
    images = read_list(os.path.join(args.data, "train.txt"), args.data)
    kept, held = split_by_class(images, args.holdout, args.seed)
    os.makedirs(args.out, exist_ok=True)
    lists = (os.path.join(args.out, "fit.txt"), os.path.join(args.out, "holdout.txt"))
    write_list(kept, args.data, lists[0])
    write_list(held, args.data, lists[1])
    classes = len({im.label for im in kept})
    print("choose_memory: %d characters to train on (%d images), %d held out (%d images)"
          % (classes, len(kept), args.holdout, len(held)), flush=True)
    runs = candidates(args.sizes, args.warmups)
    train_all(runs, args, lists, classes)
    x, y = load_images(lists[1], args.data)
    deploy = os.path.join(glyph_nets.ROOT, "models", "glyphs", "deploy.prototxt")
    results = {}
    for name, model, size, warmup in runs:
        weights = os.path.join(args.out, "%s_iter_%d.caffemodel" % (name,
                                                                    glyph_nets.ITERATIONS))
        m = retrieval_metrics(extract(deploy, weights, x, "embed_norm"), y, with_nmi=False)
        results[name] = {"size": size, "warmup": warmup, "map@r": m["map@r"],
                         "recall@1": m["recall@1"]}
    best = max((n for n in results if results[n]["size"]), key=lambda n: results[n]["map@r"])
    print("\n%-18s %8s %8s %8s %8s" % ("candidate", "size", "warm-up", "R@1", "MAP@R"))
    for name, r in results.items():
        print("%-18s %8s %8s %8.4f %8.4f%s" % (name, r["size"] or "-", r["warmup"] or "-",
                                              r["recall@1"], r["map@r"],
                                              "   <- chosen" if name == best else ""))
    with open(os.path.join(args.out, "choice.json"), "w") as f:
        json.dump({"holdout": args.holdout, "seed": args.seed, "candidates": results,
                   "chosen": best}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(run(main, PROG))
