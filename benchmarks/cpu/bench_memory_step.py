"""What a CrossBatchMemory costs a training step: forward + backward of the glyphs
example's npair net against its npair_xbm net with a full memory (16,384 rows by
default), at 1 thread and at every core.

Both TRAIN nets are built in one pycaffe process per thread count (OMP_NUM_THREADS and
OPENBLAS_NUM_THREADS set to it), with no warm-up, and run until the memory is full
(size / N passes and one more, since a pass hands out what was stored before it;
the npair net as many). The full-memory steps are then timed in
rounds, the two nets taking turns within each round, so that background load hits
both alike; each figure is the median over the rounds of the mean step of a round.
A step is what `caffe time` times: every layer's Forward and Backward, the data layer
included, no solver. Needs the glyphs data (python -m npair_examples.glyphs --out
runs/glyphs/data) and pycaffe (source build/env.sh).

    python3 benchmarks/cpu/bench_memory_step.py              # size 16384, 10 rounds of 5
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from npair_examples import glyph_nets
from npair_loss.cli import ArgumentParser, UsageError, run

PROG = 'python3 benchmarks/cpu/bench_memory_step.py'
TARGET = 1.25   # the step with a full memory against the step without
MODELS = ('npair', 'npair_xbm')


def parse_args(argv=None):
    p = ArgumentParser(prog=PROG, description=__doc__.split('\n\n')[0],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data', default=glyph_nets.DATA,
                   help='the glyphs data folder (default: %(default)s)')
    p.add_argument('--size', type=int, default=glyph_nets.MEMORY_SIZE,
                   help='memory rows (default: %(default)s)')
    p.add_argument('--rounds', type=int, default=10,
                   help='timed rounds, the nets taking turns in each (default: %(default)s)')
    p.add_argument('-T', '--timed', type=int, default=5,
                   help='steps of each net a round (default: %(default)s)')
    p.add_argument('--threads', type=int, nargs='+', default=None,
                   help=f'thread counts (default: 1 and all {os.cpu_count()} cores)')
    p.add_argument('--worker', type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if min(args.size, args.timed, args.rounds) < 1:
        raise UsageError('--size, --rounds and --timed must be at least 1')
    if not os.path.exists(os.path.join(args.data, 'train.txt')):
        raise UsageError(f'{args.data}: no train.txt; render the data first '
                         '(python -m npair_examples.glyphs --out runs/glyphs/data)')
    args.threads = args.threads or sorted({1, os.cpu_count() or 1})
    if min(args.threads) < 1:
        raise UsageError(f'--threads must be at least 1, got {min(args.threads)}')
    args.data = args.data.rstrip('/') + '/'
    return args


def steps_seconds(net, steps):
    """Mean seconds of one forward + backward over `steps` of them."""
    start = time.perf_counter()
    for _ in range(steps):
        net.forward()
        net.backward()
    return (time.perf_counter() - start) / steps


def measure(args):
    """The worker: both nets at this process's thread count; one JSON line."""
    import caffe
    caffe.set_mode_cpu()
    with open(os.path.join(args.data, 'train.txt')) as f:
        classes = len({line.split()[-1] for line in f if line.strip()})
    batch = glyph_nets.CLASSES_PER_BATCH * glyph_nets.IMAGES_PER_CLASS
    fill = -(-args.size // batch) + 1   # the tops hand out what was stored before a pass
    nets = {}
    with tempfile.TemporaryDirectory(prefix='memory_step_') as tmp:
        for model in MODELS:
            path = os.path.join(tmp, model + '.prototxt')
            with open(path, 'w') as f:
                f.write(glyph_nets.train_net(model, classes, args.data,
                                             memory_size=args.size, memory_warmup=0))
            nets[model] = caffe.Net(path, caffe.TRAIN)
    for net in nets.values():
        steps_seconds(net, fill)
    rows = nets['npair_xbm'].blobs['memory_label'].count
    if rows != args.size:
        raise RuntimeError(f'the memory holds {rows} rows after filling, not {args.size}')
    rounds = {m: [] for m in MODELS}
    for r in range(args.rounds):
        for model in (MODELS if r % 2 == 0 else MODELS[::-1]):
            rounds[model].append(steps_seconds(nets[model], args.timed))
    print(json.dumps({m: statistics.median(s) * 1e3 for m, s in rounds.items()}), flush=True)


def main(argv=None):
    args = parse_args(argv)
    if args.worker is not None:
        measure(args)
        return 0
    batch = glyph_nets.CLASSES_PER_BATCH * glyph_nets.IMAGES_PER_CLASS
    print(f'glyphs npair against npair_xbm with a {args.size}-row memory, full (no warm-up, '
          f'{-(-args.size // batch) + 1} passes of {batch} first); {args.rounds} rounds of '
          f'{args.timed} steps of each net, taking turns')
    print('load average at start: ' + ' '.join(f'{v:.2f}' for v in os.getloadavg()))
    worst = 0
    for threads in args.threads:
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
                   GLOG_minloglevel='2')
        argv_worker = [sys.executable, os.path.abspath(__file__), '--data', args.data,
                       '--size', str(args.size), '--rounds', str(args.rounds),
                       '--timed', str(args.timed), '--worker', str(threads)]
        p = subprocess.run(argv_worker, env=env, capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit(f'{PROG}: the measuring process for {threads} thread(s) failed: '
                     + (p.stderr.strip().splitlines() or ['no output'])[-1])
        step = json.loads(p.stdout.strip().splitlines()[-1])
        ratio = step['npair_xbm'] / step['npair']
        worst = max(worst, ratio)
        print(f'{threads} thread(s): npair {step["npair"]:.1f} ms, npair_xbm '
              f'{step["npair_xbm"]:.1f} ms a step: {ratio:.3f}x', flush=True)
    print('load average at end: ' + ' '.join(f'{v:.2f}' for v in os.getloadavg()))
    print(f'target npair_xbm / npair step <= {TARGET}: '
          + ('met' if worst <= TARGET else 'MISSED') + f' (worst {worst:.3f})')
    return 0


if __name__ == '__main__':
    sys.exit(run(main, PROG))
