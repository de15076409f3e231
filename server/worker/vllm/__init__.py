"""The vLLM backend: vLLM's V1 engine behind the worker's backend protocol (`--backend vllm`)."""
