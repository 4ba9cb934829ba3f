#!/usr/bin/env bash
# sdrindex set-up in one command each:
#   ./run.sh         create/refresh .venv, install, build the default MNIST bundle on first
#                    start (bundles/mnist), serve it on http://127.0.0.1:8000 (demo page at /)
#   ./run.sh test    create/refresh .venv, run the test suite
# Also: ./run.sh figure (learn the SP, write out/figure.png); extra arguments after `test`
# go to pytest (./run.sh test -m slow), after `serve` to `sdrindex serve`.
set -euo pipefail
cd "$(dirname "$0")"

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for cand in python3.13 python3.12 python3.11 python3; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
      PY=$cand; break
    fi
  done
fi
[ -n "$PY" ] || { echo "run.sh: needs Python >= 3.11 (set PYTHON=/path/to/python3.11)" >&2; exit 1; }

ensure_env() {
  if [ ! -x .venv/bin/python ]; then
    echo "run.sh: creating .venv with $PY" >&2
    "$PY" -m venv .venv
  fi
  # Reinstall only when the project's declared dependencies changed.
  local stamp=.venv/.sdrindex-installed
  local want
  want=$(sha256sum pyproject.toml | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "run.sh: installing sdrindex and its dependencies into .venv" >&2
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e ".[dev]"
    echo "$want" > "$stamp"
  fi
}

cmd=${1:-serve}
case "$cmd" in
  serve)
    shift || true
    ensure_env
    exec .venv/bin/sdrindex serve --bundle "${SDRINDEX_BUNDLE:-bundles/mnist}" "$@"
    ;;
  figure)
    ensure_env
    .venv/bin/sdrindex figure --out out/figure.png
    ;;
  test)
    shift || true
    ensure_env
    bash scripts/install_browser.sh >/dev/null  # Debian's Chromium for the demo-page test
    exec .venv/bin/python -m pytest -q "$@"
    ;;
  *)
    echo "usage: ./run.sh [serve [args]|test [pytest args]|figure]" >&2
    exit 2
    ;;
esac
