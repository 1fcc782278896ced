"""`pip install ./python` into a fresh virtual environment, with no protoc on PATH and
nothing of this repository on sys.path, gives a working fallback: its generated message
module parses the usage block's parameters and npair_math computes the loss there.
Needs PyPI (the package's build requirements and numpy/protobuf), as the test command's
own pip installs do."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np

import npair_reference as ref
from conftest import ROOT

# Run inside the new environment: the installed package, from outside the repository.
PROBE = r'''
import json, sys
import numpy
import npair_loss, npair_loss.npair_loss_pb2
from google.protobuf import __version__ as protobuf_version
from npair_loss import npair_math, params

case = json.load(sys.stdin)
p = params.parse_param_str(case['param_str'])
out = npair_math.forward(numpy.array(case['X'], numpy.float32),
                         numpy.array(case['labels'], numpy.float32), p)
json.dump({'package': npair_loss.__file__, 'pb2': npair_loss.npair_loss_pb2.__file__,
           'protobuf': protobuf_version, 'params': p._asdict(),
           'loss': out.loss, 'recall': list(out.recall), 'asum': out.asum}, sys.stdout)
'''


def test_pip_install_into_a_fresh_venv(tmp_path, npair_cases, usage_params, usage_param_str,
                                       assert_matches_reference):
    venv = tmp_path / 'venv'
    subprocess.run([sys.executable, '-m', 'venv', str(venv)], check=True)
    python = str(venv / 'bin' / 'python')
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'VIRTUAL_ENV')}
    env['PATH'] = str(venv / 'bin')
    assert shutil.which('protoc', path=env['PATH']) is None
    install = subprocess.run(
        [python, '-m', 'pip', 'install', '--disable-pip-version-check', '-q',
         os.path.join(ROOT, 'python')],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]

    case = npair_cases.case(np.random.default_rng(3), usage_params, N=10, D=4, classes=3)
    probe = subprocess.run(
        [python, '-c', PROBE], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=120, input=json.dumps({'X': case.X.tolist(), 'labels': case.labels.tolist(),
                                       'param_str': usage_param_str}))
    assert probe.returncode == 0, probe.stderr[-3000:]
    got = json.loads(probe.stdout)

    site = str(venv / 'lib')
    assert got['package'].startswith(site) and got['pb2'].startswith(site), got
    assert ref.Params(**got['params']) == usage_params
    assert_matches_reference(case, [got['loss'], *got['recall'], got['asum']])
