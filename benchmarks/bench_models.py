"""Whole-model CPU timings: the tri-plane generator's forward pass and the Gmain training step (G forward,
D forward, loss, backward into G), with peak memory, beside upstream's figures
(../shared/reference/official-cpu-baseline.md, measured the same way with NVIDIA's code).

Each row runs in its own process: build the networks, one warm-up, then the median of --repeats runs.
Peak RSS is the process's maximum resident set, set-up included (as upstream's figures). Besides wall
time, the process CPU time of a step is reported (median). On a machine shared with other work, wall
times say more about the neighbours than about the code, so each row also measures the throughput of
a 2048^3 float32 matmul before and after its timed runs, and reports its wall time scaled to the
reference machine's 250 GFLOP/s (median * measured / 250): a rough normalisation, best for rows whose
time is spent in convolutions and matrix products.

    .venv/bin/python benchmarks/bench_models.py                        # tiny and small rows
    .venv/bin/python benchmarks/bench_models.py --rows all --markdown  # also ffhq512 (minutes)
    .venv/bin/python benchmarks/bench_models.py --rows small_gmain --profile

Configurations (networks at random initialisation, FFHQ cameras, built through training/options.py
exactly as train.py builds them):
    tiny      --cfg=tiny: 32 px images, neural 16, 32^2 x 8-channel planes, 16 + 16 samples, batch 8
    tiny-sg3  --cfg=tiny-sg3: tiny with a StyleGAN3 backbone (8 layers; EG3D_FUSED_OPS=0 for the reference
              filtered_lrelu)
    small     the official fixture's: --cfg=ffhq --cbase=4096 --cmax=64 --gen_pose_cond=True, 128 px,
              neural 32, depth samples 12 + 12
    ffhq512   docs/models.md's ffhq512-128: --cfg=ffhq --gen_pose_cond=True
              --neural_rendering_resolution_final=128 (the Gmain row runs at the initial neural 64)
The Gmain step uses the loss at cur_nimg 0 (blur sigma 10 on D's images), noise_mode 'const'. The
four-phase step runs the training loop's phases of a batch where every lazy regulariser is due: Gmain,
Greg (gain G_reg_interval), Dmain, Dreg (gain D_reg_interval), each with only its own network's
gradients enabled, through StyleGAN2Loss.accumulate_gradients, without optimiser steps.
benchmarks/bench_baseline.py runs the rows of upstream's table and prints the speed-up and verdict.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

import dnnlib  # noqa: E402
from camera_utils import FOV_to_intrinsics, LookAtPoseSampler  # noqa: E402
from training import options as training_options  # noqa: E402
from training.presets import resolve_preset  # noqa: E402

CONFIGS = {
    'tiny':    dict(preset='tiny', resolution=32, overrides={}),
    'tiny-sg3': dict(preset='tiny-sg3', resolution=32, overrides={}),
    'small':   dict(preset='ffhq', resolution=128, overrides=dict(
        cbase=4096, cmax=64, gen_pose_cond=True, neural_rendering_resolution_initial=32,
        rendering=dict(depth_resolution=12, depth_resolution_importance=12))),
    'ffhq512': dict(preset='ffhq', resolution=512, overrides=dict(
        gen_pose_cond=True, neural_rendering_resolution_final=128)),
}

# name: (config, measurement, batch, neural rendering resolution or None = the loss's, upstream (s, GiB) or None)
ROWS = {
    'tiny_forward':    ('tiny', 'forward', 8, 16, None),
    'tiny_gmain':      ('tiny', 'gmain', 8, None, None),
    'tiny_sg3_forward': ('tiny-sg3', 'forward', 8, 16, None),
    'tiny_sg3_gmain':  ('tiny-sg3', 'gmain', 8, None, None),
    'small_forward':   ('small', 'forward', 4, 32, (0.67, 0.76)),
    'small_gmain':     ('small', 'gmain', 4, None, (2.55, 1.85)),
    'small_fourphase': ('small', 'fourphase', 4, None, (5.61, 1.92)),
    'ffhq512_forward': ('ffhq512', 'forward', 1, 128, (7.21, 1.83)),
    'ffhq512_gmain':   ('ffhq512', 'gmain', 1, None, (25.4, 5.65)),
}
DEFAULT_ROWS = ['tiny_forward', 'tiny_gmain', 'small_forward', 'small_gmain']


def training_options_for(config: str, batch: int) -> dnnlib.EasyDict:
    """train.py's options for a config, with a stand-in for the dataset (only its resolution is read)."""
    cfg = CONFIGS[config]

    def dataset_kwargs(data, use_labels, xflip, mirror_labels, seed):
        return dnnlib.EasyDict(class_name='training.dataset.ImageFolderDataset', path=data, use_labels=True,
                               max_size=batch, xflip=False, resolution=cfg['resolution'], random_seed=seed), 'bench'

    training_options.dataset_kwargs = dataset_kwargs  # This process only builds networks; no data is read.
    opts = resolve_preset(cfg['preset'], dict(cfg['overrides'], gpus=1, batch=batch, gamma=1))
    return training_options.build_training_options({**opts, 'data': 'bench'})[0]


