"""CPU benchmark of the N-pair loss against an InnerProduct yardstick (issue 6).

For each batch size N, feature size D and mining, one pycaffe net holds, on the same
N x D input X (L2-normalised rows, `--per-class` samples per label, labels shuffled):

  ip      InnerProduct(num_output=N) on X: three GEMMs of N x N x D, the yardstick;
  cpp     the C++ NPairMultiClassLoss layer;
  python  the Python-layer fallback (npair_loss, NumPy: pycaffe runs on CPU here);

and, when torch imports, the same loss (mining and monitors included) with PyTorch CPU
autograd (`torch`), skipped cleanly otherwise. Each figure is the median over
`--repeats` of one forward + backward (ms); within a repeat the implementations run
interleaved, in a rotating order, so background load hits them alike. Every figure is
also given as a ratio to the InnerProduct time of the same run.

The loss layers get the usage block's tops (loss, R@1, R@5, R@10, feature_asum) unless
`--tops 1`. Minings: `rand` (every pair, the defaults) and `usage` (the seed's
npair_loss_param: GLOBAL RELATIVE_HARD positives, LOCAL HARD negatives).

BLAS threads: `--threads T` (default: $OPENBLAS_NUM_THREADS, else 1) sets
OPENBLAS_NUM_THREADS (Caffe's OpenBLAS and NumPy's), OMP_NUM_THREADS and
MKL_NUM_THREADS before anything loads BLAS, and torch.set_num_threads(T): the layer and
its yardstick always share one setting.

    source build/env.sh
    python3 benchmarks/cpu/bench_npair.py                      # the full table
    python3 benchmarks/cpu/bench_npair.py -n 1024 -d 512 --repeats 9
"""
import argparse
import math
import os
import platform
import statistics
import sys
import tempfile
import time

MININGS = {
    'rand': '',
    'usage': ('margin_ident: 0 margin_diff: -0.05 identsn: -0.0 diffsn: -0.3 '
              'ap_mining_region: GLOBAL ap_mining_method: RELATIVE_HARD '
              'an_mining_region: LOCAL an_mining_method: HARD'),
}
IMPLS = ('ip', 'cpp', 'python', 'torch')
LABELS = {'ip': 'InnerProduct', 'cpp': 'C++ layer', 'python': 'Python (NumPy)',
          'torch': 'PyTorch autograd'}
TOP_NAMES = ('loss', 'r1', 'r5', 'r10', 'asum')


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description='Time forward+backward of NPairMultiClassLoss (C++ and the Python '
                    'fallback), an InnerProduct(num_output=N) yardstick on the same '
                    'input, and PyTorch CPU autograd of the same loss if torch imports.')
    p.add_argument('-n', '--batch', type=int, nargs='+', default=[256, 1024, 4096],
                   help='batch sizes N (default: 256 1024 4096)')
    p.add_argument('-d', '--dim', type=int, nargs='+', default=[64, 512],
                   help='feature sizes D (default: 64 512)')
    p.add_argument('-m', '--mining', nargs='+', choices=sorted(MININGS),
                   default=['rand', 'usage'], help='minings (default: rand usage)')
    p.add_argument('--impl', nargs='+', choices=IMPLS, default=list(IMPLS),
                   help='implementations to time (default: all; ip is always timed)')
    p.add_argument('--repeats', type=int, default=7,
                   help='timed repeats per figure; the median is shown (default: 7)')
    p.add_argument('--min-time', type=float, default=0.2,
                   help='seconds each timed repeat lasts at least: short calls are '
                        'looped and averaged (default: 0.2)')
    p.add_argument('--threads', type=int, default=None,
                   help='BLAS / torch threads (default: $OPENBLAS_NUM_THREADS, else 1)')
    p.add_argument('--per-class', type=int, default=2,
                   help='samples per label in the batch (default: 2, the N-pair batch)')
    p.add_argument('--tops', type=int, choices=(1, 5), default=5,
                   help='tops of the loss layers: 5 as in the usage block, or the loss '
                        'alone (default: 5)')
    p.add_argument('--split', action='store_true',
                   help='also print the forward and backward medians separately')
    p.add_argument('--seed', type=int, default=1701)
    args = p.parse_args(argv)
    if args.threads is None:
        args.threads = int(os.environ.get('OPENBLAS_NUM_THREADS', '1'))
    if 'ip' not in args.impl:
        args.impl.insert(0, 'ip')
    return args


