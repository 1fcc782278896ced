"""Parse a `caffe train` log into per-iteration series of the net outputs.

Caffe prints, every `display` iterations,

    Iteration 100 (52.3 iter/s, 1.9s/100 iters), loss = 2.37
        Train net output #0: loss = 0.52 (* 1 = 0.52 loss)
        Train net output #1: retrieve_top1 = 0.8 (* 1 = 0.8 loss)

(older Caffe: "Iteration 100, loss = 2.37"), and every `test_interval`

    Iteration 250, Testing net (#0)
        Test net output #0: loss = 0.61 (* 1 = 0.61 loss)

Note that the "loss = " of the Iteration line is the sum of every top that
has a loss_weight; the N-pair usage block puts loss_weight 1 on all five tops
(loss, R@1, R@5, R@10, feature_asum), so that sum is not the loss: read the
loss top's own "Train net output" series instead. Caffe numbers the outputs
in the alphabetical order of their names (feature_asum may well be #0).
"""

import re

_ITER = re.compile(r"Iteration (\d+)")
_TRAIN_ITER = re.compile(r"Iteration (\d+)(?: \([^)]*\))?, loss = (\S+)")
_TEST_ITER = re.compile(r"Iteration (\d+), Testing net \(#(\d+)\)")
_OUTPUT = re.compile(r"(Train|Test) net output #(\d+): (\S+) = (\S+)")


def _float(s):
    try:
        return float(s)
    except ValueError:
        return float("nan")


def parse_log(lines):
    """Parse caffe's log (an iterable of lines, or a path).

    Returns {"train": {name: [(iteration, value), ...]},
             "test": {name: [(iteration, value), ...]},      # test net #0
             "train_order": [names by output index], "test_order": [...],
             "iteration_loss": [(iteration, value), ...]}     # the summed display loss
    A test net other than #0 goes to "test#<k>".
    """
    if isinstance(lines, str):
        with open(lines, errors="replace") as f:
            return parse_log(f.readlines())
    out = {"train": {}, "test": {}, "train_order": [], "test_order": [],
           "iteration_loss": []}
    it, test_key = None, "test"
    for line in lines:
        m = _TEST_ITER.search(line)
        if m:
            it = int(m.group(1))
            test_key = "test" if m.group(2) == "0" else "test#" + m.group(2)
            continue
        m = _TRAIN_ITER.search(line)
        if m:
            it = int(m.group(1))
            out["iteration_loss"].append((it, _float(m.group(2))))
            continue
        m = _OUTPUT.search(line)
        if m and it is not None:
            kind, idx, name, value = m.group(1), int(m.group(2)), m.group(3), m.group(4)
            key = "train" if kind == "Train" else test_key
            series = out.setdefault(key, {})
            order = out.setdefault(key + "_order", [])
            if name not in series:
                series[name] = []
                if len(order) <= idx:
                    order.extend([None] * (idx + 1 - len(order)))
                order[idx] = name
            series[name].append((it, _float(value)))
            continue
        m = _ITER.search(line)
        if m:  # e.g. "Iteration 100, lr = 0.01"
            it = int(m.group(1))
    return out


def is_monitor(name):
    """An N-pair monitor top (R@K, feature_asum) or an accuracy, by its name."""
    n = name.lower()
    return any(s in n for s in ("top1", "top5", "top10", "asum", "accuracy", "recall", "r@"))


def find_series(parsed, key, wanted):
    """Name of the first output in parsed[key] matching `wanted`: "loss" (the
    first output that is not a monitor by its name), an output index ("#1"),
    or a name or part of one; None if absent. Caffe numbers a net's outputs
    in the alphabetical order of their names, not in the order of the tops."""
    names = [n for n in parsed.get(key + "_order", []) if n]
    if wanted == "loss":
        return next((n for n in names if not is_monitor(n)), None)
    if wanted.startswith("#"):
        i = int(wanted[1:])
        return names[i] if i < len(names) else None
    for n in names:
        if n == wanted:
            return n
    for n in names:
        if wanted in n:
            return n
    return None