def _allocator() -> None:
    """The process-level allocator setting our commands apply (torch_utils.malloc_tuning), if present."""
    try:
        from torch_utils import malloc_tuning
    except ImportError:
        return
    malloc_tuning.apply()


def cameras(n: int) -> torch.Tensor:
    """n FFHQ cameras [n, 25] (radius 2.7, pivot (0, 0, 0.2), FOV 18.837) at different yaws."""
    intrinsics = FOV_to_intrinsics(18.837).reshape(1, 9)
    poses = [LookAtPoseSampler.sample(math.pi / 2 + 0.3 * (i - n / 2), math.pi / 2, torch.tensor([0, 0, 0.2]),
                                      radius=2.7).reshape(1, 16) for i in range(n)]
    return torch.cat([torch.cat([p, intrinsics], dim=1) for p in poses])


REFERENCE_GFLOPS = 250  # A 2048^3 float32 matmul on the reference 2-core machine (official-cpu-baseline.md).


def matmul_gflops(repeats: int = 3) -> float:
    """Throughput of a 2048^3 float32 matrix product now (median of `repeats`), in GFLOP/s."""
    a = torch.randn(2048, 2048)
    a @ a
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ a
        times.append(time.perf_counter() - start)
    return 2 * 2048 ** 3 / statistics.median(times) / 1e9


def run_row(name: str, repeats: int, warmup: int, profile: bool) -> dict:
    config, measurement, batch, res, _ = ROWS[name]
    _allocator()  # As our commands do (torch_utils/malloc_tuning.py); EG3D_MALLOC_TUNING=0: off.
    opts = training_options_for(config, batch)
    common = dict(c_dim=25, img_resolution=CONFIGS[config]['resolution'], img_channels=3)
    torch.manual_seed(0)
    G = dnnlib.util.construct_class_by_name(**opts.G_kwargs, **common)
    z, c = torch.randn(batch, G.z_dim), cameras(batch)

    if measurement == 'forward':
        G.eval().requires_grad_(False)

        def step():
            with torch.no_grad():
                G(z, c, neural_rendering_resolution=res, noise_mode='const')
    else:
        D = dnnlib.util.construct_class_by_name(**opts.D_kwargs, **common).train().requires_grad_(False)
        G.train().requires_grad_(False)
        loss = dnnlib.util.construct_class_by_name(device=torch.device('cpu'), G=G, D=D,
                                                   synthesis_kwargs=dict(noise_mode='const'), **opts.loss_kwargs)
        real = torch.rand(batch, 3, common['img_resolution'], common['img_resolution']) * 2 - 1
        res = loss.neural_rendering_resolution(0)
        # The training loop's phases at batch 0 (every lazy regulariser due), without optimiser steps:
        # each phase enables gradients of its own network only, with gain = its interval.
        phases = [('Gmain', G, 1), ('Greg', G, opts.G_reg_interval), ('Dmain', D, 1),
                  ('Dreg', D, opts.D_reg_interval)]
        if measurement == 'gmain':
            phases = phases[:1]

        def step():
            for name, module, gain in phases:
                if gain is None:  # Regulariser off in this config.
                    continue
                module.zero_grad(set_to_none=True)
                module.requires_grad_(True)
                loss.accumulate_gradients(name, real, c, z, c, gain=gain, cur_nimg=0)
                module.requires_grad_(False)

    for _ in range(warmup):
        step()
    gflops = [matmul_gflops()]
    times, cpu_times = [], []
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        step()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    gflops.append(matmul_gflops())
    if profile:
        with torch.profiler.profile() as prof:
            step()
        print(prof.key_averages().table(sort_by='cpu_time_total', row_limit=25), file=sys.stderr)
        print(prof.key_averages().table(sort_by='self_cpu_time_total', row_limit=30), file=sys.stderr)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB -> GiB (Linux).
    return dict(row=name, config=config, measurement=measurement, batch=batch, neural_res=res,
                median_s=statistics.median(times), min_s=min(times), cpu_s=statistics.median(cpu_times),
                peak_rss_gib=peak, matmul_gflops=statistics.mean(gflops),
                G_params=sum(p.numel() for p in G.parameters()), threads=torch.get_num_threads())