def set_threads(threads):
    """Before numpy, caffe or torch load a BLAS."""
    for var in ('OPENBLAS_NUM_THREADS', 'OMP_NUM_THREADS', 'MKL_NUM_THREADS'):
        os.environ[var] = str(threads)


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
    import numpy
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
        self.params = dict(_parse_mining(MININGS[mining]))
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


def _parse_mining(text):
    """'key: value ...' into (key, value) pairs, floats as float32 values."""
    import numpy
    words = text.split()
    defaults = {'margin_ident': 0.0, 'margin_diff': 0.0, 'identsn': -1.0, 'diffsn': -1.0,
                'ap_mining_region': 'LOCAL', 'ap_mining_method': 'RAND',
                'an_mining_region': 'LOCAL', 'an_mining_method': 'RAND'}
    for key, value in zip(words[::2], words[1::2]):
        key = key.rstrip(':')
        defaults[key] = (value if key.endswith(('_region', '_method'))
                         else float(numpy.float32(float(value))))
    return defaults.items()


def _relative_position(n, sn):
    """Spec section 3: pos(n, sn), n a float64 tensor."""
    torch = sys.modules['torch']
    p = (n - 1 - math.floor(sn)) if sn >= 0 else torch.trunc(n - 1 + sn * n)
    return torch.clamp(torch.minimum(p, n - 1), min=0).long()


def _torch_threshold(torch, S, pos, neg, region, method, sn, positives):
    """t+ (positives) or t- per row, float64, shape (N, 1) (spec section 3)."""
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
        k = _relative_position(counts, sn).clamp(max=S.shape[1] - 1)
        t = v.sort(1).values.gather(1, k[:, None])
    else:
        total = counts.sum()
        if total == 0:
            return torch.full((1, 1), inf, dtype=torch.float64)
        k = int(_relative_position(total, sn))
        t = v.reshape(-1).kthvalue(k + 1).values.reshape(1, 1)
    return t.double()


_KEEP = {'HARD': ('lt', 'gt'), 'EASY': ('ge', 'le'), 'RELATIVE_HARD': ('le', 'ge'),
         'RELATIVE_EASY': ('ge', 'le')}


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
        if p['ap_mining_method'] != 'RAND':
            t = _torch_threshold(torch, Sd, pos, neg, p['ap_mining_region'],
                                 p['ap_mining_method'], p['identsn'], True)
            rule = getattr(torch, _KEEP[p['ap_mining_method']][0])
            keep_pos = pos & rule(Sd.double(), t + p['margin_ident'])
        if p['an_mining_method'] != 'RAND':
            t = _torch_threshold(torch, Sd, pos, neg, p['an_mining_region'],
                                 p['an_mining_method'], p['diffsn'], False)
            rule = getattr(torch, _KEEP[p['an_mining_method']][1])
            keep_neg = neg & rule(Sd.double(), t + p['margin_diff'])
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


def target_lines(results):
    """Issue 6's targets, checked on this run: {(N, D, mining): {impl: seconds}}."""
    lines = []

    def check(what, ratios, limit):
        if ratios:
            worst = max(ratios)
            shown = ', '.join(f'{r:.2f}' for r in ratios)
            lines.append(f'target {what} <= {limit}: {"met" if worst <= limit else "MISSED"} '
                         f'({shown})')

    for d, limit in ((512, 1.0), (64, 1.5)):
        check(f'C++ / InnerProduct at N=1024, D={d}',
              [t['cpp'] / t['ip'] for (n, dd, _), t in results.items()
               if n == 1024 and dd == d and 'cpp' in t], limit)
    check('Python / C++', [t['python'] / t['cpp'] for t in results.values()
                           if 'python' in t and 'cpp' in t], 2.0)
    check('C++ / PyTorch at every size',
          [t['cpp'] / t['torch'] for t in results.values() if 'torch' in t and 'cpp' in t],
          1.0)
    return lines


def machine_line(threads):
    model = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    model = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    return (f'machine: {model}, {os.cpu_count()} cores; OPENBLAS_NUM_THREADS='
            f'{os.environ["OPENBLAS_NUM_THREADS"]}, torch threads {threads}')


