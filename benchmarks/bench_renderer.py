"""Time the tri-plane renderer (ImportanceRenderer with EG3D's OSGDecoder: plane look-ups, decoder MLP,
importance sampling, compositing) and the super-resolution module, A/B between implementations in one run.

    .venv/bin/python benchmarks/bench_renderer.py                         # small and ffhq512 configs, all impls
    .venv/bin/python benchmarks/bench_renderer.py --impls gather,host --no-sr   # the host kernels' A/B
    .venv/bin/python benchmarks/bench_renderer.py --generator ffhq512_forward,small_forward   # in the whole G
    .venv/bin/python benchmarks/bench_renderer.py --configs small --threads 1 --repeats 7
    .venv/bin/python benchmarks/bench_renderer.py --configs ffhq512_128 --profile
    .venv/bin/python benchmarks/bench_renderer.py --no-sr --mallopt 1      # glibc keeps freed memory (no page faults)
    .venv/bin/python benchmarks/bench_renderer.py --impls host_sparse,host --no-sr   # the host scatter's A/B
    .venv/bin/python benchmarks/bench_renderer.py --gather small,ffhq512_64  # the plane gather alone

Configurations (the model benchmark's, docs/perf.md):
    small        batch 4, neural 32, 12 + 12 samples, planes 256^2 x 32, decoder 64; SR Hybrid2X 32 -> 128
    ffhq512_64   batch 1, neural 64, 48 + 48 samples (ffhq512 Gmain's rendering); SR Hybrid8XDC 64 -> 512
    ffhq512_128  batch 1, neural 128, 48 + 48 samples (ffhq512 G forward's rendering); SR 8XDC 128 -> 512

Rows: the renderer forward (no grad) and forward + backward into the planes, for each implementation
('grid_sample': upstream's look-ups then the decoder's mean; 'gather': the one-pass plane gather; both
with torch's ops only, EG3D_FUSED_OPS=0 during their runs; 'host': the gather with the renderer's host
kernels, torch_utils/ops/render_ops, as the CPU default; 'host_sparse': the same but the backward into
the planes as a sparse matrix product instead of the host scatter kernel, EG3D_PLANE_SCATTER=sparse), timed interleaved (A, B, A, B, ...) in one
process so that a busy neighbour slows both alike; and the super-resolution forward and forward +
backward. Prints medians of wall time and of process CPU time, and the ratio to the first impl.

--gather CONFIGS: instead, the plane gather alone (plane_gather.sample_plane_mean with the host kernels),
forward + backward into the planes (channels-last [N, 3 * 32, 256, 256] as the backbone gives them) at the
configurations' point counts (one sample set), the backward as a sparse matrix product ('sparse') and as
the host scatter ('host'), interleaved.

--generator ROWS: instead, the whole generator forward of bench_models.py's rows (their networks and
cameras), without (A: torch's paths) and with (B) the render_ops host kernels, interleaved in one
process, with the largest output difference between the two.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')  # Before torch starts (see docs/perf.md).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from camera_utils import FOV_to_intrinsics, LookAtPoseSampler  # noqa: E402
from training.triplane import OSGDecoder  # noqa: E402
from training.volumetric_rendering.ray_sampler import RaySampler  # noqa: E402
from training.volumetric_rendering.renderer import ImportanceRenderer  # noqa: E402

CONFIGS = {
    'small': dict(batch=4, res=32, samples=12, planes=256, channels=32, hidden=64,
                  sr='SuperresolutionHybrid2X', img=128),
    'ffhq512_64': dict(batch=1, res=64, samples=48, planes=256, channels=32, hidden=64,
                       sr='SuperresolutionHybrid8XDC', img=512),
    'ffhq512_128': dict(batch=1, res=128, samples=48, planes=256, channels=32, hidden=64,
                        sr='SuperresolutionHybrid8XDC', img=512),
}
IMPLS = ('grid_sample', 'gather', 'host')


def _scoped_env(values: dict):
    """Sets environment variables for the duration of a call; returns the restore function."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)

    def restore():
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return restore


