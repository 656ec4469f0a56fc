"""Model-free PyTorch utilities: custom ops, statistics across ranks, module helpers."""
