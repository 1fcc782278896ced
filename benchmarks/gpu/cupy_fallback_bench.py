#!/usr/bin/env python3
"""Times the Python fallback's math on the GPU (npair_loss.npair_math with CuPy): one
forward (loss, R@1/5/10, feature_asum, pair weights) and one gradient, at the sizes and
minings of the `caffe time` nets (benchmarks/gpu/make_prototxts.py), beside a CuPy
X W^T of the same shape as the InnerProduct there.

    PYTHONPATH=python python3 benchmarks/gpu/cupy_fallback_bench.py [--sizes 1024 4096]

Times are CUDA-event medians over --repeat runs after --warmup runs, in ms. The forward
includes the fallback's own host round trips (float(...) of the loss and monitors),
as the Python layer does them.
"""
import os
import statistics
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..',
                                'python'))
from npair_loss import npair_math  # noqa: E402
from npair_loss.cli import ArgumentParser, UsageError, run  # noqa: E402
from npair_loss.params import NPairParams  # noqa: E402

PROG = 'python3 benchmarks/gpu/cupy_fallback_bench.py'
MININGS = {
    'usage': NPairParams(margin_ident=0.0, margin_diff=float(np.float32(-0.05)),
                         identsn=-0.0, diffsn=float(np.float32(-0.3)),
                         ap_mining_region='GLOBAL', ap_mining_method='RELATIVE_HARD',
                         an_mining_region='LOCAL', an_mining_method='HARD'),
    'rand': NPairParams(margin_ident=0.0, margin_diff=0.0, identsn=-1.0, diffsn=-1.0,
                        ap_mining_region='LOCAL', ap_mining_method='RAND',
                        an_mining_region='LOCAL', an_mining_method='RAND'),
}


def time_ms(cp, fn, warmup, repeat):
    for _ in range(warmup):
        fn()
    start, stop = cp.cuda.Event(), cp.cuda.Event()
    times = []
    for _ in range(repeat):
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, stop))
    return statistics.median(times)


def main(argv=None):
    parser = ArgumentParser(prog=PROG, description=__doc__.split('\n\n')[0])
    parser.add_argument('--sizes', type=int, nargs='+', default=[1024, 4096])
    parser.add_argument('--dim', type=int, default=512)
    parser.add_argument('--classes', type=int, default=16)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--repeat', type=int, default=20)
    args = parser.parse_args(argv)
    for n in args.sizes:
        if n % args.classes:
            raise UsageError(f'N = {n} is not a multiple of --classes {args.classes}')
    import cupy as cp

    print(f'CuPy {cp.__version__}, {cp.cuda.runtime.getDeviceProperties(0)["name"].decode()}')
    print(f'{"N":>6} {"D":>5} {"what":<22} {"ms":>9}')
    for n in args.sizes:
        rng = cp.random.default_rng(1)
        X = (rng.standard_normal((n, args.dim), dtype=cp.float32) * 0.05).astype(cp.float32)
        labels = cp.repeat(cp.arange(args.classes, dtype=cp.float32), n // args.classes)
        W = (rng.standard_normal((n, args.dim), dtype=cp.float32) * 0.05).astype(cp.float32)
        for name, params in MININGS.items():
            state = {}

            def forward():
                state['out'] = npair_math.forward(X, labels, params)

            def backward():
                npair_math.gradient(X, state['out'].weights, 1.0)

            f = time_ms(cp, forward, args.warmup, args.repeat)
            b = time_ms(cp, backward, args.warmup, args.repeat)
            print(f'{n:>6} {args.dim:>5} {"npair " + name + " forward":<22} {f:>9.3f}')
            print(f'{n:>6} {args.dim:>5} {"npair " + name + " backward":<22} {b:>9.3f}')
        ip = time_ms(cp, lambda: X @ W.T, args.warmup, args.repeat)
        print(f'{n:>6} {args.dim:>5} {"X W^T (IP forward)":<22} {ip:>9.3f}')
        del X, W, labels, state
        cp.get_default_memory_pool().free_all_blocks()
    return 0


if __name__ == '__main__':
    sys.exit(run(main, PROG))
