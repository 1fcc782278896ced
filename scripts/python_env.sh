# Sourced: sets PYTHON to the interpreter the fork is built for and tested with.
# The python3 on PATH, unless it is an externally managed system Python (plain
# Debian), where pip may not install: then a virtual environment in build/venv.
PYTHON=$(command -v python3)
if "$PYTHON" -c 'import sys, sysconfig, os; sys.exit(not os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")))' \
   && [[ -z ${VIRTUAL_ENV:-} ]]; then
  venv="$(pwd)/build/venv"
  [[ -x $venv/bin/python3 ]] || "$PYTHON" -m venv "$venv"
  PYTHON="$venv/bin/python3"
fi
export PYTHON
