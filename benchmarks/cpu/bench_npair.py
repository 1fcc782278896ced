"""CPU benchmark of the N-pair loss against an InnerProduct yardstick, at 1 thread and
at every core.

For each thread count, samples per label K, batch size N, feature size D and mining,
one pycaffe net holds, on the same N x D input X (L2-normalised rows, K samples per
label, labels shuffled):

  ip      InnerProduct(num_output=N) on X: three GEMMs of N x N x D, the yardstick;
  cpp     the C++ NPairMultiClassLoss layer;
  python  the Python-layer fallback (npair_loss, NumPy: pycaffe runs on CPU here);

and, when torch imports, the same loss (mining and monitors included) with PyTorch CPU
autograd (`torch`); without torch the column is left out, saying so. Each figure is the
median over `--repeats` of one forward + backward (ms); within a repeat the
implementations run interleaved, in a rotating order, so background load hits them
alike. Every figure is also given as a ratio to the InnerProduct time of the same run
and thread count.

Each thread count runs in a process of its own, started with OMP_NUM_THREADS (the C++
layer's OpenMP passes), OPENBLAS_NUM_THREADS (Caffe's and NumPy's OpenBLAS) and
MKL_NUM_THREADS set to it, and torch.set_num_threads: a thread count is fixed when a
process loads its libraries, and the layer and its yardstick always share one.

The loss layers get the usage block's tops (loss, R@1, R@5, R@10, feature_asum) unless
`--tops 1`. Minings: `rand` (every pair, the defaults) and `usage` (the usage block's
npair_loss_param: GLOBAL RELATIVE_HARD positives, LOCAL HARD negatives), read through
npair_loss.params like the fallback's param_str. At the end the run's own figures are
held against the targets (TARGETS below) and each is printed as met or MISSED.

    source build/env.sh
    python3 benchmarks/cpu/bench_npair.py                        # the table (some minutes)
    python3 benchmarks/cpu/bench_npair.py -n 1024 -d 64 --per-class 4 --threads 2
"""
import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy

from npair_loss.mining import KEEP_RULES, relative_position
from npair_loss.cli import UsageError, run
from npair_loss.params import npair_loss_param_text, one_line_param_str, parse_param_str

PROG = 'python3 benchmarks/cpu/bench_npair.py'
USAGE_BLOCK = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'docs',
                           'usage_block.prototxt')
with open(USAGE_BLOCK, encoding='utf-8') as _f:
    MININGS = {'rand': '', 'usage': one_line_param_str(npair_loss_param_text(_f.read()))}
IMPLS = ('ip', 'cpp', 'python', 'torch')
LABELS = {'ip': 'InnerProduct', 'cpp': 'C++ layer', 'python': 'Python (NumPy)',
          'torch': 'PyTorch autograd'}
TOP_NAMES = ('loss', 'r1', 'r5', 'r10', 'asum')
# What the run's figures are held against: the C++ layer against the InnerProduct at
# N = 1024 (every thread count, K and mining), the fallback against the C++ layer
# (every size; one limit at 1 thread, another at more), and PyTorch against the C++
# layer (every size and thread count).
TARGETS = {'cpp_ip_d512': 0.7, 'cpp_ip_d64': 1.3, 'py_cpp_1_thread': 2.0,
           'py_cpp_more_threads': 2.5, 'cpp_torch': 1.0}


class Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line through npair_loss.cli."""

    def error(self, message):
        raise UsageError(message)


def parse_args(argv=None):
    p = Parser(
        prog=PROG,
        description='Time forward+backward of NPairMultiClassLoss (C++ and the Python '
                    'fallback), an InnerProduct(num_output=N) yardstick on the same '
                    'input, and PyTorch CPU autograd of the same loss if torch imports, '
                    'at each thread count.')
    p.add_argument('-n', '--batch', type=int, nargs='+', default=[256, 1024],
                   help='batch sizes N (default: 256 1024; 4096 takes minutes more)')
    p.add_argument('-d', '--dim', type=int, nargs='+', default=[64, 512],
                   help='feature sizes D (default: 64 512)')
    p.add_argument('-m', '--mining', nargs='+', choices=sorted(MININGS),
                   default=['rand', 'usage'], help='minings (default: rand usage)')
    p.add_argument('-k', '--per-class', type=int, nargs='+', default=[2, 4, 8],
                   help='samples per label K: P x K batches (default: 2 4 8)')
    p.add_argument('--threads', type=int, nargs='+', default=None,
                   help='thread counts, each in a process of its own (default: 1 and '
                        f'all {os.cpu_count()} cores)')
    p.add_argument('--impl', nargs='+', choices=IMPLS, default=list(IMPLS),
                   help='implementations to time (default: all; ip is always timed)')
    p.add_argument('--repeats', type=int, default=5,
                   help='timed repeats per figure; the median is shown (default: 5)')
    p.add_argument('--min-time', type=float, default=0.1,
                   help='seconds each timed repeat lasts at least: short calls are '
                        'looped and averaged (default: 0.1)')
    p.add_argument('--tops', type=int, choices=(1, 5), default=5,
                   help='tops of the loss layers: 5 as in the usage block, or the loss '
                        'alone (default: 5)')
    p.add_argument('--split', action='store_true',
                   help='also print the forward and backward medians separately')
    p.add_argument('--seed', type=int, default=1701)
    p.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads is None:
        args.threads = sorted({1, os.cpu_count() or 1})
    for name, values, least in (('--batch', args.batch, 2), ('--dim', args.dim, 1),
                                ('--per-class', args.per_class, 1),
                                ('--threads', args.threads, 1)):
        bad = [v for v in values if v < least]
        if bad:
            raise UsageError(f'{name} must be at least {least}, got {bad[0]}')
    if max(args.per_class) > min(args.batch):
        raise UsageError(f'--per-class {max(args.per_class)} is larger than the batch '
                         f'size {min(args.batch)}: a batch needs two labels')
    if args.repeats < 1 or not args.min_time > 0:
        raise UsageError('--repeats must be at least 1 and --min-time above 0')
    if 'ip' not in args.impl:
        args.impl.insert(0, 'ip')
    return args


def thread_env(threads):
    """The environment of a measuring process: every library gets `threads`."""
    env = dict(os.environ)
    for var in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS'):
        env[var] = str(threads)
    env.setdefault('GLOG_minloglevel', '2')  # no net set-up logs
    return env


def net_prototxt(n, d, mining, tops, impls):
    """Input X (N x D) and labels (N), and every layer under test reading them."""
    layers = [f'''layer {{ name: "data" type: "Input" top: "x" top: "y"
  input_param {{ shape {{ dim: {n} dim: {d} }} shape {{ dim: {n} }} }} }}''']
    if 'ip' in impls:
        layers.append(f'''layer {{ name: "ip" type: "InnerProduct" bottom: "x" top: "ip"
  inner_product_param {{ num_output: {n}
    weight_filler {{ type: "gaussian" std: 0.01 }} }} }}''')
    top_names = TOP_NAMES if tops == 5 else TOP_NAMES[:1]
    weights = ' '.join(['loss_weight: 1'] + ['loss_weight: 0'] * (len(top_names) - 1))
    if 'cpp' in impls:
        tops_txt = ' '.join(f'top: "cpp_{t}"' for t in top_names)
        layers.append(f'''layer {{ name: "cpp" type: "NPairMultiClassLoss" bottom: "x"
  bottom: "y" {tops_txt} {weights}
  npair_loss_param {{ {MININGS[mining]} }} }}''')
    if 'python' in impls:
        tops_txt = ' '.join(f'top: "py_{t}"' for t in top_names)
        layers.append(f'''layer {{ name: "python" type: "Python" bottom: "x" bottom: "y"
  {tops_txt} {weights}
  python_param {{ module: "npair_loss" layer: "NPairMultiClassLossLayer"
    param_str: "{MININGS[mining]}" }} }}''')
    return 'name: "npair_bench"\nforce_backward: true\n' + '\n'.join(layers) + '\n'


def make_batch(n, d, per_class, seed):
    rng = numpy.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(numpy.float32)
    x /= numpy.linalg.norm(x, axis=1, keepdims=True)
    y = rng.permutation(numpy.arange(n) // per_class).astype(numpy.float32)
    return x, y


class CaffeLayerTimer:
    """Forward + backward of one layer of a pycaffe net, by index."""

    def __init__(self, net, name):
        self.net = net
        self.index = list(net._layer_names).index(name)
        self.name = name

    def forward(self):
        self.net._forward(self.index, self.index)

    def backward(self):
        self.net._backward(self.index, self.index)

    def outputs(self):
        """Top values and the features' gradient, after a forward and backward."""
        net = self.net
        tops = [float(net.blobs[t].data) if net.blobs[t].data.size == 1 else None
                for t in net.top_names[self.name]]
        grad = net.blobs[net.bottom_names[self.name][0]].diff.copy()
        return tops, grad


