"""The PyTorch engine: continuous batching over a paged KV cache, transformers models run unmodified."""
