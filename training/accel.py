"""GPU speed switches: autocast precision, torch.compile, TF32 (docs/gpu.md).

    precision   'fp32' (default): as upstream, float32 everywhere except the layers that the networks'
                own num_fp16_res settings put in fp16 (StyleGAN2-ADA's mixed precision).
                'bf16' / 'fp16': torch.autocast on CUDA around the networks' forward passes in the loss
                (matmuls and convolutions in the low precision, reductions in float32). fp16 also
                scales the loss dynamically (FP16LossScaler); bf16 needs no scaling. CUDA only: on
                other devices they raise (the CPU kernels here are tuned for float32).
    compile     None (default): eager. A mode string ('default', 'reduce-overhead', 'max-autotune'):
                Module.compile() in place on the generator's backbone synthesis, super-resolution and the
                discriminator; the modules keep their class, parameters and pickles. The renderer stays
                eager (data-dependent sampling). CUDA only: on the CPU, inductor spent over 10 minutes
                compiling the tiny preset's graphs (breaking at every fused CPU op) without finishing
                the first training iteration, so it raises there.
    allow_tf32  False (default, upstream's policy): float32 matmuls and convolutions are exact float32,
                so results match the CPU and the official fixtures. True lets Ampere+ GPUs use TF32
                tensor cores (about 10 bits of mantissa in products, float32 accumulation) for both.
"""

from __future__ import annotations

import contextlib

import torch

PRECISIONS = ('fp32', 'bf16', 'fp16')
COMPILE_MODES = ('default', 'reduce-overhead', 'max-autotune', 'max-autotune-no-cudagraphs')
_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}


def validate(precision: str = 'fp32', compile_mode: str | None = None) -> None:
    """Raise ValueError for an unknown precision or compile mode (any device)."""
    if precision not in PRECISIONS:
        raise ValueError(f'precision must be one of {", ".join(PRECISIONS)}, got {precision!r}')
    if compile_mode is not None and compile_mode not in COMPILE_MODES:
        raise ValueError(f'compile mode must be one of {", ".join(COMPILE_MODES)}, got {compile_mode!r}')


def check(device: torch.device | str, precision: str = 'fp32', compile_mode: str | None = None) -> None:
    """Raise ValueError naming the problem when the switches cannot work on `device`."""
    validate(precision, compile_mode)
    device = torch.device(device)
    if precision != 'fp32' and device.type != 'cuda':
        raise ValueError(f'precision={precision} needs a CUDA device (autocast on {device.type} is not supported '
                         f'here); use precision=fp32')
    if compile_mode is not None and device.type != 'cuda':
        raise ValueError(f'compile={compile_mode} needs a CUDA device (on the CPU, compiling takes many minutes '
                         f'and the eager fused ops are faster); leave compile unset')
    if precision == 'bf16' and not torch.cuda.is_bf16_supported():
        raise ValueError('precision=bf16: this GPU has no bfloat16 support (needs Ampere or newer); use fp16')


def set_tf32(device: torch.device | str, allow_tf32: bool) -> None:
    """TF32 for CUDA matmuls and cuDNN convolutions on or off (no effect on other devices)."""
    if torch.device(device).type == 'cuda':
        torch.backends.cuda.matmul.allow_tf32 = bool(allow_tf32)
        torch.backends.cudnn.allow_tf32 = bool(allow_tf32)


def autocast(device: torch.device | str, precision: str = 'fp32'):
    """A context manager: torch.autocast for bf16 / fp16 on CUDA, a no-op for fp32."""
    if precision == 'fp32':
        return contextlib.nullcontext()
    check(device, precision)
    return torch.autocast(device_type='cuda', dtype=_DTYPES[precision])


def compile_targets(G: torch.nn.Module, D: torch.nn.Module | None = None) -> list[torch.nn.Module]:
    """The modules that compile_networks compiles: G's backbone synthesis and super-resolution, and D."""
    targets = []
    backbone = getattr(G, 'backbone', None)
    if backbone is not None and hasattr(backbone, 'synthesis'):
        targets.append(backbone.synthesis)
    if hasattr(G, 'superresolution'):
        targets.append(G.superresolution)
    if D is not None:
        targets.append(D)
    return targets


def compile_networks(G: torch.nn.Module, D: torch.nn.Module | None = None, mode: str | None = 'default') -> list:
    """Module.compile(mode=...) in place on compile_targets(G, D); mode None does nothing. Returns them."""
    if mode is None:
        return []
    validate('fp32', mode)
    targets = compile_targets(G, D)
    for module in targets:
        module.compile(mode=mode)
    return targets


class FP16LossScaler:
    """Dynamic loss scaling for precision=fp16 (a GradScaler for the loop's own gradient averaging).

    The loop multiplies each phase's loss gain by `scale`; after the backward passes, unscale() divides
    the gradients by it and says whether they are all finite (agreed across ranks). A step with
    non-finite gradients is skipped and the scale halves; after `growth_interval` good steps it doubles.
    Disabled (scale 1, never skips) for other precisions.
    """

    def __init__(self, enabled: bool, init_scale: float = 2.0 ** 16, growth_interval: int = 2000):
        self.enabled = enabled
        self.scale = float(init_scale) if enabled else 1.0
        self.growth_interval = growth_interval
        self._good_steps = 0

    @torch.no_grad()
    def unscale(self, module: torch.nn.Module, distributed: bool = False) -> bool:
        """Divide the gradients by the scale; True when every gradient is finite (step may proceed)."""
        if not self.enabled:
            return True
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        finite = torch.ones([], device=grads[0].device if grads else 'cpu')
        for g in grads:
            finite = finite * torch.isfinite(g).all()
            g.div_(self.scale)
        if distributed:
            torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
        ok = bool(finite.item())
        if ok:
            self._good_steps += 1
            if self._good_steps >= self.growth_interval:
                self.scale *= 2
                self._good_steps = 0
        else:
            self.scale = max(self.scale / 2, 1.0)
            self._good_steps = 0
        return ok
