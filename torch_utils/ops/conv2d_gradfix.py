"""Upstream's conv2d_gradfix, kept as a name only.

Upstream replaced torch's convolutions to get second-order gradients and to skip weight gradients in
R1 on old PyTorch. On torch >= 2.0 native autograd differentiates convolutions to any order (see
tests/test_ops_ref.py, gradgradcheck), and torch.autograd.grad(inputs=[images]) computes no weight
gradients, so both are plain aliases here.
"""

import contextlib

import torch.nn.functional as F

enabled = False  # Kept for scripts that set it; has no effect.
conv2d = F.conv2d
conv_transpose2d = F.conv_transpose2d


@contextlib.contextmanager
def no_weight_gradients(disable: bool = True):
    yield
