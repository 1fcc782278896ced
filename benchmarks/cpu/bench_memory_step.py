"""What a CrossBatchMemory costs a training step: `caffe time` of the glyphs example's
npair net against its npair_xbm net with a full memory (16,384 rows by default), at 1
thread and at every core.

caffe time runs the TRAIN net forward and backward, with no solver, so the memory fills
as it runs: with no warm-up, by N rows a pass, full after size / N passes. Each net is
timed over F and over F + T iterations (F = size / N, the filling) and the step with a
full memory is the difference: (F + T) x avg(F + T) - F x avg(F), over T. The npair net
is timed the same way, so both figures are made alike. Needs the glyphs data
(python -m npair_examples.glyphs --out runs/glyphs/data) and `caffe` on PATH
(source build/env.sh).

    python3 benchmarks/cpu/bench_memory_step.py              # -T 50, size 16384
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

from npair_examples import glyph_nets
from npair_loss.cli import ArgumentParser, UsageError, run

PROG = 'python3 benchmarks/cpu/bench_memory_step.py'
TARGET = 1.25   # the step with a full memory against the step without


def parse_args(argv=None):
    p = ArgumentParser(prog=PROG, description=__doc__.split('\n\n')[0],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data', default=glyph_nets.DATA,
                   help='the glyphs data folder (default: %(default)s)')
    p.add_argument('--size', type=int, default=glyph_nets.MEMORY_SIZE,
                   help='memory rows (default: %(default)s)')
    p.add_argument('-T', '--timed', type=int, default=50,
                   help='steps timed with a full memory (default: %(default)s)')
    p.add_argument('--threads', type=int, nargs='+', default=None,
                   help=f'thread counts (default: 1 and all {os.cpu_count()} cores)')
    args = p.parse_args(argv)
    if args.size < 1 or args.timed < 1:
        raise UsageError('--size and --timed must be at least 1')
    if not os.path.exists(os.path.join(args.data, 'train.txt')):
        raise UsageError(f'{args.data}: no train.txt; render the data first '
                         '(python -m npair_examples.glyphs --out runs/glyphs/data)')
    args.threads = args.threads or sorted({1, os.cpu_count() or 1})
    args.data = args.data.rstrip('/') + '/'
    return args


def average_ms(model_path, iterations, threads):
    """caffe time's average forward-backward of the TRAIN net, in ms."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               GLOG_logtostderr='1')
    p = subprocess.run(['caffe', 'time', '-model', model_path, '-iterations', str(iterations)],
                       env=env, capture_output=True, text=True)
    found = re.search(r'Average Forward-Backward: ([0-9.]+) ms', p.stderr)
    if p.returncode != 0 or not found:
        raise UsageError(f'caffe time -model {model_path} failed: '
                         + (p.stderr.strip().splitlines() or ['no output'])[-1])
    return float(found.group(1))


def full_step_ms(model_path, fill, timed, threads):
    """The step time once `fill` steps have gone by, from two caffe time runs."""
    short = average_ms(model_path, fill, threads)
    long = average_ms(model_path, fill + timed, threads)
    return ((fill + timed) * long - fill * short) / timed


def main(argv=None):
    args = parse_args(argv)
    batch = glyph_nets.CLASSES_PER_BATCH * glyph_nets.IMAGES_PER_CLASS
    fill = -(-args.size // batch)   # passes until the memory is full
    with open(os.path.join(args.data, 'train.txt')) as f:
        classes = len({line.split()[-1] for line in f if line.strip()})
    print(f'glyphs npair against npair_xbm with a {args.size}-row memory (no warm-up: full '
          f'after {fill} passes of {batch}); {args.timed} steps timed after the filling')
    with tempfile.TemporaryDirectory(prefix='memory_step_') as tmp:
        nets = {}
        for model in ('npair', 'npair_xbm'):
            nets[model] = os.path.join(tmp, model + '.prototxt')
            with open(nets[model], 'w') as f:
                f.write(glyph_nets.train_net(model, classes, args.data,
                                             memory_size=args.size, memory_warmup=0))
        print('load average at start: ' + ' '.join(f'{v:.2f}' for v in os.getloadavg()))
        worst = 0
        for threads in args.threads:
            step = {m: full_step_ms(path, fill, args.timed, threads)
                    for m, path in nets.items()}
            ratio = step['npair_xbm'] / step['npair']
            worst = max(worst, ratio)
            print(f'{threads} thread(s): npair {step["npair"]:.1f} ms, npair_xbm '
                  f'{step["npair_xbm"]:.1f} ms a step: {ratio:.3f}x')
        print('load average at end: ' + ' '.join(f'{v:.2f}' for v in os.getloadavg()))
    print(f'target npair_xbm / npair step <= {TARGET}: '
          + ('met' if worst <= TARGET else 'MISSED') + f' (worst {worst:.3f})')
    return 0


if __name__ == '__main__':
    sys.exit(run(main, PROG))
