"""Single-precision GEMM of each BLAS the fork could run on, against the CPU's peak,
at 1 thread and at every core; and Caffe's InnerProduct yardstick through `caffe time`.

Candidates, each loaded with ctypes (cblas_sgemm) in a process of its own, since a
BLAS fixes its kernels and threads when it loads:

  OpenBLAS       the system's libopenblas (what Caffe links), with no OPENBLAS_CORETYPE:
                 the kernels its own CPU detection picks
  OpenBLAS <X>   the same library with OPENBLAS_CORETYPE=X, for each core the CPU's
                 flags allow: the cores of pycaffe's openblas_coretype.CORES (the first
                 that fits is the fork's default) and Cooperlake where there is
                 avx512_bf16
  BLIS           the system's libblis (it picks its kernels from the CPU's features)
  MKL            Intel's libmkl_rt, given with --mkl (e.g. from `pip install mkl` in a
                 scratch virtual environment: VENV/lib/libmkl_rt.so.N)
  NumPy          numpy.matmul on NumPy's own BLAS, as it detects the CPU (a reference)

Shapes (M x N x K, row-major as Caffe calls them): 1024 x 1024 x 512 (NumPy's
(1024 x 512) @ (512 x 1024)); the three GEMMs of InnerProduct forward + backward at
batch 1024, D = 512, num_output 1024 (forward x W^T, weight gradient dy^T x added to
W's diff, data gradient dy W); the InnerProduct forward at D = 64. Each figure is the
median, over --rounds rounds that run the candidates in turn, of the median GFLOPS of
calls repeated for at least --min-time seconds after two warm-up calls (a machine
shared with other work slows some rounds). The peak is measured, not looked up:
benchmarks/cpu/fma_peak.c, compiled with `cc`, runs fused multiply-adds on independent
registers of the widest vectors the CPU has, one loop per thread; the best of
--rounds runs.

The yardstick: `caffe time` of an InnerProduct (num_output 1024, batch 1024, D = 512
and 64, forward + backward) under OpenBLAS's own choice (named explicitly, since the
fork's caffe tool would otherwise choose) and under each core above, in GFLOPS of its
three GEMMs, the median of --rounds runs.

    source build/env.sh
    python3 benchmarks/cpu/bench_blas.py --mkl /tmp/mkl/lib/libmkl_rt.so.3
"""
import argparse
import ctypes
import ctypes.util
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from npair_loss.cli import UsageError, run

PROG = 'python3 benchmarks/cpu/bench_blas.py'
HERE = os.path.dirname(os.path.abspath(__file__))
ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112
# (label, A transposed, B transposed, M, N, K, beta): C = A B (+ C when beta is 1).
SHAPES = (
    ('1024x1024x512 (NumPy 1024x512 @ 512x1024)', False, False, 1024, 1024, 512, 0.0),
    ('IP D=512 forward: x W^T', False, True, 1024, 1024, 512, 0.0),
    ('IP D=512 weight grad: dy^T x', True, False, 1024, 512, 1024, 1.0),
    ('IP D=512 data grad: dy W', False, False, 1024, 512, 1024, 0.0),
    ('IP D=64 forward: x W^T', False, True, 1024, 1024, 64, 0.0),
)
IP_SHAPES = SHAPES[1:4]
IP_BATCH, IP_OUTPUTS, IP_DIMS = 1024, 1024, (512, 64)
TARGET_IP_GFLOPS = 75.0  # InnerProduct D = 512 at 1 thread under the fork's default
THREAD_VARS = ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS',
               'BLIS_NUM_THREADS')


class Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line through npair_loss.cli."""

    def error(self, message):
        raise UsageError(message)


def parse_args(argv):
    p = Parser(prog=PROG, description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--threads', type=int, nargs='+', default=None,
                   help='thread counts (default: 1 and all '
                        f'{os.cpu_count()} cores)')
    p.add_argument('--min-time', type=float, default=0.5,
                   help='seconds each shape is repeated for (default: 0.5)')
    p.add_argument('--rounds', type=int, default=3,
                   help='rounds of every candidate; the median is shown (default: 3)')
    p.add_argument('--mkl', metavar='LIBMKL_RT',
                   help="Intel MKL's libmkl_rt.so (left out without it)")
    p.add_argument('--iterations', type=int, default=20,
                   help='caffe time iterations of the InnerProduct (default: 20)')
    p.add_argument('--worker', help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return args
    if args.threads is None:
        args.threads = sorted({1, os.cpu_count() or 1})
    if min(args.threads) < 1:
        raise UsageError(f'--threads must be at least 1, got {min(args.threads)}')
    if not args.min_time > 0:
        raise UsageError(f'--min-time must be above 0, got {args.min_time}')
    if args.rounds < 1:
        raise UsageError(f'--rounds must be at least 1, got {args.rounds}')
    if args.iterations < 1:
        raise UsageError(f'--iterations must be at least 1, got {args.iterations}')
    if args.mkl and not os.path.isfile(args.mkl):
        raise UsageError(f'--mkl {args.mkl}: no such file')
    return args


# ---- the measuring process -------------------------------------------------------

def library_detail(kind, lib):
    """What the library says it is and which kernels it runs."""
    if kind == 'openblas':
        lib.openblas_get_config.restype = ctypes.c_char_p
        lib.openblas_get_corename.restype = ctypes.c_char_p
        return lib.openblas_get_corename().decode(), lib.openblas_get_config().decode()
    if kind == 'blis':
        lib.bli_arch_string.restype = ctypes.c_char_p
        lib.bli_info_get_version_str.restype = ctypes.c_char_p
        arch = lib.bli_arch_string(lib.bli_arch_query_id()).decode()
        return arch, f'BLIS {lib.bli_info_get_version_str().decode()}'
    if kind == 'mkl':
        class MKLVersion(ctypes.Structure):
            _fields_ = [('major', ctypes.c_int), ('minor', ctypes.c_int),
                        ('update', ctypes.c_int), ('status', ctypes.c_char_p),
                        ('build', ctypes.c_char_p), ('processor', ctypes.c_char_p),
                        ('platform', ctypes.c_char_p)]
        version = MKLVersion()
        lib.mkl_get_version(ctypes.byref(version))
        return (version.processor.decode(),
                f'MKL {version.major}.{version.minor}.{version.update} '
                f'({version.build.decode()})')
    import numpy
    try:
        import threadpoolctl
        info = [i for i in threadpoolctl.threadpool_info() if i['user_api'] == 'blas']
    except ImportError:
        info = []
    blas = info[0] if info else {}
    return (blas.get('architecture', '?'),
            f'NumPy {numpy.__version__}, {blas.get("internal_api", "?")} '
            f'{blas.get("version", "?")}')


def time_calls(call, min_time):
    """Median seconds of one call, repeated for at least min_time after two warm-ups."""
    call()
    call()
    times, start = [], time.perf_counter()
    while len(times) < 5 or time.perf_counter() - start < min_time:
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure(spec):
    """Worker: GFLOPS of every shape with one library, as one JSON line."""
    import numpy
    kind, min_time = spec['kind'], spec['min_time']
    lib = None if kind == 'numpy' else ctypes.CDLL(spec['path'])
    core, detail = library_detail(kind, lib)
    rng = numpy.random.default_rng(1)
    gflops = []
    for _, ta, tb, m, n, k, beta in SHAPES:
        a = rng.standard_normal((k, m) if ta else (m, k), dtype=numpy.float32)
        b = rng.standard_normal((n, k) if tb else (k, n), dtype=numpy.float32)
        c = numpy.zeros((m, n), numpy.float32)
        if kind == 'numpy':
            a_op, b_op = (a.T if ta else a), (b.T if tb else b)
            product = numpy.empty_like(c)

            def call():
                numpy.matmul(a_op, b_op, out=product)
                if beta:
                    c.__iadd__(product)
        else:
            lib.cblas_sgemm.restype = None
            args = (ROW_MAJOR, TRANS if ta else NO_TRANS, TRANS if tb else NO_TRANS,
                    m, n, k, ctypes.c_float(1.0), a.ctypes.data_as(ctypes.c_void_p),
                    a.shape[1], b.ctypes.data_as(ctypes.c_void_p), b.shape[1],
                    ctypes.c_float(beta), c.ctypes.data_as(ctypes.c_void_p), n)

            def call():
                lib.cblas_sgemm(*args)
        gflops.append(2.0 * m * n * k / time_calls(call, min_time) / 1e9)
    print(json.dumps({'core': core, 'detail': detail, 'gflops': gflops}))


# ---- the driver -------------------------------------------------------------------

def find_library(name, soname):
    path = ctypes.util.find_library(name)
    return path or soname


def cpu_flags_module():
    """pycaffe's openblas_coretype, loaded from its file (the package would load Caffe)."""
    import importlib.util
    spec = importlib.util.find_spec('caffe')
    if spec is None or not spec.submodule_search_locations:
        raise UsageError('pycaffe is not importable: source build/env.sh first')
    path = os.path.join(spec.submodule_search_locations[0], 'openblas_coretype.py')
    module_spec = importlib.util.spec_from_file_location('openblas_coretype', path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def candidates(args, coretype):
    """(column label, worker spec, OPENBLAS_CORETYPE or None) for every candidate."""
    flags = set(coretype.cpu_flags())
    openblas = find_library('openblas', 'libopenblas.so.0')
    cores = [core for core, needs in coretype.CORES if needs <= flags]
    if dict(coretype.CORES)['SkylakeX'] | {'avx512_bf16'} <= flags:
        cores.append('Cooperlake')  # OpenBLAS's own pick by features for such a CPU
    default = coretype.core_for_flags(flags)
    found = [('OpenBLAS', {'kind': 'openblas', 'path': openblas}, None)]
    for core in cores:
        label = f'OpenBLAS {core}' + (' (default)' if core == default else '')
        found.append((label, {'kind': 'openblas', 'path': openblas}, core))
    blis = ctypes.util.find_library('blis')
    if blis:
        found.append(('BLIS', {'kind': 'blis', 'path': blis}, None))
    if args.mkl:
        found.append(('MKL', {'kind': 'mkl', 'path': os.path.abspath(args.mkl)}, None))
    found.append(('NumPy', {'kind': 'numpy'}, None))
    return found, blis


def process_env(threads, coretype_value):
    env = dict(os.environ)
    for var in THREAD_VARS:
        env[var] = str(threads)
    env.pop('OPENBLAS_CORETYPE', None)
    if coretype_value:
        env['OPENBLAS_CORETYPE'] = coretype_value
    return env


def run_worker(spec, env):
    out = subprocess.run([sys.executable, os.path.abspath(__file__), '--worker',
                          json.dumps(spec)], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f'{PROG}: measuring {spec} failed:\n{out.stderr}')
    return json.loads(out.stdout.splitlines()[-1])


def measured_peak(threads, rounds):
    """{threads: (best GFLOPS, instructions)} from fma_peak.c, or {} without cc."""
    cc = shutil.which('cc')
    if not cc:
        return {}
    with tempfile.TemporaryDirectory(prefix='fma_peak_') as tmp:
        binary = os.path.join(tmp, 'fma_peak')
        subprocess.run([cc, '-O2', '-pthread', os.path.join(HERE, 'fma_peak.c'), '-o',
                        binary], check=True)
        peak = {}
        for t in threads:
            for _ in range(rounds):
                isa, _, gflops = subprocess.run([binary, str(t)], check=True, text=True,
                                                capture_output=True).stdout.split()
                peak[t] = max(peak.get(t, (0.0, isa)), (float(gflops), isa))
        return peak


def nominal_ghz():
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('cpu MHz'):
                    return float(line.split(':')[1]) / 1e3
    except OSError:
        pass
    return None


def caffe_time_ip(caffe, d, iterations, env):
    """Seconds of one InnerProduct forward + backward by `caffe time`."""
    net = (f'name: "ip_yardstick" force_backward: true\n'
           f'layer {{ name: "x" type: "Input" top: "x" input_param {{ shape {{ '
           f'dim: {IP_BATCH} dim: {d} }} }} }}\n'
           f'layer {{ name: "ip" type: "InnerProduct" bottom: "x" top: "y" '
           f'inner_product_param {{ num_output: {IP_OUTPUTS} '
           f'weight_filler {{ type: "gaussian" std: 0.01 }} }} }}\n')
    with tempfile.NamedTemporaryFile('w', suffix='.prototxt') as f:
        f.write(net)
        f.flush()
        env = dict(env, GLOG_minloglevel='0')
        out = subprocess.run([caffe, 'time', '-model', f.name, '-iterations',
                              str(iterations)], env=env, capture_output=True, text=True)
    found = re.search(r'Average Forward-Backward: ([0-9.]+) ms', out.stderr)
    if out.returncode != 0 or not found:
        sys.exit(f'{PROG}: caffe time failed:\n{out.stderr[-2000:]}')
    return float(found.group(1)) / 1e3


def sgemm_rounds(found, threads, args):
    """[(label, worker result with the median GFLOPS over the rounds)] per candidate."""
    rounds = [[run_worker(dict(spec, min_time=args.min_time), process_env(threads, core))
               for _, spec, core in found] for _ in range(args.rounds)]
    results = []
    for i, (label, _, _) in enumerate(found):
        runs = [r[i] for r in rounds]
        results.append((label, dict(runs[0], gflops=[
            statistics.median(run['gflops'][j] for run in runs) for j in range(len(SHAPES))])))
    return results


def sgemm_table(results, threads, peak):
    lines = [f'{threads} thread(s): sgemm GFLOPS (% of the measured peak)']
    lines += [f'  {label}: {r["detail"]}; kernels: {r["core"]}' for label, r in results]
    head = ['shape (M x N x K)'] + [label for label, _ in results]
    lines += ['', '| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for i, shape in enumerate(SHAPES):
        lines.append(f'| {shape[0]} | '
                     + ' | '.join(cell(r['gflops'][i], peak) for _, r in results) + ' |')
    flops = [2.0 * s[3] * s[4] * s[5] for s in IP_SHAPES]
    rows = [SHAPES.index(s) for s in IP_SHAPES]
    lines.append('| IP D=512 forward + backward (3 GEMMs) | ' + ' | '.join(
        cell(sum(flops) / sum(f / (r['gflops'][i] * 1e9) for f, i in zip(flops, rows))
             / 1e9, peak) for _, r in results) + ' |')
    return lines


def yardstick_table(caffe, settings, threads, args, peak, yardstick):
    """`caffe time` of the InnerProduct under each OPENBLAS_CORETYPE; GFLOPS also go
    into yardstick[threads, D, core]."""
    lines = [f'{threads} thread(s): caffe time, InnerProduct forward + backward, batch '
             f'{IP_BATCH}, num_output {IP_OUTPUTS}, {args.iterations} iterations: '
             'ms / GFLOPS (% of the measured peak)', '',
             '| D | ' + ' | '.join(label for label, _ in settings) + ' |',
             '|' + '---|' * (len(settings) + 1)]
    for d in IP_DIMS:
        seconds = [[caffe_time_ip(caffe, d, args.iterations, process_env(threads, core))
                    for _, core in settings] for _ in range(args.rounds)]
        row = []
        for i, (_, core) in enumerate(settings):
            s = statistics.median(r[i] for r in seconds)
            gflops = 3 * 2.0 * IP_BATCH * IP_OUTPUTS * d / s / 1e9
            yardstick[threads, d, core] = gflops
            row.append(f'{s * 1e3:.2f} / {cell(gflops, peak)}')
        lines.append(f'| {d} | ' + ' | '.join(row) + ' |')
    return lines


def cell(gflops, peak):
    return f'{gflops:.1f}' + (f' ({100 * gflops / peak:.0f}%)' if peak else '')


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.worker:
        measure(json.loads(args.worker))
        return 0
    caffe = shutil.which('caffe')
    if not caffe:
        raise UsageError('caffe is not on PATH: source build/env.sh first')
    coretype = cpu_flags_module()
    found, blis = candidates(args, coretype)
    print(f'load average at start: {" ".join(f"{v:.2f}" for v in os.getloadavg())}')
    peak = measured_peak(args.threads, args.rounds)
    ghz = nominal_ghz()
    for t, (gflops, isa) in sorted(peak.items()):
        per_cycle = (f'; {gflops / t / ghz:.0f} flops per cycle per core at the '
                     f'{ghz:.2f} GHz of /proc/cpuinfo, which turbo exceeds') if ghz else ''
        print(f'peak at {t} thread(s): {gflops:.1f} GFLOPS, the best of {args.rounds} runs '
              f'of benchmarks/cpu/fma_peak.c ({isa} fused multiply-adds{per_cycle})')
    if not peak:
        print('peak: not measured (no C compiler `cc` to build benchmarks/cpu/fma_peak.c)')
    if not blis:
        print('BLIS: not installed, its column is left out (apt-get install libblis4-pthread)')
    if not args.mkl:
        print('MKL: not given, its column is left out (--mkl VENV/lib/libmkl_rt.so.N)')

    yardstick = {}
    for threads in args.threads:
        results = sgemm_rounds(found, threads, args)
        p = peak.get(threads, (None,))[0]
        print()
        for line in sgemm_table(results, threads, p):
            print(line)
        print()
        own_core = results[0][1]['core']
        settings = [(f'OpenBLAS, its own choice (OPENBLAS_CORETYPE={own_core})', own_core)]
        settings += [(label, core) for label, _, core in found if core]
        for line in yardstick_table(caffe, settings, threads, args, p, yardstick):
            print(line)

    print()
    print(f'load average at end: {" ".join(f"{v:.2f}" for v in os.getloadavg())}')
    default = coretype.core_for_flags(coretype.cpu_flags())
    if 1 in args.threads and default:
        got = yardstick[1, 512, default]
        verdict = 'met' if got >= TARGET_IP_GFLOPS else 'MISSED'
        print(f'target: InnerProduct D=512 at 1 thread under the default '
              f'(OPENBLAS_CORETYPE={default}) >= {TARGET_IP_GFLOPS:.0f} GFLOPS: {verdict} '
              f'({got:.1f})')
    return 0


if __name__ == '__main__':
    sys.exit(run(main, PROG))
