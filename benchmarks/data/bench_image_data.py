"""Throughput of NPairImageData against ImageData on the same images.

Writes `--classes x --per-class` JPEG images (`--size` pixels square, smooth random
content, so decoding costs what a photograph's does) and one `path label` list, then
times two data-only pycaffe nets reading that list with the same transform_param
(crop and mirror) and the same batch size:

  ImageData        batch_size P K, shuffle: true (the yardstick);
  NPairImageData   classes_per_batch P, images_per_class K.

Each layer prefetches on its own thread, so a forward of a data-only net waits for
the next batch: the time per forward is the layer's throughput. For every repeat each
net is built afresh (the other net is gone, so no second prefetch thread competes),
warmed up past its prefetch queue, and timed over `--batches` forwards; the two run
in alternating order (AB, BA, ...). Printed: the median time per batch of each, and
NPairImageData's throughput as a ratio to ImageData's: the median over repeats of the
ratio within a repeat (the two measurements back to back, so that a change of load
between repeats cancels), against the target (at least 0.90, i.e. within 10%),
with the load average before and after, since other work on the machine slows both.

    source build/env.sh
    python3 benchmarks/data/bench_image_data.py
    python3 benchmarks/data/bench_image_data.py --classes 50 --per-class 8 --repeats 3
"""
import os
import statistics
import sys
import tempfile
import time

from npair_loss.cli import ArgumentParser, UsageError, run

PROG = 'python3 benchmarks/data/bench_image_data.py'
TARGET = 0.90


def parse_args(argv=None):
    p = ArgumentParser(
        prog=PROG,
        description='Time NPairImageData against ImageData (data-only pycaffe nets, '
                    'same images, transform and batch size) and print the throughput '
                    'ratio.')
    p.add_argument('--classes', type=int, default=100, help='classes (default 100)')
    p.add_argument('--per-class', type=int, default=20,
                   help='images per class (default 20)')
    p.add_argument('--size', type=int, default=256,
                   help='side of the square JPEGs in pixels (default 256)')
    p.add_argument('--crop', type=int, default=224,
                   help='transform_param.crop_size (default 224; 0 for none)')
    p.add_argument('-p', '--classes-per-batch', type=int, default=32,
                   help='P (default 32)')
    p.add_argument('-k', '--images-per-class', type=int, default=2,
                   help='K (default 2); the batch is P x K images for both layers')
    p.add_argument('--batches', type=int, default=20,
                   help='timed forwards per repeat (default 20)')
    p.add_argument('--repeats', type=int, default=9, help='repeats (default 9)')
    args = p.parse_args(argv)
    for name in ('classes', 'per_class', 'size', 'classes_per_batch',
                 'images_per_class', 'batches', 'repeats'):
        if getattr(args, name) < 1:
            raise UsageError(f'--{name.replace("_", "-")} must be at least 1')
    if args.classes < args.classes_per_batch:
        raise UsageError('--classes must be at least --classes-per-batch')
    if args.per_class < args.images_per_class:
        raise UsageError('--per-class must be at least --images-per-class')
    if args.crop > args.size:
        raise UsageError('--crop must not exceed --size')
    return args


def write_images(root, classes, per_class, size, seed=0):
    """JPEGs of smooth random colour fields plus a little noise; returns the list path."""
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(seed)
    coarse = max(2, size // 32)
    lines = []
    for c in range(classes):
        for i in range(per_class):
            field = rng.uniform(0, 255, (coarse, coarse, 3)).astype(np.uint8)
            image = Image.fromarray(field).resize((size, size), Image.BICUBIC)
            pixels = np.asarray(image, dtype=np.int16) + rng.integers(-12, 13, (size, size, 3))
            path = os.path.join(root, f'{c:04d}_{i:03d}.jpg')
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)
            lines.append(f'{path} {c}\n')
    list_path = os.path.join(root, 'list.txt')
    with open(list_path, 'w') as f:
        f.writelines(lines)
    return list_path


def net_text(layer, list_path, args):
    batch = args.classes_per_batch * args.images_per_class
    transform = f'transform_param {{ mirror: true crop_size: {args.crop} }}'
    if layer == 'ImageData':
        params = f'image_data_param {{ source: "{list_path}" batch_size: {batch} shuffle: true }}'
    else:
        params = (f'image_data_param {{ source: "{list_path}" }} '
                  f'npair_image_data_param {{ classes_per_batch: {args.classes_per_batch} '
                  f'images_per_class: {args.images_per_class} }}')
    return (f'name: "{layer}_only"\nlayer {{ name: "data" type: "{layer}" top: "data" '
            f'top: "label" {transform} {params} }}\n')


def time_layer(caffe, prototxt, args):
    """Seconds per forward over args.batches forwards, after draining the queue."""
    net = caffe.Net(prototxt, caffe.TRAIN)
    for _ in range(6):  # the 4 batches prefetched during set-up, then steady state
        net.forward()
    start = time.perf_counter()
    for _ in range(args.batches):
        net.forward()
    elapsed = time.perf_counter() - start
    del net
    return elapsed / args.batches


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault('GLOG_minloglevel', '2')
    import caffe
    caffe.set_mode_cpu()
    batch = args.classes_per_batch * args.images_per_class
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix='npair_data_bench_') as root:
        list_path = write_images(root, args.classes, args.per_class, args.size)
        prototxts = {}
        for layer in ('ImageData', 'NPairImageData'):
            prototxts[layer] = os.path.join(root, f'{layer}.prototxt')
            with open(prototxts[layer], 'w') as f:
                f.write(net_text(layer, list_path, args))
        times = {'ImageData': [], 'NPairImageData': []}
        for r in range(args.repeats):
            order = ('ImageData', 'NPairImageData')[::1 if r % 2 == 0 else -1]
            for layer in order:
                times[layer].append(time_layer(caffe, prototxts[layer], args))
    load_end = os.getloadavg()

    ms = {layer: 1000 * statistics.median(t) for layer, t in times.items()}
    ratios = sorted(a / b for a, b in zip(times['ImageData'], times['NPairImageData']))
    ratio = statistics.median(ratios)
    print(f'{args.classes * args.per_class} JPEGs ({args.classes} classes x {args.per_class}, '
          f'{args.size} x {args.size}), crop {args.crop} + mirror, batch {batch} '
          f'(P {args.classes_per_batch} x K {args.images_per_class}); median of '
          f'{args.repeats} repeats of {args.batches} forwards')
    print(f'{"layer":<16} {"ms / batch":>10} {"images / s":>11}   per repeat (ms / batch)')
    for layer in ('ImageData', 'NPairImageData'):
        each = ' '.join(f'{1000 * t:.1f}' for t in times[layer])
        print(f'{layer:<16} {ms[layer]:>10.1f} {1000 * batch / ms[layer]:>11.0f}   {each}')
    verdict = 'met' if ratio >= TARGET else 'MISSED'
    print(f'NPairImageData throughput / ImageData throughput: {ratio:.3f}, median of the '
          f'{args.repeats} repeats\' ratios ({ratios[0]:.3f} to {ratios[-1]:.3f}); '
          f'target >= {TARGET:.2f}: {verdict}')
    print(f'load average (1, 5, 15 min): start {load_start[0]:.2f} {load_start[1]:.2f} '
          f'{load_start[2]:.2f}, end {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f}; '
          f'{os.cpu_count()} CPUs')
    return 0


if __name__ == '__main__':
    sys.exit(run(main, PROG))