def main(argv=None):
    args = parse_args(argv)
    set_threads(args.threads)
    os.environ.setdefault('GLOG_minloglevel', '2')  # no net set-up logs
    import numpy
    import caffe
    caffe.set_mode_cpu()
    torch = None
    if 'torch' in args.impl:
        try:
            import torch
            torch.set_num_threads(args.threads)
        except ImportError:
            print('torch: not installed, skipped (pip install torch to include it)')
            args.impl.remove('torch')
    versions = f'numpy {numpy.__version__}' + (f', torch {torch.__version__}' if torch else '')
    print(machine_line(args.threads))
    print(f'{versions}; load average at start: '
          + ' '.join(f'{v:.2f}' for v in os.getloadavg()))
    print(f'median of {args.repeats} interleaved repeats, each >= {args.min_time} s; '
          f'forward+backward in ms, (x IP) = ratio to the InnerProduct time; '
          f'{args.per_class} samples per label, {args.tops} top(s)')
    print()
    cols = [c for c in IMPLS if c in args.impl]
    head = ['N', 'D', 'mining'] + [LABELS[c] for c in cols]
    if 'python' in cols and 'cpp' in cols:
        head.append('Py / C++')
    if 'torch' in cols and 'cpp' in cols:
        head.append('C++ / torch')
    rows = []
    results = {}
    notes = []
    with tempfile.TemporaryDirectory(prefix='npair_bench_') as tmp:
        for n in args.batch:
            for d in args.dim:
                x, y = make_batch(n, d, args.per_class, args.seed)
                for mining in args.mining:
                    path = os.path.join(tmp, f'net_{n}_{d}_{mining}.prototxt')
                    with open(path, 'w') as f:
                        f.write(net_prototxt(n, d, mining, args.tops, cols))
                    net = caffe.Net(path, caffe.TRAIN)
                    net.blobs['x'].data[...] = x
                    net.blobs['y'].data[...] = y
                    net.forward()   # Split layers share X and the labels with their tops
                    timers = {c: CaffeLayerTimer(net, c) for c in cols if c != 'torch'}
                    if 'torch' in cols:
                        timers['torch'] = TorchTimer(torch, x, y, mining, args.tops)
                    res = time_interleaved(timers, args.repeats, args.min_time)
                    agree = check_agreement(timers)
                    ip = res['ip'][0]
                    row = [str(n), str(d), mining]
                    for c in cols:
                        ms = res[c][0] * 1e3
                        row.append(f'{ms:.2f}' if c == 'ip' else
                                   f'{ms:.2f} ({res[c][0] / ip:.2f}x)')
                    if 'python' in cols and 'cpp' in cols:
                        row.append(f'{res["python"][0] / res["cpp"][0]:.2f}')
                    if 'torch' in cols and 'cpp' in cols:
                        row.append(f'{res["cpp"][0] / res["torch"][0]:.2f}')
                    rows.append(row)
                    results[(n, d, mining)] = {c: res[c][0] for c in cols}
                    print(' | '.join(row), flush=True)
                    if args.split:
                        print('    fwd / bwd ms: ' + ', '.join(
                            f'{c} {res[c][1] * 1e3:.2f} / {res[c][2] * 1e3:.2f}'
                            for c in cols), flush=True)
                    for name, (dloss, dgrad, dmon) in agree.items():
                        if dloss > 1e-4 or dgrad > 1e-3 or dmon > 1e-5:
                            notes.append(f'N={n} D={d} {mining}: {name} differs from C++ '
                                         f'(loss {dloss:.1e} rel, gradient {dgrad:.1e} of '
                                         f'its max, monitors {dmon:.1e})')
                    del net, timers
    print()
    print('| ' + ' | '.join(head) + ' |')
    print('|' + '---|' * len(head))
    for row in rows:
        print('| ' + ' | '.join(row) + ' |')
    print()
    print('load average at end: ' + ' '.join(f'{v:.2f}' for v in os.getloadavg()))
    for line in target_lines(results):
        print(line)
    for note in notes:
        print('note: ' + note)
    if not notes:
        print('all implementations agree with the C++ layer (loss 1e-4 rel, '
              'gradient 1e-3 of its max, monitors 1e-5)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
