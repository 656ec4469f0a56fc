"""Run each custom op once on random inputs and print one line per op: which implementation served it,
its output shape, and its largest difference from the reference path.

    python -m torch_utils.selfcheck
"""

from __future__ import annotations

import time

import torch

from torch_utils.ops import bias_act, conv2d_resample, filtered_lrelu, fma, upfirdn2d


def _cases(device):
    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=g).to(device)

    f = upfirdn2d.setup_filter([1, 3, 3, 1], device=device)
    x, b, w = rand(2, 8, 16, 16), rand(8), rand(8, 8, 3, 3)
    yield ('bias_act', bias_act,
           lambda impl: bias_act.bias_act(x, b, act='lrelu', clamp=256, impl=impl))
    yield ('upfirdn2d', upfirdn2d,
           lambda impl: upfirdn2d.upsample2d(x, f, impl=impl))
    yield ('conv2d_resample', None,
           lambda impl: conv2d_resample.conv2d_resample(x, w, f, up=2, padding=1, flip_weight=False))
    yield ('filtered_lrelu', filtered_lrelu,
           lambda impl: filtered_lrelu.filtered_lrelu(x, f, f, b, up=2, down=2, padding=3, impl=impl))
    yield ('fma', None, lambda impl: fma.fma(x, x, x))


def main() -> int:
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    print(f'torch {torch.__version__} on {device}')
    failures = 0
    for name, module, run in _cases(device):
        t0 = time.perf_counter()
        out = run('auto')
        used = getattr(module, 'last_impl', None) or 'ref'
        ref = run('ref')
        err = (out - ref).abs().max().item()
        ok = bool(torch.isfinite(out).all()) and err <= 1e-4 * max(ref.abs().max().item(), 1)
        failures += not ok
        print(f'{name:16s} {"ok  " if ok else "FAIL"} impl={used:5s} out={list(out.shape)} '
              f'max|auto-ref|={err:.1e} {1e3 * (time.perf_counter() - t0):.1f} ms')
    return 1 if failures else 0


if __name__ == '__main__':
    raise SystemExit(main())
