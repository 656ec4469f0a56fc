"""Time ImportanceRenderer.forward (rays -> features, depth) with an OSGDecoder-sized MLP.

    .venv/bin/python benchmarks/bench_renderer.py                 # small fixture config, batch 4
    .venv/bin/python benchmarks/bench_renderer.py --res 64 --planes 256 --samples 48 --batch 1 --profile

Prints the median of --repeats timed runs (after one warm-up) in ms per batch and per image.
"""

import argparse
import math
import statistics
import time

import torch

from camera_utils import FOV_to_intrinsics, LookAtPoseSampler
from training.volumetric_rendering.ray_sampler import RaySampler
from training.volumetric_rendering.renderer import ImportanceRenderer


class Decoder(torch.nn.Module):
    """Same sizes as EG3D's OSGDecoder: mean over planes, 32 -> 64 -> 1 + 32."""

    def __init__(self, channels=32, hidden=64):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(channels, hidden), torch.nn.Softplus(),
                                       torch.nn.Linear(hidden, 1 + channels))

    def forward(self, features, directions):
        x = self.net(features.mean(1))
        return {'rgb': torch.sigmoid(x[..., 1:]) * (1 + 2 * 0.001) - 0.001, 'sigma': x[..., :1]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--batch', type=int, default=4)
    parser.add_argument('--res', type=int, default=32, help='neural rendering resolution')
    parser.add_argument('--planes', type=int, default=256, help='plane resolution')
    parser.add_argument('--channels', type=int, default=32)
    parser.add_argument('--samples', type=int, default=12, help='coarse = importance samples per ray')
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--grad', action='store_true', help='forward + backward into the planes')
    parser.add_argument('--profile', action='store_true', help='print the top operators of one run')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    n = args.batch
    planes = torch.randn(n, 3, args.channels, args.planes, args.planes) * 0.5
    planes.requires_grad_(args.grad)
    poses = torch.cat([LookAtPoseSampler.sample(math.pi / 2 + 0.3 * i, math.pi / 2, [0, 0, 0.2], radius=2.7)
                       for i in range(n)])
    origins, dirs = RaySampler()(poses, FOV_to_intrinsics(18.837)[None].repeat(n, 1, 1), args.res)
    options = dict(ray_start=2.25, ray_end=3.3, box_warp=1, depth_resolution=args.samples,
                   depth_resolution_importance=args.samples, disparity_space_sampling=False, clamp_mode='softplus')
    renderer, decoder = ImportanceRenderer(), Decoder(args.channels)

    def run():
        with torch.set_grad_enabled(args.grad):
            rgb, depth, _ = renderer(planes, decoder, origins, dirs, options)
            if args.grad:
                (rgb.square().mean() + depth.mean()).backward()

    run()
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    ms = statistics.median(times) * 1e3
    print(f'renderer {"fwd+bwd" if args.grad else "forward"}: batch {n}, {args.res}^2 rays, '
          f'{args.samples}+{args.samples} samples, planes {args.channels}x{args.planes}^2: '
          f'{ms:.1f} ms per batch, {ms / n:.1f} ms per image (median of {args.repeats})')
    if args.profile:
        with torch.profiler.profile() as prof:
            run()
        print(prof.key_averages().table(sort_by='self_cpu_time_total', row_limit=15))


if __name__ == '__main__':
    main()