def run_in_subprocess(name: str, args) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), '--child', name, '--repeats', str(args.repeats),
           '--warmup', str(args.warmup), '--threads', str(args.threads)] + (['--profile'] if args.profile else [])
    env = dict(os.environ)
    if args.omp_passive:
        env['OMP_WAIT_POLICY'] = 'PASSIVE'
    result = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, check=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


MEASUREMENTS = {'forward': 'G forward (eval, no grad, noise const)',
                'gmain': 'Gmain step (G fwd, D fwd, loss, backward into G)',
                'fourphase': 'Gmain + Greg + Dmain + Dreg (no optimiser step)'}


def print_table(results: list[dict], markdown: bool) -> None:
    """Wall time (median), CPU time, peak RSS, the matmul throughput seen during the row, and the wall time
    scaled to the reference machine's 250 GFLOP/s (scaled = median * measured / 250), beside upstream."""
    if markdown:
        print('| config | measurement | batch | neural res | ours: median | ours: CPU time | ours: peak RSS | '
              'matmul GFLOP/s | ours scaled to 250 GFLOP/s | upstream: median | upstream: peak RSS | '
              'ours / upstream (raw, scaled) |')
        print('|---|---|---|---|---|---|---|---|---|---|---|---|')
    for r in results:
        upstream = ROWS[r['row']][4]
        scaled = r['median_s'] * r['matmul_gflops'] / REFERENCE_GFLOPS
        up_t = f'{upstream[0]:.2f} s' if upstream else '-'
        up_m = f'{upstream[1]:.2f} GiB' if upstream else '-'
        ratio = f'{r["median_s"] / upstream[0]:.2f}, {scaled / upstream[0]:.2f}' if upstream else '-'
        if markdown:
            cells = [r['config'], MEASUREMENTS[r['measurement']], str(r['batch']), str(r['neural_res']),
                     f'{r["median_s"]:.2f} s', f'{r["cpu_s"]:.2f} s', f'{r["peak_rss_gib"]:.2f} GiB',
                     f'{r["matmul_gflops"]:.0f}', f'{scaled:.2f} s', up_t, up_m, ratio]
            print('| ' + ' | '.join(cells) + ' |')
        else:
            print(f'{r["config"]:<8} {MEASUREMENTS[r["measurement"]]:<50} batch {r["batch"]}  '
                  f'res {r["neural_res"]:>3}  '
                  f'median {r["median_s"]:6.2f} s (min {r["min_s"]:.2f}, CPU {r["cpu_s"]:.2f} s, '
                  f'{r["median_s"] / r["batch"]:.3f} s/img)  peak {r["peak_rss_gib"]:.2f} GiB  '
                  f'matmul {r["matmul_gflops"]:.0f} GFLOP/s -> scaled {scaled:.2f} s   '
                  f'upstream {up_t} {up_m}  ratio (raw, scaled) {ratio}')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--rows', default=','.join(DEFAULT_ROWS),
                        help=f'comma-separated rows, or "all" (rows: {", ".join(ROWS)})')
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--threads', type=int, default=2, help='torch threads (upstream figures: 2)')
    parser.add_argument('--omp-passive', type=int, default=0, help='run rows with OMP_WAIT_POLICY=PASSIVE (1) or '
                        'with the environment\'s (0, default: the OpenMP default unless set, as train.py runs); '
                        'passive avoids 10-40x slowdowns when the cores are shared, and costs 5-15%% on a quiet '
                        'machine')
    parser.add_argument('--markdown', action='store_true', help='print a table for docs/perf.md')
    parser.add_argument('--profile', action='store_true', help='print a profile of one extra step per row')
    parser.add_argument('--child', default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.child is not None:
        print(json.dumps(run_row(args.child, args.repeats, args.warmup, args.profile)))
        return

    names = list(ROWS) if args.rows == 'all' else [r.strip() for r in args.rows.split(',') if r.strip()]
    unknown = [r for r in names if r not in ROWS]
    if unknown:
        parser.error(f'unknown rows {unknown}; choose from {list(ROWS)} or "all"')
    print(f'torch {torch.__version__}, {args.threads} threads, OMP_WAIT_POLICY='
          f'{"PASSIVE" if args.omp_passive else os.environ.get("OMP_WAIT_POLICY", "default")}, '
          f'{args.warmup} warm-up + median of {args.repeats}, one process per row', flush=True)
    results = []
    for name in names:
        results.append(run_in_subprocess(name, args))
        if not args.markdown:
            print_table(results[-1:], markdown=False)
            sys.stdout.flush()
    if args.markdown:
        print_table(results, markdown=True)


if __name__ == '__main__':
    main()
