"""benchmarks/cpu/bench_npair.py answers a user error with one line and exit status 2
(npair_loss.cli), before it loads Caffe or times anything."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, 'benchmarks', 'cpu', 'bench_npair.py')
PROG = 'python3 benchmarks/cpu/bench_npair.py'


def bench(*args):
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        [os.path.join(ROOT, 'python')] + [p for p in [env.get('PYTHONPATH')] if p])
    return subprocess.run([sys.executable, BENCH, *args], capture_output=True, text=True,
                          env=env, timeout=60)


@pytest.mark.parametrize('args, message', [
    (['--per-class', '0'], '--per-class must be at least 1, got 0'),
    (['-n', '4', '--per-class', '8'], '--per-class 8 is larger than the batch size 4'),
    (['-n', '1'], '--batch must be at least 2, got 1'),
    (['--threads', '0'], '--threads must be at least 1, got 0'),
    (['-d', 'many'], "argument -d/--dim: invalid int value: 'many'"),
    (['--mining', 'hardest'], "argument -m/--mining: invalid choice: 'hardest'"),
    (['--no-such-option'], 'unrecognized arguments: --no-such-option'),
    (['--repeats', '0'], '--repeats must be at least 1'),
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
    assert '--per-class' in result.stdout and '--threads' in result.stdout