class TorchTimer:
    """The same loss, R@K and asum in PyTorch, gradient by autograd."""

    def __init__(self, torch, x, y, mining, tops):
        self.torch = torch
        self.x = torch.from_numpy(x.copy()).requires_grad_(True)
        self.y = torch.from_numpy(y.copy())
        self.params = parse_param_str(MININGS[mining])
        self.tops = tops
        self.result = None

    def forward(self):
        self.x.grad = None
        self.result = torch_npair(self.torch, self.x, self.y, self.params, self.tops)

    def backward(self):
        self.result[0].backward()

    def outputs(self):
        return [float(v) for v in (self.result[0].detach(), *self.result[1:])], \
            self.x.grad.numpy().copy()


def _relative_position(torch, n, sn):
    """pos(n, sn) for a float64 tensor of list lengths n, by npair_loss.mining's rule."""
    counts = numpy.asarray(n.detach().cpu().numpy(), dtype=numpy.int64)
    return torch.from_numpy(numpy.asarray(relative_position(counts, sn)))


def _torch_threshold(torch, S, pos, neg, region, method, sn, positives):
    """t+ (positives) or t- per row, float64, shape (N, 1) (docs/layer_contract.md §3)."""
    local = region == 'LOCAL'
    inf = math.inf
    if not method.startswith('RELATIVE'):
        if positives:   # the most similar negative
            v = S.masked_fill(~neg, -inf)
            t = v.amax(1, keepdim=True) if local else v.amax().reshape(1, 1)
        else:           # the least similar positive
            v = S.masked_fill(~pos, inf)
            t = v.amin(1, keepdim=True) if local else v.amin().reshape(1, 1)
        return t.double()
    member = pos if positives else neg
    v = S.masked_fill(~member, inf)
    counts = member.sum(1).double()
    if local:
        k = _relative_position(torch, counts, sn).clamp(max=S.shape[1] - 1)
        t = v.sort(1).values.gather(1, k[:, None])
    else:
        total = counts.sum()
        if total == 0:
            return torch.full((1, 1), inf, dtype=torch.float64)
        k = int(_relative_position(torch, total.reshape(1), sn)[0])
        t = v.reshape(-1).kthvalue(k + 1).values.reshape(1, 1)
    return t.double()


