"""Forward and forward+backward time of the StyleGAN2 backbone Generator and the Discriminator at a preset.

G is the tri-plane backbone (img_resolution = triplane_resolution, img_channels = 3 x triplane_channels),
D the StyleGAN2 discriminator on the dual discriminator's 6-channel input at the image resolution.
The full tri-plane generator (renderer, super-resolution) is not included.

    .venv/bin/python benchmarks/bench_networks.py                       # tiny preset, 64x64 images
    .venv/bin/python benchmarks/bench_networks.py --preset ffhq --resolution 512 --batch 1 --iters 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from training.networks_stylegan2 import Discriminator, Generator  # noqa: E402
from training.presets import resolve_preset  # noqa: E402


def build(opts: dict, resolution: int, c_dim: int = 25) -> tuple[Generator, Discriminator]:
    G = Generator(z_dim=opts['z_dim'], c_dim=c_dim, w_dim=opts['w_dim'], img_resolution=opts['triplane_resolution'],
                  img_channels=3 * opts['triplane_channels'], mapping_kwargs=dict(num_layers=opts['map_depth']),
                  channel_base=opts['cbase'], channel_max=opts['cmax'], num_fp16_res=opts['g_num_fp16_res'],
                  conv_clamp=256 if opts['g_num_fp16_res'] > 0 else None, fused_modconv_default='inference_only')
    D = Discriminator(c_dim=c_dim, img_resolution=resolution, img_channels=6, channel_base=opts['cbase'],
                      channel_max=opts['cmax'], num_fp16_res=opts['d_num_fp16_res'],
                      conv_clamp=256 if opts['d_num_fp16_res'] > 0 else None,
                      block_kwargs=dict(freeze_layers=opts['freezed']),
                      epilogue_kwargs=dict(mbstd_group_size=opts['mbstd_group']))
    return G, D


def timed(fn, warmup: int, iters: int) -> tuple[float, float]:
    """Median and minimum wall time of fn() in milliseconds (the minimum is the least disturbed by other load)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--preset', default='tiny')
    parser.add_argument('--resolution', type=int, default=64, help='image resolution seen by D (tiny: 64)')
    parser.add_argument('--batch', type=int, default=None, help='batch size (default: the preset batch)')
    parser.add_argument('--iters', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--threads', type=int, default=None, help='torch threads (default: torch default)')
    args = parser.parse_args()

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    opts = resolve_preset(args.preset)
    batch = args.batch or opts['batch'] or 4
    torch.manual_seed(0)
    G, D = build(opts, args.resolution)
    G.train().requires_grad_(True)
    D.train().requires_grad_(True)
    z = torch.randn(batch, G.z_dim)
    c = torch.randn(batch, G.c_dim)
    img = torch.randn(batch, 6, args.resolution, args.resolution)

    def g_fwd():
        with torch.no_grad():
            G(z, c, noise_mode='random')

    def g_fwd_bwd():
        G.zero_grad(set_to_none=True)
        G(z, c, noise_mode='random').square().mean().backward()

    def d_fwd():
        with torch.no_grad():
            D(img, c)

    def d_fwd_bwd():
        D.zero_grad(set_to_none=True)
        D(img, c).sum().backward()

    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    print(f'preset {args.preset}, batch {batch}, torch {torch.__version__}, {torch.get_num_threads()} threads, '
          f'{args.iters} runs after {args.warmup} warm-up')
    print(f'G backbone: {G.img_resolution}x{G.img_resolution}x{G.img_channels}, {count(G) / 1e6:.2f} M params; '
          f'D: {args.resolution}x{args.resolution}x6, {count(D) / 1e6:.2f} M params')
    rows = [('G forward (train mode)', g_fwd), ('G forward+backward', g_fwd_bwd),
            ('D forward', d_fwd), ('D forward+backward', d_fwd_bwd)]
    for name, fn in rows:
        ms, best = timed(fn, args.warmup, args.iters)
        print(f'{name:<24} median {ms:8.1f} ms/batch ({batch / ms * 1e3:6.1f} img/s)   '
              f'min {best:8.1f} ms/batch ({batch / best * 1e3:6.1f} img/s)')


if __name__ == '__main__':
    main()
