"""CPU benchmark of the N-pair loss against an InnerProduct yardstick, at 1 thread and
at every core.

For each thread count, samples per label K, batch size N, feature size D and mining,
one pycaffe net holds, on the same N x D input X (L2-normalised rows, K samples per
label, labels shuffled):

  ip      InnerProduct(num_output=N) on X: three GEMMs of N x N x D, the yardstick;
  cpp     the C++ NPairMultiClassLoss layer;
  python  the Python-layer fallback (npair_loss, NumPy: pycaffe runs on CPU here);

With --refs M ..., the queries meet M references as well (the loss's bottoms 2 and 3,
L2-normalised rows with labels of the batch's classes and others), the shape of a
CrossBatchMemory: the yardstick is then InnerProduct(num_output=M) on X, three GEMMs of
N x M x D, the layer's own two (forward, and backward into X: its references' gradient is
not asked for) plus its passes; `cpp_batch` is the layer on the batch alone, beside it.

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

Beside each C++ figure: `passes`, the layer's time less that of its GEMMs (syrk and
the products, timed on the BLAS the layer calls, with the same shapes, interleaved
with the layer in every repeat), per (query,
candidate) pair: the part of the layer the BLAS does not do. The BLAS line names the
library and the kernel it runs, and each row gives the yardstick's GFLOPS, so that a
slow yardstick cannot flatter the layer.

The loss layers get the usage block's tops (loss, R@1, R@5, R@10, feature_asum) unless
`--tops 1`. Minings: `rand` (every pair, the defaults) and `usage` (the usage block's
npair_loss_param: GLOBAL RELATIVE_HARD positives, LOCAL HARD negatives), read through
npair_loss.params like the fallback's param_str. At the end the run's own figures are
held against the targets (TARGETS below) and each is printed as met or MISSED.

    source build/env.sh
    python3 benchmarks/cpu/bench_npair.py                        # the table (some minutes)
    python3 benchmarks/cpu/bench_npair.py -n 1024 -d 64 --per-class 4 --threads 2
    python3 benchmarks/cpu/bench_npair.py -n 128 --refs 1024 4096 16384 -k 2
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

from npair_loss.cli import UsageError, run
from npair_loss.mining import KEEP_RULES, relative_position
from npair_loss.params import npair_loss_param_text, one_line_param_str, parse_param_str

PROG = 'python3 benchmarks/cpu/bench_npair.py'
USAGE_BLOCK = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'docs',
                           'usage_block.prototxt')
with open(USAGE_BLOCK, encoding='utf-8') as _f:
    MININGS = {'rand': '', 'usage': one_line_param_str(npair_loss_param_text(_f.read()))}
IMPLS = ('ip', 'cpp', 'cpp_batch', 'python', 'torch')
LABELS = {'ip': 'InnerProduct', 'cpp': 'C++ layer', 'cpp_batch': 'C++, batch alone',
          'python': 'Python (NumPy)', 'torch': 'PyTorch autograd'}
TOP_NAMES = ('loss', 'r1', 'r5', 'r10', 'asum')
# What the run's figures are held against. Without references: the C++ layer against
# the InnerProduct at N = 1024 (every thread count, K and mining); the C++ layer faster
# than the fallback and than PyTorch (every size and thread count); its passes per
# pair at 1 thread, N = 1024. With references: the C++ layer against
# InnerProduct(num_output=M) (every M and thread count).
TARGETS = {'cpp_ip_d512': 0.7, 'cpp_ip_d64': 1.3, 'cpp_py': 1.0, 'cpp_torch': 1.0,
           'passes_ns': 3.0, 'refs_cpp_ip_d512': 0.8, 'refs_cpp_ip_d64': 1.5}


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
    p.add_argument('--refs', type=int, nargs='+', default=[0],
                   help='reference counts M the queries meet as well (default: none)')
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
                                ('--threads', args.threads, 1), ('--refs', args.refs, 0)):
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
    if max(args.refs) == 0:
        args.impl = [c for c in args.impl if c != 'cpp_batch']
    return args


def thread_env(threads):
    """The environment of a measuring process: every library gets `threads`."""
    env = dict(os.environ)
    for var in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS'):
        env[var] = str(threads)
    env.setdefault('GLOG_minloglevel', '2')  # no net set-up logs
    return env


def net_prototxt(n, d, m, mining, tops, impls):
    """Inputs X (N x D), labels (N) and, with m references, R (M x D) and their labels;
    every layer under test reading them. X reaches them through a Bias layer (its bias
    0) so that X needs a gradient the way a net's features do, without force_backward,
    which would override `propagate_down: false` and have the loss compute the
    references' gradient too (Caffe's rule), unlike a net with a CrossBatchMemory."""
    shapes = f'shape {{ dim: {n} dim: {d} }} shape {{ dim: {n} }}'
    inputs = 'top: "x_in" top: "y"'
    if m:
        shapes += f' shape {{ dim: {m} dim: {d} }} shape {{ dim: {m} }}'
        inputs += ' top: "r" top: "z"'
    layers = [f'layer {{ name: "data" type: "Input" {inputs} input_param {{ {shapes} }} }}',
              'layer { name: "features" type: "Bias" bottom: "x_in" top: "x" }']
    if 'ip' in impls:
        # loss_weight: its Backward runs (both GEMMs) as a layer's under a loss does.
        layers.append(f'''layer {{ name: "ip" type: "InnerProduct" bottom: "x" top: "ip"
  loss_weight: 1 inner_product_param {{ num_output: {m or n}
    weight_filler {{ type: "gaussian" std: 0.01 }} }} }}''')
    top_names = TOP_NAMES if tops == 5 else TOP_NAMES[:1]
    weights = ' '.join(['loss_weight: 1'] + ['loss_weight: 0'] * (len(top_names) - 1))
    refs = 'bottom: "r" bottom: "z" propagate_down: true propagate_down: false ' \
           'propagate_down: false propagate_down: false' if m else ''
    for impl, with_refs in (('cpp', True), ('cpp_batch', False)):
        if impl in impls:
            tops_txt = ' '.join(f'top: "{impl}_{t}"' for t in top_names)
            layers.append(f'''layer {{ name: "{impl}" type: "NPairMultiClassLoss" bottom: "x"
  bottom: "y" {refs if with_refs else ''} {tops_txt} {weights}
  npair_loss_param {{ {MININGS[mining]} }} }}''')
    if 'python' in impls:
        tops_txt = ' '.join(f'top: "py_{t}"' for t in top_names)
        layers.append(f'''layer {{ name: "python" type: "Python" bottom: "x" bottom: "y" {refs}
  {tops_txt} {weights}
  python_param {{ module: "npair_loss" layer: "NPairMultiClassLossLayer"
    param_str: "{MININGS[mining]}" }} }}''')
    return 'name: "npair_bench"\n' + '\n'.join(layers) + '\n'


def make_batch(n, d, m, per_class, seed):
    """X and its labels (K a class, shuffled); R and its labels, K a class of as many
    classes as M rows make, the batch's among them."""
    rng = numpy.random.default_rng(seed)

    def rows(count):
        v = rng.standard_normal((count, d)).astype(numpy.float32)
        return v / numpy.linalg.norm(v, axis=1, keepdims=True)
    x = rows(n)
    y = rng.permutation(numpy.arange(n) // per_class).astype(numpy.float32)
    r = rows(m)
    z = rng.permutation(numpy.arange(m) // per_class).astype(numpy.float32)
    return x, y, r, z


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


def openblas():
    """The OpenBLAS that pycaffe loaded (the one the layer calls), or None."""
    import ctypes
    try:
        lib = ctypes.CDLL('libopenblas.so.0')
        lib.openblas_get_config.restype = ctypes.c_char_p
        lib.openblas_get_corename.restype = ctypes.c_char_p
        return lib
    except (OSError, AttributeError):
        return None


def blas_config(lib):
    """OpenBLAS's own description of its build and the kernel it runs."""
    if lib is None:
        return 'OpenBLAS not found (no GEMM times, no passes figures)'
    parallel = {0: 'sequential', 1: 'pthread', 2: 'OpenMP'}.get(lib.openblas_get_parallel(), '?')
    return (f'{lib.openblas_get_config().decode()} ({parallel}), kernel '
            f'{lib.openblas_get_corename().decode()}')


class LayerGemmTimer:
    """The C++ layer's GEMMs on its BLAS, with the shapes and padded rows the layer uses:
    the upper triangle of X X^T (syrk) and X R^T as `forward`, (G_B + G_B^T) X and G_R R
    as `backward`. Timed interleaved with the layer, so that both see the same load."""

    def __init__(self, lib, n, m, d):
        import ctypes
        self.lib, self.n, self.m, self.d = lib, n, m, d
        padded = -(-(n + m) // 16) * 16
        self.ld = padded + (16 if padded * 4 % 2048 == 0 else 0)
        rng = numpy.random.default_rng(0)
        self.x = rng.standard_normal((n, d)).astype(numpy.float32)
        self.r = rng.standard_normal((max(m, 1), d)).astype(numpy.float32)
        self.s = numpy.zeros((n, self.ld), numpy.float32)
        self.out = numpy.zeros((n, d), numpy.float32)
        self.ptr = lambda a: a.ctypes.data_as(ctypes.c_void_p)  # noqa: E731
        self.s_refs = ctypes.c_void_p(self.s.ctypes.data + 4 * n)
        self.one, self.zero = ctypes.c_float(1), ctypes.c_float(0)

    ROW, UPPER, NO, YES = 101, 121, 111, 112

    def forward(self):
        lib, n, m, d, ld, p = self.lib, self.n, self.m, self.d, self.ld, self.ptr
        lib.cblas_ssyrk(self.ROW, self.UPPER, self.NO, n, d, self.one, p(self.x), d,
                        self.zero, p(self.s), ld)
        if m:
            lib.cblas_sgemm(self.ROW, self.NO, self.YES, n, m, d, self.one, p(self.x), d,
                            p(self.r), d, self.zero, self.s_refs, ld)

    def backward(self):
        lib, n, m, d, ld, p = self.lib, self.n, self.m, self.d, self.ld, self.ptr
        lib.cblas_sgemm(self.ROW, self.NO, self.NO, n, d, n, self.one, p(self.s), ld,
                        p(self.x), d, self.zero, p(self.out), d)
        if m:
            lib.cblas_sgemm(self.ROW, self.NO, self.NO, n, d, m, self.one, self.s_refs, ld,
                            p(self.r), d, self.one, p(self.out), d)


def measure(args):
    """The worker: every size at this process's thread count, one JSON line each."""
    threads = int(os.environ['OMP_NUM_THREADS'])
    import caffe
    caffe.set_mode_cpu()
    lib = openblas()
    cols = [c for c in IMPLS if c in args.impl]
    torch = None
    if 'torch' in cols:
        try:
            import torch
            torch.set_num_threads(threads)
        except ImportError:
            cols.remove('torch')
    print(json.dumps({'threads': threads, 'blas': blas_config(lib),
                      'numpy': numpy.__version__,
                      'torch': torch.__version__ if torch else None}), flush=True)
    with tempfile.TemporaryDirectory(prefix='npair_bench_') as tmp:
        for k in args.per_class:
            for n in args.batch:
                for m in args.refs:
                    for d in args.dim:
                        run_size(args, caffe, torch, lib, cols, tmp, threads, k, n, m, d)


def run_size(args, caffe, torch, lib, cols, tmp, threads, k, n, m, d):
    """Every mining of one size: a JSON line each."""
    x, y, r, z = make_batch(n, d, m, k, args.seed)
    # PyTorch's loss here takes no references.
    cols = [c for c in cols if not (m and c == 'torch')]
    for mining in args.mining:
        path = os.path.join(tmp, f'net_{n}_{m}_{d}_{mining}.prototxt')
        with open(path, 'w') as f:
            f.write(net_prototxt(n, d, m, mining, args.tops, cols))
        net = caffe.Net(path, caffe.TRAIN)
        for name, value in (('x_in', x), ('y', y), ('r', r), ('z', z)):
            if name in net.blobs and value.size:
                net.blobs[name].data[...] = value
        net.forward()   # Split layers share X and labels with their tops
        timers = {c: CaffeLayerTimer(net, c) for c in cols if c != 'torch'}
        if 'torch' in cols:
            timers['torch'] = TorchTimer(torch, x, y, mining, args.tops)
        if lib and 'cpp' in cols:
            timers['gemm'] = LayerGemmTimer(lib, n, m, d)
        res = time_interleaved(timers, args.repeats, args.min_time)
        gemm = res.pop('gemm', (None,))[0]
        print(json.dumps({'key': [threads, k, n, m, d, mining], 'seconds': res,
                          'gemm': gemm, 'agree': check_agreement(timers)}), flush=True)
        del net, timers


def run_workers(args, argv):
    """One measuring process per thread count; {key: {impl: (s, fwd s, bwd s)}}."""
    results, agreement, info, gemm = {}, {}, {}, {}
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
            gemm[key] = record['gemm']
            print(f'  {describe(key)}: '
                  + ', '.join(f'{c} {s[0] * 1e3:.2f} ms' for c, s in record['seconds'].items()),
                  flush=True)
        if worker.wait() != 0:
            sys.exit(f'{PROG}: the measuring process for {threads} thread(s) failed')
    return results, agreement, info, gemm


def describe(key):
    threads, k, n, m, d, mining = key
    return f'threads {threads}, K {k}, N {n}, ' + (f'M {m}, ' if m else '') + f'D {d}, {mining}'


def ip_gflops(key, seconds):
    """The InnerProduct's rate: forward and its two backward GEMMs of N x D x outputs."""
    _, _, n, m, d, _ = key
    return 3 * 2 * n * d * (m or n) / seconds / 1e9


def passes_ns(key, seconds, gemm):
    """ns per (query, candidate) pair of the layer's time less its GEMMs."""
    _, _, n, m, _, _ = key
    return (seconds - gemm) / (n * (n + m)) * 1e9


def table(results, gemm, threads, split):
    """Markdown table of one thread count's figures."""
    keys = sorted((k for k in results if k[0] == threads), key=lambda k: k[1:])
    cols = [c for c in IMPLS if any(c in results[k] for k in keys)]
    refs = any(k[3] for k in keys)
    head = ['K', 'N'] + (['M'] if refs else []) + ['D', 'mining'] + \
        [LABELS[c] for c in cols] + ['IP GFLOPS', 'C++ passes ns/pair']
    if 'python' in cols:
        head.append('Py / C++')
    if 'torch' in cols:
        head.append('C++ / torch')
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for key in keys:
        r = results[key]
        ip = r['ip'][0]
        row = [str(key[1]), str(key[2])] + ([str(key[3])] if refs else []) + \
            [str(key[4]), key[5]]
        for c in cols:
            if c not in r:
                row.append('-')
                continue
            ms = r[c][0] * 1e3
            row.append(f'{ms:.2f}' if c == 'ip' else f'{ms:.2f} ({r[c][0] / ip:.2f}x)')
        row.append(f'{ip_gflops(key, ip):.0f}')
        row.append('-' if gemm[key] is None else f'{passes_ns(key, r["cpp"][0], gemm[key]):.2f}')
        if 'python' in cols:
            row.append(f'{r["python"][0] / r["cpp"][0]:.2f}' if 'python' in r else '-')
        if 'torch' in cols:
            row.append(f'{r["cpp"][0] / r["torch"][0]:.2f}' if 'torch' in r else '-')
        lines.append('| ' + ' | '.join(row) + ' |')
        if split:
            lines.append('    fwd / bwd ms: ' + ', '.join(
                f'{c} {r[c][1] * 1e3:.2f} / {r[c][2] * 1e3:.2f}' for c in cols if c in r))
    return lines


def target_lines(results, gemm):
    """The targets, checked on this run: {(threads, K, N, M, D, mining): {impl: s}}."""
    lines = []

    def check(what, values, limit, unit='x'):
        if not values:
            lines.append(f'target {what} <= {limit}{unit}: not measured in this run')
            return
        worst_key, worst = max(values.items(), key=lambda kv: kv[1])
        verdict = 'met' if worst <= limit else 'MISSED'
        lines.append(f'target {what} <= {limit}{unit}: {verdict} (worst {worst:.2f} at '
                     f'{describe(worst_key)}; '
                     f'{sum(v <= limit for v in values.values())} of {len(values)} within)')

    def ratio(a, b, keep):
        return {key: r[a][0] / r[b][0] for key, r in results.items()
                if a in r and b in r and keep(key)}

    for d, name in ((512, 'cpp_ip_d512'), (64, 'cpp_ip_d64')):
        check(f'C++ / InnerProduct at N=1024, D={d}',
              ratio('cpp', 'ip', lambda key, d=d: key[2] == 1024 and not key[3] and key[4] == d),
              TARGETS[name])
    check('C++ / Python at every size', ratio('cpp', 'python', lambda key: True),
          TARGETS['cpp_py'])
    check('C++ / PyTorch at every size', ratio('cpp', 'torch', lambda key: True),
          TARGETS['cpp_torch'])
    check('C++ passes per pair at 1 thread, N=1024',
          {key: passes_ns(key, r['cpp'][0], gemm[key]) for key, r in results.items()
           if key[0] == 1 and key[2] == 1024 and not key[3] and gemm[key] is not None},
          TARGETS['passes_ns'], unit=' ns')
    for d, name in ((512, 'refs_cpp_ip_d512'), (64, 'refs_cpp_ip_d64')):
        check(f'C++ with references / InnerProduct(M) at D={d}',
              ratio('cpp', 'ip', lambda key, d=d: key[3] and key[4] == d), TARGETS[name])
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
    results, agreement, info, gemm = run_workers(args, argv)
    print()
    first = info[args.threads[0]]
    print(f'BLAS: {first["blas"]}; numpy {first["numpy"]}; '
          + (f'torch {first["torch"]}' if first['torch'] else
             'torch: not installed, its column is left out (pip install torch)'))
    for threads in args.threads:
        print()
        print(f'{threads} thread(s) (OMP_NUM_THREADS = OPENBLAS_NUM_THREADS = {threads}):')
        print()
        for line in table(results, gemm, threads, args.split):
            print(line)
    print()
    print('load average at end: ' + ' '.join(f'{v:.2f}' for v in os.getloadavg()))
    for line in target_lines(results, gemm):
        print(line)
    notes = []
    for key, agree in sorted(agreement.items()):
        for name, (dloss, dgrad, dmon) in agree.items():
            if dloss > 1e-4 or dgrad > 1e-3 or dmon > 1e-5:
                notes.append(f'{describe(key)}: {name} differs from C++ (loss {dloss:.1e} rel, '
                             f'gradient {dgrad:.1e} of its max, monitors {dmon:.1e})')
    for note in notes:
        print('note: ' + note)
    if not notes:
        print('all implementations agree with the C++ layer (loss 1e-4 rel, '
              'gradient 1e-3 of its max, monitors 1e-5)')
    return 0


if __name__ == '__main__':
    sys.exit(run(main, PROG))