def torch_npair(torch, x, y, p, tops):
    """(loss, [R@1, R@5, R@10, asum]) for features x, labels y, params p."""
    n = x.shape[0]
    S = x @ x.T
    same = y[:, None] == y[None, :]
    pos = same & ~torch.eye(n, dtype=torch.bool)
    neg = ~same
    with torch.no_grad():
        Sd = S.detach()
        keep_pos, keep_neg = pos, neg
        if p.ap_mining_method != 'RAND':
            t = _torch_threshold(torch, Sd, pos, neg, p.ap_mining_region,
                                 p.ap_mining_method, p.identsn, True)
            rule = getattr(torch, KEEP_RULES[p.ap_mining_method][0])
            keep_pos = pos & rule(Sd.double(), t + p.margin_ident)
        if p.an_mining_method != 'RAND':
            t = _torch_threshold(torch, Sd, pos, neg, p.an_mining_region,
                                 p.an_mining_method, p.diffsn, False)
            rule = getattr(torch, KEEP_RULES[p.an_mining_method][1])
            keep_neg = neg & rule(Sd.double(), t + p.margin_diff)
        has_pos = keep_pos.any(1)
    rows = S[has_pos]
    lse_all = torch.logsumexp(rows.masked_fill(~(keep_pos | keep_neg)[has_pos], -math.inf), 1)
    lse_pos = torch.logsumexp(rows.masked_fill(~keep_pos[has_pos], -math.inf), 1)
    loss = (lse_all - lse_pos).sum() / n
    if tops == 1:
        return (loss,)
    with torch.no_grad():
        best = Sd.masked_fill(~pos, -math.inf).amax(1, keepdim=True)
        eligible = pos.any(1)
        ahead = ((Sd >= best) & neg).sum(1)
        n_eligible = int(eligible.sum())
        recall = [float((eligible & (ahead < k)).sum()) / n_eligible if n_eligible else 0.0
                  for k in (1, 5, 10)]
        asum = float(x.detach().abs().sum()) / n
    return (loss, *recall, asum)


def time_interleaved(timers, repeats, min_time):
    """{name: (median fwd+bwd s, median fwd s, median bwd s)}, repeats interleaved."""
    loops = {}
    for name, t in timers.items():   # warm up (allocations), then size the loops
        t.forward(); t.backward()
        start = time.perf_counter()
        t.forward(); t.backward()
        once = time.perf_counter() - start
        loops[name] = max(1, math.ceil(min_time / max(once, 1e-9)))
    samples = {name: ([], [], []) for name in timers}
    names = list(timers)
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t, k = timers[name], loops[name]
            fwd = bwd = 0.0
            for _ in range(k):
                a = time.perf_counter()
                t.forward()
                b = time.perf_counter()
                t.backward()
                c = time.perf_counter()
                fwd += b - a
                bwd += c - b
            total, f_list, b_list = samples[name]
            total.append((fwd + bwd) / k)
            f_list.append(fwd / k)
            b_list.append(bwd / k)
    return {name: tuple(statistics.median(s) for s in samples[name]) for name in timers}


def check_agreement(timers):
    """Largest relative difference of the loss and the gradient from the C++ layer's."""
    import numpy
    if 'cpp' not in timers:
        return {}
    ref_tops, ref_grad = timers['cpp'].outputs()
    scale = max(float(numpy.abs(ref_grad).max()), 1e-30)
    out = {}
    for name in ('python', 'torch'):
        if name not in timers:
            continue
        tops, grad = timers[name].outputs()
        dloss = abs(tops[0] - ref_tops[0]) / max(abs(ref_tops[0]), 1e-30)
        dgrad = float(numpy.abs(grad.reshape(ref_grad.shape) - ref_grad).max()) / scale
        dmon = max((abs(a - b) for a, b in zip(tops[1:], ref_tops[1:])), default=0.0)
        out[name] = (dloss, dgrad, dmon)
    return out


def blas_config():
    """OpenBLAS's own description of its build (version, kernel, threading), if loaded."""
    import ctypes
    import ctypes.util
    name = ctypes.util.find_library('openblas')
    try:
        lib = ctypes.CDLL(name or 'libopenblas.so.0')
        lib.openblas_get_config.restype = ctypes.c_char_p
        parallel = {0: 'sequential', 1: 'pthread', 2: 'OpenMP'}.get(
            lib.openblas_get_parallel(), '?')
        return f'{lib.openblas_get_config().decode()} ({parallel})'
    except (OSError, AttributeError):
        return 'OpenBLAS not found'


