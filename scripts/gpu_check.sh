#!/usr/bin/env bash
# One prepared check for a GPU host (torch + transformers; no vLLM, Ray or network needed):
# one FSDP2 + bf16 SFT step and one DAPO learner step on the 2B-shaped Qwen3-VL, their figures
# compared with the CPU fp32 result, tokens/s and MFU printed. Exits non-zero on any failure.
# On a host without CUDA it runs the same steps under CPU bf16 autocast and skips the CUDA parts
# (CI does, tests/scripts/test_gpu_check.py). Extra arguments go to scripts/gpu_check.py, e.g.
#   scripts/gpu_check.sh --batch 8 --prompt-tokens 1024 --image-px 512      # bigger timed steps
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python)}"
# 5 minutes at most, whatever hangs (an NCCL init that waits for peers, a stuck kernel)
exec timeout --kill-after=10 "${GPU_CHECK_TIMEOUT_S:-300}" "$PY" scripts/gpu_check.py "$@"
