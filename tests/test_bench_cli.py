"""The CPU benchmarks answer a user error with one line and exit status 2
(npair_loss.cli), before they load Caffe or a BLAS or time anything; --help works."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NPAIR, BLAS, STEP = 'bench_npair.py', 'bench_blas.py', 'bench_memory_step.py'


def bench(script, *args):
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        [os.path.join(ROOT, 'python')] + [p for p in [env.get('PYTHONPATH')] if p])
    return subprocess.run([sys.executable, os.path.join(ROOT, 'benchmarks', 'cpu', script),
                           *args], capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.parametrize('script, args, message', [
    (NPAIR, ['--per-class', '0'], '--per-class must be at least 1, got 0'),
    (NPAIR, ['-n', '4', '--per-class', '8'], '--per-class 8 is larger than the batch size 4'),
    (NPAIR, ['-n', '1'], '--batch must be at least 2, got 1'),
    (NPAIR, ['--threads', '0'], '--threads must be at least 1, got 0'),
    (NPAIR, ['--refs', '-1'], '--refs must be at least 0, got -1'),
    (NPAIR, ['-d', 'many'], "argument -d/--dim: invalid int value: 'many'"),
    (NPAIR, ['--mining', 'hardest'], "argument -m/--mining: invalid choice: 'hardest'"),
    (NPAIR, ['--no-such-option'], 'unrecognized arguments: --no-such-option'),
    (NPAIR, ['--repeats', '0'], '--repeats must be at least 1'),
    (BLAS, ['--threads', '0'], '--threads must be at least 1, got 0'),
    (BLAS, ['--min-time', '0'], '--min-time must be above 0, got 0.0'),
    (BLAS, ['--iterations', '0'], '--iterations must be at least 1, got 0'),
    (BLAS, ['--rounds', '0'], '--rounds must be at least 1, got 0'),
    (BLAS, ['--mkl', '/no/such/libmkl_rt.so'], '--mkl /no/such/libmkl_rt.so: no such file'),
    (BLAS, ['--threads', 'all'], "argument --threads: invalid int value: 'all'"),
    (BLAS, ['--no-such-option'], 'unrecognized arguments: --no-such-option'),
    (STEP, ['--timed', '0'], '--size, --rounds and --timed must be at least 1'),
    (STEP, ['--rounds', '0'], '--size, --rounds and --timed must be at least 1'),
    (STEP, ['--data', '/no/such/data'], '/no/such/data: no train.txt'),
])
def test_user_error_is_one_line_and_status_2(script, args, message):
    result = bench(script, *args)
    assert result.returncode == 2
    assert result.stdout == ''
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f'python3 benchmarks/cpu/{script}: error: ')
    assert message in lines[0]


@pytest.mark.parametrize('script, option', [(NPAIR, '--refs'), (BLAS, '--mkl'),
                                            (STEP, '--size')])
def test_help_exits_0(script, option):
    result = bench(script, '--help')
    assert result.returncode == 0
    assert option in result.stdout and '--threads' in result.stdout
