"""Unseen-class retrieval against training iteration, every model in one figure.

For each model NAME=PREFIX, every snapshot PREFIX_iter_<N>.caffemodel is
evaluated (iteration 0: the deploy net untrained, the same seed as evaluate's
`untrained` row) on a fixed subset of the unseen classes (--classes, a seeded
choice, all of each class's images): R@1 and MAP@R (npair_examples.metrics).
The subset keeps the many intermediate points cheap; the final figures over
every unseen class are evaluate's.

Writes --out (JSON: {"subset": {...}, "models": {name: [{"iter", "recall@1",
"map@r"}, ...]}}) and --plot (two panels, one line per model; a model's
second seed, NAME_seed2, in its colour, dashed). With --replot, reads --out and
only draws.
"""

import argparse
import glob
import json
import os
import re
import sys

import numpy as np

from npair_examples.evaluate import extract
from npair_examples.image_list import load_images
from npair_examples.metrics import map_at_r, recall_at_k
from npair_loss.cli import ArgumentParser, UsageError, read_json, run


def snapshots(prefix):
    """[(iteration, path)] of PREFIX_iter_<N>.caffemodel, by iteration."""
    found = []
    for path in glob.glob(glob.escape(prefix) + "_iter_*.caffemodel"):
        m = re.search(r"_iter_(\d+)\.caffemodel$", path)
        if m:
            found.append((int(m.group(1)), path))
    return sorted(found)


def subset(labels, n_classes, seed):
    classes = np.unique(labels)
    if n_classes and n_classes < len(classes):
        classes = np.random.default_rng(seed).choice(classes, n_classes, replace=False)
    return np.isin(labels, classes), len(classes)


def _point(deploy, blob, x, y, iteration, weights, seed):
    emb = extract(deploy, weights, x, blob, seed=seed)
    return {"iter": iteration, "recall@1": recall_at_k(emb, y, ks=(1,))[1],
            "map@r": map_at_r(emb, y)[0]}


def measure(deploy, blob, x, y, models, seed=0):
    found = [(name, snapshots(prefix)) for name, prefix in models]
    for (name, prefix), (_, points) in zip(models, found):
        if not points:
            raise UsageError("%s: no snapshots %s_iter_<N>.caffemodel" % (name, prefix))
    untrained = _point(deploy, blob, x, y, 0, "", seed)    # every model's iteration 0
    out = {}
    for name, points in found:
        out[name] = [untrained] + [_point(deploy, blob, x, y, it, w, seed) for it, w in points]
        print("convergence: %-18s %s" % (name, " ".join(
            "%d:%.3f" % (p["iter"], p["recall@1"]) for p in out[name])), flush=True)
    return out


def plot(result, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    colours = {}
    for name, points in result["models"].items():
        base = name[:-len("_seed2")] if name.endswith("_seed2") else name
        colour = colours.setdefault(base, plt.get_cmap("tab10")(len(colours) % 10))
        style = "--" if name.endswith("_seed2") else "-"
        its = [p["iter"] for p in points]
        for ax, key in zip(axes, ("recall@1", "map@r")):
            ax.plot(its, [p[key] for p in points], style, color=colour, marker="o",
                    markersize=3, label=name)
    sub = result["subset"]
    for ax, title in zip(axes, ("R@1", "MAP@R")):
        ax.set_xlabel("iteration")
        ax.set_ylabel(title)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.set_title("unseen %s (%d classes, %d images)" % (title, sub["classes"],
                                                           sub["images"]), fontsize=10)
    axes[1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle("Retrieval of characters never trained on, against training iteration")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _parser():
    p = ArgumentParser(
        prog="python -m npair_examples.convergence",
        formatter_class=argparse.RawDescriptionHelpFormatter, description=__doc__,
        epilog="example (what scripts/run_example.sh runs):\n"
               "  python -m npair_examples.convergence --deploy models/glyphs/deploy.prototxt "
               "\\\n      --list runs/glyphs/data/unseen.txt --root-folder runs/glyphs/data/ "
               "\\\n      --model npair=runs/glyphs/npair --model softmax=runs/glyphs/softmax "
               "\\\n      --out runs/glyphs/convergence.json --plot runs/glyphs/convergence.png")
    p.add_argument("--deploy", help="deploy prototxt (one Input)")
    p.add_argument("--list", help="the unseen image list")
    p.add_argument("--root-folder", default="",
                   help="prefix of the list's paths, joined to them as Caffe's root_folder "
                        "is (as a string: end a folder with /)")
    p.add_argument("--blob", default="embed_norm", help="embedding blob (default: embed_norm)")
    p.add_argument("--model", action="append", default=[], metavar="NAME=PREFIX",
                   help="a model and its snapshot prefix (repeatable)")
    p.add_argument("--classes", type=int, default=100,
                   help="unseen classes of the subset (default: 100; 0: all)")
    p.add_argument("--seed", type=int, default=0, help="subset and init seed (default: 0)")
    p.add_argument("--out", default="runs/glyphs/convergence.json", help="JSON to write")
    p.add_argument("--plot", help="PNG to write")
    p.add_argument("--replot", action="store_true", help="read --out and only draw --plot")
    return p


def main(argv=None):
    args = _parser().parse_args(argv)
    if args.replot:
        result = read_json(args.out)
    else:
        if not args.deploy or not args.list or not args.model:
            raise UsageError("--deploy, --list and at least one --model are needed")
        models = []
        for spec in args.model:
            name, sep, prefix = spec.partition("=")
            if not sep or not name or not prefix:
                raise UsageError("--model wants NAME=PREFIX, got %r" % spec)
            models.append((name, prefix))
        x, y = load_images(args.list, args.root_folder)
        chosen, n_classes = subset(y, args.classes, args.seed)
        result = {"subset": {"classes": n_classes, "images": int(chosen.sum()),
                             "seed": args.seed, "list": args.list},
                  "models": measure(args.deploy, args.blob, x[chosen], y[chosen], models,
                                    args.seed)}
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
        print("convergence: wrote %s" % args.out)
    if args.plot:
        plot(result, args.plot)
        print("convergence: wrote %s" % args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(run(main, "python -m npair_examples.convergence"))
