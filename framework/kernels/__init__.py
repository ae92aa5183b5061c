"""Triton kernels with pure-PyTorch references (importable with torch and triton alone)."""