def measure(args):
    """The worker: every size at this process's thread count, one JSON line each."""
    threads = int(os.environ['OMP_NUM_THREADS'])
    import caffe
    caffe.set_mode_cpu()
    cols = [c for c in IMPLS if c in args.impl]
    torch = None
    if 'torch' in cols:
        try:
            import torch
            torch.set_num_threads(threads)
        except ImportError:
            cols.remove('torch')
    print(json.dumps({'threads': threads, 'blas': blas_config(),
                      'numpy': numpy.__version__,
                      'torch': torch.__version__ if torch else None}), flush=True)
    with tempfile.TemporaryDirectory(prefix='npair_bench_') as tmp:
        for k in args.per_class:
            for n in args.batch:
                for d in args.dim:
                    x, y = make_batch(n, d, k, args.seed)
                    for mining in args.mining:
                        path = os.path.join(tmp, f'net_{n}_{d}_{mining}.prototxt')
                        with open(path, 'w') as f:
                            f.write(net_prototxt(n, d, mining, args.tops, cols))
                        net = caffe.Net(path, caffe.TRAIN)
                        net.blobs['x'].data[...] = x
                        net.blobs['y'].data[...] = y
                        net.forward()   # Split layers share X and labels with their tops
                        timers = {c: CaffeLayerTimer(net, c) for c in cols if c != 'torch'}
                        if 'torch' in cols:
                            timers['torch'] = TorchTimer(torch, x, y, mining, args.tops)
                        res = time_interleaved(timers, args.repeats, args.min_time)
                        print(json.dumps({'key': [threads, k, n, d, mining],
                                          'seconds': res,
                                          'agree': check_agreement(timers)}), flush=True)
                        del net, timers


def run_workers(args, argv):
    """One measuring process per thread count; {key: {impl: (s, fwd s, bwd s)}}."""
    results, agreement, info = {}, {}, {}
    for threads in args.threads:
        worker = subprocess.Popen([sys.executable, os.path.abspath(__file__), *argv,
                                   '--worker'], env=thread_env(threads),
                                  stdout=subprocess.PIPE, text=True)
        for line in worker.stdout:
            record = json.loads(line)
            if 'key' not in record:
                info[threads] = record
                continue
            key = tuple(record['key'])
            results[key] = record['seconds']
            agreement[key] = record['agree']
            print(f'  threads {key[0]}, K {key[1]}, N {key[2]}, D {key[3]}, {key[4]}: '
                  + ', '.join(f'{c} {s[0] * 1e3:.2f} ms' for c, s in record['seconds'].items()),
                  flush=True)
        if worker.wait() != 0:
            sys.exit(f'{PROG}: the measuring process for {threads} thread(s) failed')
    return results, agreement, info


def table(results, threads, split):
    """Markdown table of one thread count's figures."""
    keys = sorted((k for k in results if k[0] == threads), key=lambda k: k[1:])
    cols = [c for c in IMPLS if any(c in results[k] for k in keys)]
    head = ['K', 'N', 'D', 'mining'] + [LABELS[c] for c in cols]
    if 'python' in cols:
        head.append('Py / C++')
    if 'torch' in cols:
        head.append('C++ / torch')
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for key in keys:
        r = results[key]
        ip = r['ip'][0]
        row = [str(v) for v in key[1:]]
        for c in cols:
            ms = r[c][0] * 1e3
            row.append(f'{ms:.2f}' if c == 'ip' else f'{ms:.2f} ({r[c][0] / ip:.2f}x)')
        if 'python' in cols:
            row.append(f'{r["python"][0] / r["cpp"][0]:.2f}')
        if 'torch' in cols:
            row.append(f'{r["cpp"][0] / r["torch"][0]:.2f}')
        lines.append('| ' + ' | '.join(row) + ' |')
        if split:
            lines.append('    fwd / bwd ms: ' + ', '.join(
                f'{c} {r[c][1] * 1e3:.2f} / {r[c][2] * 1e3:.2f}' for c in cols))
    return lines