def time_interleaved(fns: dict, repeats: int) -> dict:
    """One warm-up each, then `repeats` rounds calling each fn once per round; medians (wall, CPU) in s."""
    for fn in fns.values():
        fn()
    wall = {k: [] for k in fns}
    cpu = {k: [] for k in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[key].append(time.perf_counter() - t0)
            cpu[key].append(time.process_time() - c0)
    return {k: (statistics.median(wall[k]), statistics.median(cpu[k])) for k in fns}


def renderer_rows(name: str, cfg: dict, args) -> list:
    torch.manual_seed(0)
    n = cfg['batch']
    planes = (torch.randn(n, 3, cfg['channels'], cfg['planes'], cfg['planes']) * 0.5).requires_grad_()
    poses = torch.cat([LookAtPoseSampler.sample(math.pi / 2 + 0.3 * i, math.pi / 2, [0, 0, 0.2], radius=2.7)
                       for i in range(n)])
    origins, dirs = RaySampler()(poses, FOV_to_intrinsics(18.837)[None].repeat(n, 1, 1), cfg['res'])
    decoder = OSGDecoder(cfg['channels'], {'decoder_lr_mul': 1, 'decoder_output_dim': cfg['channels']},
                         hidden_dim=cfg['hidden'])
    renderer = ImportanceRenderer()

    def make(impl, grad):
        options = dict(ray_start=2.25, ray_end=3.3, box_warp=1, depth_resolution=cfg['samples'],
                       depth_resolution_importance=cfg['samples'],
                       plane_sampling='gather' if impl.startswith('host') else impl)

        def run():
            torch.manual_seed(1)
            restore = _scoped_env({'EG3D_FUSED_OPS': '1' if impl.startswith('host') else '0',
                                   'EG3D_PLANE_SCATTER': 'sparse' if impl == 'host_sparse' else 'auto'})
            try:
                with torch.set_grad_enabled(grad):
                    rgb, depth, _ = renderer(planes, decoder, origins, dirs, options)
                    if grad:
                        torch.autograd.grad(rgb.square().mean() + depth.mean(), [planes] + list(decoder.parameters()))
            finally:
                restore()
        return run

    rows = []
    for grad in (False, True):
        fns = {impl: make(impl, grad) for impl in args.impls}
        res = time_interleaved(fns, args.repeats)
        for impl in args.impls:
            rows.append((name, 'renderer', 'fwd+bwd' if grad else 'forward', impl, *res[impl]))
        if args.profile:
            for impl in args.impls:
                with torch.profiler.profile() as prof:
                    fns[impl]()
                print(f'--- {name} renderer {"fwd+bwd" if grad else "forward"} {impl}')
                print(prof.key_averages().table(sort_by='self_cpu_time_total', row_limit=12))
    return rows


def gather_rows(name: str, cfg: dict, args) -> list:
    """The plane gather alone, forward + backward into channels-last planes: 'sparse' vs 'host' scatter."""
    from training.volumetric_rendering import plane_gather
    from training.volumetric_rendering.renderer import generate_planes
    torch.manual_seed(0)
    n, c, res = cfg['batch'], cfg['channels'], cfg['planes']
    backbone = torch.randn(n, 3 * c, res, res).contiguous(memory_format=torch.channels_last)
    planes = backbone.view(n, 3, c, res, res).requires_grad_()
    points = (torch.rand(n, cfg['res'] ** 2 * cfg['samples'], 3) - 0.5) * 0.9
    grad = torch.randn(n, points.shape[1], c)
    axes = generate_planes()

    def make(impl):
        def run():
            restore = _scoped_env({'EG3D_FUSED_OPS': '1', 'EG3D_PLANE_SCATTER': 'sparse' if impl == 'sparse' else 'auto'})
            try:
                out = plane_gather.sample_plane_mean(axes, planes, points, box_warp=1.0)
                torch.autograd.grad(out, [planes], grad)
            finally:
                restore()
        return run

    res_ = time_interleaved({impl: make(impl) for impl in ('sparse', 'host')}, args.repeats)
    return [(name, f'gather {points.shape[1] * n} pts', 'fwd+bwd', impl, *res_[impl]) for impl in ('sparse', 'host')]


def sr_rows(name: str, cfg: dict, args) -> list:
    from training import superresolution
    torch.manual_seed(0)
    n, c = cfg['batch'], cfg['channels']
    sr = getattr(superresolution, cfg['sr'])(channels=c, img_resolution=cfg['img'], sr_num_fp16_res=0,
                                             sr_antialias=True, w_dim=512)
    feature = torch.randn(n, c, cfg['res'], cfg['res']).requires_grad_()
    ws = torch.randn(n, 14, 512)

    def make(grad):
        def run():
            with torch.set_grad_enabled(grad):
                img = sr(feature[:, :3], feature, ws, noise_mode='const')
                if grad:
                    torch.autograd.grad(img.square().mean(), [feature] + list(sr.parameters()))
        return run
    res = time_interleaved({'forward': make(False), 'fwd+bwd': make(True)}, args.repeats)
    return [(name, f'SR {cfg["sr"][len("Superresolution"):]}', k, '-', *v) for k, v in res.items()]


def generator_rows(args) -> None:
    """The render_ops A/B in the whole generator forward (no grad) of bench_models rows."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bench_models
    from torch_utils.ops import _impl
    bench_models._allocator()
    real = _impl.fused_plugin
    print('| row | A: torch paths, wall / CPU | B: render_ops, wall / CPU | A / B (wall) | A / B (CPU) | max abs diff |')
    print('|---|---:|---:|---:|---:|---:|')
    for name in args.generator.split(','):
        config, _, batch, res, _ = bench_models.ROWS[name]
        opts = bench_models.training_options_for(config, batch)
        torch.manual_seed(0)
        G = _generator(opts, config, bench_models)
        z, c = torch.randn(batch, G.z_dim), bench_models.cameras(batch)
        outs = {}

        def make(on):
            def run():
                _impl.fused_plugin = real if on else (lambda op, dev: None if op == 'render_ops' else real(op, dev))
                try:
                    torch.manual_seed(1)
                    with torch.no_grad():
                        outs[on] = G(z, c, neural_rendering_resolution=res, noise_mode='const')
                finally:
                    _impl.fused_plugin = real
            return run
        r = time_interleaved({'A': make(False), 'B': make(True)}, args.repeats)
        diff = max((outs[False][k] - outs[True][k]).abs().max().item() for k in outs[True])
        (wa, ca), (wb, cb) = r['A'], r['B']
        print(f'| {name} | {wa:.3f} / {ca:.3f} s | {wb:.3f} / {cb:.3f} s | {wa / wb:.3f} | {ca / cb:.3f} | {diff:.1e} |',
              flush=True)
    print(f'\n{args.threads} threads, torch {torch.__version__}, medians of {args.repeats} interleaved runs after a '
          f'warm-up, load average {os.getloadavg()[0]:.2f}')


def _generator(opts, config, bench_models) -> torch.nn.Module:
    """A bench_models generator in eval mode without gradients."""
    common = dict(c_dim=25, img_resolution=bench_models.CONFIGS[config]['resolution'], img_channels=3)
    G = bench_models.dnnlib.util.construct_class_by_name(**opts.G_kwargs, **common)
    return G.eval().requires_grad_(False)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--configs', default='small,ffhq512_64,ffhq512_128', help=f'comma list of {list(CONFIGS)}')
    parser.add_argument('--impls', default=','.join(IMPLS), help='plane_sampling implementations to compare')
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--no-sr', dest='sr', action='store_false', help='skip the super-resolution rows')
    parser.add_argument('--mallopt', type=int, default=0, help='1: keep freed memory in the process (glibc '
                        'M_MMAP_THRESHOLD / M_TRIM_THRESHOLD), so big tensors skip first-touch page faults')
    parser.add_argument('--profile', action='store_true', help='print the top operators of one run per impl')
    parser.add_argument('--gather', default='', help='configs: the plane gather alone, sparse vs host scatter')
    parser.add_argument('--generator', default='', help='bench_models rows: the render_ops A/B in the whole G '
                        'forward instead (e.g. ffhq512_forward,small_forward)')
    args = parser.parse_args()
    args.impls = [i for i in args.impls.split(',') if i]
    if args.mallopt:
        import ctypes
        libc = ctypes.CDLL('libc.so.6')
        libc.mallopt(-3, 1 << 30)   # M_MMAP_THRESHOLD: blocks below 1 GiB come from the heap.
        libc.mallopt(-1, 1 << 30)   # M_TRIM_THRESHOLD: keep up to 1 GiB of freed heap.
    torch.set_num_threads(args.threads)
    if args.generator:
        generator_rows(args)
        return
    if args.gather:
        args.impls, args.sr, args.configs = ['sparse', 'host'], False, args.gather

    rows = []
    for name in args.configs.split(','):
        cfg = CONFIGS[name]
        rows += gather_rows(name, cfg, args) if args.gather else renderer_rows(name, cfg, args)
        if args.sr:
            rows += sr_rows(name, cfg, args)
        shown = len(args.impls) if args.gather else 2 * len(args.impls) + (2 if args.sr else 0)
        for row in rows[-shown:]:
            print(f'  {row[0]:12s} {row[1]:14s} {row[2]:8s} {row[3]:12s} wall {row[4] * 1e3:8.1f} ms   '
                  f'CPU {row[5] * 1e3:8.1f} ms', flush=True)

    print(f'\n{args.threads} threads, mallopt {args.mallopt}, torch {torch.__version__}, medians of {args.repeats} interleaved runs '
          f'after a warm-up\n')
    first = args.impls[0]
    print(f'| config | part | pass | impl | wall ms | CPU ms | x vs {first} (wall) | x vs {first} (CPU) |')
    print('|---|---|---|---|---:|---:|---:|---:|')
    base = {(r[0], r[1], r[2]): r[4:6] for r in rows if r[3] == first}
    for r in rows:
        ref = base.get((r[0], r[1], r[2]))
        show = ref and r[3] not in (first, '-')
        wall, cpu = (f'{ref[0] / r[4]:.2f}', f'{ref[1] / r[5]:.2f}') if show else ('', '')
        print(f'| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4] * 1e3:.1f} | {r[5] * 1e3:.1f} | {wall} | {cpu} |')


if __name__ == '__main__':
    main()
