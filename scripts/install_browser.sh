#!/usr/bin/env bash
# Installs what tests/test_demo_page.py needs: Debian's Chromium (apt) and playwright-python
# (in .venv, driving that Chromium; no browser download). Idempotent; run as root (CI is).
#   bash scripts/install_browser.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1; then
  echo "install_browser.sh: installing Debian's chromium" >&2
  export DEBIAN_FRONTEND=noninteractive
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi
chromium --version

PY=.venv/bin/python
if [ -x "$PY" ] && ! "$PY" -c 'import playwright' >/dev/null 2>&1; then
  echo "install_browser.sh: installing playwright (python) into .venv" >&2
  "$PY" -m pip install -q 'playwright>=1.40'
fi
if [ -x "$PY" ]; then
  "$PY" -c 'import playwright; from importlib.metadata import version; print("playwright", version("playwright"))'
fi