def target_lines(results):
    """The targets, checked on this run: {(threads, K, N, D, mining): {impl: s}}."""
    lines = []

    def check(what, ratios, limit):
        if not ratios:
            lines.append(f'target {what} <= {limit}: not measured in this run')
            return
        worst_key, worst = max(ratios.items(), key=lambda kv: kv[1])
        verdict = 'met' if worst <= limit else 'MISSED'
        lines.append(f'target {what} <= {limit}: {verdict} (worst {worst:.2f} at '
                     f'threads {worst_key[0]}, K {worst_key[1]}, N {worst_key[2]}, '
                     f'D {worst_key[3]}, {worst_key[4]}; '
                     f'{sum(r <= limit for r in ratios.values())} of {len(ratios)} within)')

    def ratio(a, b, keep):
        return {key: r[a][0] / r[b][0] for key, r in results.items()
                if a in r and b in r and keep(key)}

    for d, name in ((512, 'cpp_ip_d512'), (64, 'cpp_ip_d64')):
        check(f'C++ / InnerProduct at N=1024, D={d}',
              ratio('cpp', 'ip', lambda key, d=d: key[2] == 1024 and key[3] == d),
              TARGETS[name])
    check('Python / C++ at 1 thread', ratio('python', 'cpp', lambda key: key[0] == 1),
          TARGETS['py_cpp_1_thread'])
    check('Python / C++ at more threads', ratio('python', 'cpp', lambda key: key[0] > 1),
          TARGETS['py_cpp_more_threads'])
    check('C++ / PyTorch at every size', ratio('cpp', 'torch', lambda key: True),
          TARGETS['cpp_torch'])
    return lines


def machine_line():
    model = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    model = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    return f'machine: {model}, {os.cpu_count()} cores'


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.worker:
        measure(args)
        return 0
    print(machine_line())
    print('load average at start: ' + ' '.join(f'{v:.2f}' for v in os.getloadavg()))
    print(f'median of {args.repeats} interleaved repeats, each >= {args.min_time} s; '
          f'forward+backward in ms, (x IP) = ratio to the InnerProduct time of the same '
          f'run and thread count; {args.tops} top(s)')
    results, agreement, info = run_workers(args, argv)
    print()
    first = info[args.threads[0]]
    print(f'BLAS: {first["blas"]}; numpy {first["numpy"]}; '
          + (f'torch {first["torch"]}' if first['torch'] else
             'torch: not installed, its column is left out (pip install torch)'))
    for threads in args.threads:
        print()
        print(f'{threads} thread(s) (OMP_NUM_THREADS = OPENBLAS_NUM_THREADS = {threads}):')
        print()
        for line in table(results, threads, args.split):
            print(line)
    print()
    print('load average at end: ' + ' '.join(f'{v:.2f}' for v in os.getloadavg()))
    for line in target_lines(results):
        print(line)
    notes = []
    for key, agree in sorted(agreement.items()):
        for name, (dloss, dgrad, dmon) in agree.items():
            if dloss > 1e-4 or dgrad > 1e-3 or dmon > 1e-5:
                notes.append(f'threads {key[0]}, K {key[1]}, N {key[2]}, D {key[3]}, '
                             f'{key[4]}: {name} differs from C++ (loss {dloss:.1e} rel, '
                             f'gradient {dgrad:.1e} of its max, monitors {dmon:.1e})')
    for note in notes:
        print('note: ' + note)
    if not notes:
        print('all implementations agree with the C++ layer (loss 1e-4 rel, '
              'gradient 1e-3 of its max, monitors 1e-5)')
    return 0


if __name__ == '__main__':
    sys.exit(run(main, PROG))
