"""benchmarks/cpu/bench_blas.py answers a user error with one line and exit status 2
(npair_loss.cli), before it loads a BLAS or times anything."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, 'benchmarks', 'cpu', 'bench_blas.py')
PROG = 'python3 benchmarks/cpu/bench_blas.py'


def bench(*args):
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        [os.path.join(ROOT, 'python')] + [p for p in [env.get('PYTHONPATH')] if p])
    return subprocess.run([sys.executable, BENCH, *args], capture_output=True, text=True,
                          env=env, timeout=60)


@pytest.mark.parametrize('args, message', [
    (['--threads', '0'], '--threads must be at least 1, got 0'),
    (['--min-time', '0'], '--min-time must be above 0, got 0.0'),
    (['--iterations', '0'], '--iterations must be at least 1, got 0'),
    (['--rounds', '0'], '--rounds must be at least 1, got 0'),
    (['--mkl', '/no/such/libmkl_rt.so'], '--mkl /no/such/libmkl_rt.so: no such file'),
    (['--threads', 'all'], "argument --threads: invalid int value: 'all'"),
    (['--no-such-option'], 'unrecognized arguments: --no-such-option'),
])
def test_user_error_is_one_line_and_status_2(args, message):
    result = bench(*args)
    assert result.returncode == 2
    assert result.stdout == ''
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f'{PROG}: error: ')
    assert message in lines[0]


def test_help_exits_0():
    result = bench('--help')
    assert result.returncode == 0
    assert '--mkl' in result.stdout and '--threads' in result.stdout
