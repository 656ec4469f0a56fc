"""Training and generation throughput per preset: s/kimg, images/s and peak memory, with the GPU switches
of docs/gpu.md (--precision, --compile, --tf32). Meant for a CUDA machine; runs on the CPU for a smoke test.

    python benchmarks/bench_gpu.py --presets ffhq,afhq,shapenet --batch-gpu 4               # on a GPU
    python benchmarks/bench_gpu.py --presets ffhq --precision bf16 --compile default --tf32 1
    python benchmarks/bench_gpu.py --device cpu --presets tiny --iters 2 --warmup 1          # CPU smoke test

For each preset, networks are built exactly as train.py builds them (random initialisation, synthetic
real images and FFHQ-like cameras: nothing is read from disk). "train" runs whole training iterations
as training_loop() does on one GPU (every phase at its interval: Gmain, Greg every 4th, Dmain, Dreg every
16th, with optimiser steps; the EMA update and data loading are left out), --iters of them after
--warmup; s/kimg = seconds per 1000 real images. Lazy regularisers make iterations uneven, so use
--iters of at least 16 on a GPU for a fair mean. "generate" times G_ema-style inference (G(z, c) without
gradients, noise_mode 'const') at the preset's final neural rendering resolution. Peak memory is
torch.cuda.max_memory_allocated on CUDA, peak RSS of the process on the CPU.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

import dnnlib  # noqa: E402
from camera_utils import FOV_to_intrinsics, LookAtPoseSampler  # noqa: E402
from training import accel  # noqa: E402
from training import options as training_options  # noqa: E402
from training.presets import PRESETS, resolve_preset  # noqa: E402

RESOLUTIONS = {'ffhq': 512, 'afhq': 512, 'shapenet': 128, 'tiny': 64, 'tiny-sg3': 64}


def build(preset: str, batch_gpu: int, device: torch.device, overrides: dict):
    """(options, G, D, loss, phases) for one preset on `device`, as train.py / training_loop build them."""
    resolution = RESOLUTIONS[preset]

    def dataset_kwargs(data, use_labels, xflip, mirror_labels, seed):
        return dnnlib.EasyDict(class_name='training.dataset.ImageFolderDataset', path=data, use_labels=True,
                               max_size=batch_gpu, xflip=False, resolution=resolution, random_seed=seed), 'bench'

    training_options.dataset_kwargs = dataset_kwargs  # Networks only: no data is read.
    opts = resolve_preset(preset, dict(overrides, gpus=1, batch=batch_gpu, gamma=PRESETS[preset]['gamma'] or 1))
    c = training_options.build_training_options({**opts, 'data': 'bench'})[0]
    from training.training_loop import build_phases
    common = dict(c_dim=25, img_resolution=resolution, img_channels=3)
    torch.manual_seed(0)
    G = dnnlib.util.construct_class_by_name(**c.G_kwargs, **common).train().requires_grad_(False).to(device)
    D = dnnlib.util.construct_class_by_name(**c.D_kwargs, **common).train().requires_grad_(False).to(device)
    loss = dnnlib.util.construct_class_by_name(device=device, G=G, D=D, **c.loss_kwargs)
    phases = build_phases(G, D, c.G_opt_kwargs, c.D_opt_kwargs, c.G_reg_interval, c.D_reg_interval)
    return c, G, D, loss, phases


def cameras(n: int, device) -> torch.Tensor:
    intrinsics = FOV_to_intrinsics(18.837).reshape(1, 9)
    poses = [LookAtPoseSampler.sample(3.14159 / 2 + 0.2 * (i - n / 2), 3.14159 / 2, torch.tensor([0, 0, 0.2]),
                                      radius=2.7).reshape(1, 16) for i in range(n)]
    return torch.cat([torch.cat([p, intrinsics], dim=1) for p in poses]).to(device)


def sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def peak_memory_gib(device) -> float:
    if device.type == 'cuda':
        return torch.cuda.max_memory_allocated(device) / 2 ** 30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB -> GiB (Linux).


def bench_train(preset: str, args, device) -> dict:
    c, G, D, loss, phases = build(preset, args.batch_gpu, device, args.overrides)
    accel.compile_networks(G, D, args.compile)
    scaler = accel.FP16LossScaler(enabled=(args.precision == 'fp16'))
    n = args.batch_gpu
    gen = torch.Generator().manual_seed(1)
    real_img = (torch.rand(n, 3, G.img_resolution, G.img_resolution, generator=gen) * 2 - 1).to(device)
    real_c = cameras(n, device)
    from training.training_loop import average_gradients

    def iteration(batch_idx, cur_nimg):
        for phase in phases:
            if batch_idx % phase.interval != 0:
                continue
            phase.opt.zero_grad(set_to_none=True)
            phase.module.requires_grad_(True)
            gen_z = torch.randn([n, G.z_dim], generator=gen).to(device)
            with accel.autocast(device, args.precision):
                loss.accumulate_gradients(phase=phase.name, real_img=real_img, real_c=real_c, gen_z=gen_z,
                                          gen_c=real_c, gain=phase.interval * scaler.scale, cur_nimg=cur_nimg)
            phase.module.requires_grad_(False)
            if scaler.unscale(phase.module):
                average_gradients(phase.module, 1, 1)
                phase.opt.step()

    for i in range(args.warmup):
        iteration(i, 0)
    sync(device)
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for i in range(args.iters):
        iteration(args.warmup + i, 0)
    sync(device)
    seconds = (time.perf_counter() - start) / args.iters
    return dict(preset=preset, mode='train', batch=n, neural_res=loss.neural_rendering_resolution(0),
                s_per_kimg=seconds / n * 1000, images_per_s=n / seconds, peak_gib=peak_memory_gib(device))


def bench_generate(preset: str, args, device) -> dict:
    c, G, D, loss, phases = build(preset, args.batch_gpu, device, args.overrides)
    del D, loss, phases
    G.eval()
    accel.compile_networks(G, None, args.compile)
    res = c.loss_kwargs.neural_rendering_resolution_final or c.loss_kwargs.neural_rendering_resolution_initial
    n = args.batch_gpu
    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(2)).to(device)
    cams = cameras(n, device)

    def step():
        with torch.no_grad(), accel.autocast(device, args.precision):
            G(z, cams, neural_rendering_resolution=res, noise_mode='const')
    for _ in range(args.warmup):
        step()
    sync(device)
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(args.iters):
        step()
    sync(device)
    seconds = (time.perf_counter() - start) / args.iters
    return dict(preset=preset, mode='generate', batch=n, neural_res=res, s_per_kimg=seconds / n * 1000,
                images_per_s=n / seconds, peak_gib=peak_memory_gib(device))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--presets', default='ffhq,afhq,shapenet', help=f'comma list of {list(RESOLUTIONS)}')
    parser.add_argument('--modes', default='train,generate', help='train, generate or both')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--batch-gpu', type=int, default=4, help='images per iteration (one GPU)')
    parser.add_argument('--iters', type=int, default=16, help='timed iterations per row')
    parser.add_argument('--warmup', type=int, default=2, help='untimed iterations first (compilation, autotuning)')
    parser.add_argument('--precision', default='fp32', choices=accel.PRECISIONS)
    parser.add_argument('--compile', default=None, choices=accel.COMPILE_MODES)
    parser.add_argument('--tf32', type=int, default=0, help='1: allow TF32 on CUDA')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    parser.add_argument('--neural-res', type=int, default=None, help='override the neural rendering resolution')
    args = parser.parse_args()
    device = torch.device(args.device)
    try:
        accel.check(device, args.precision, args.compile)
    except ValueError as err:
        parser.error(str(err))
    accel.set_tf32(device, bool(args.tf32))
    if device.type == 'cuda':
        torch.backends.cudnn.benchmark = True
    if args.threads:
        torch.set_num_threads(args.threads)
    args.overrides = {}
    if args.neural_res:
        args.overrides = dict(neural_rendering_resolution_initial=args.neural_res,
                              neural_rendering_resolution_final=None)
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else f'CPU, {torch.get_num_threads()} threads'
    print(f'{name}; torch {torch.__version__}; precision {args.precision}, compile {args.compile}, '
          f'tf32 {bool(args.tf32)}; {args.iters} iterations after {args.warmup} warm-up', flush=True)
    print('| preset | mode | batch | neural res | s/kimg | images/s | peak GiB |')
    print('|---|---|---:|---:|---:|---:|---:|')
    for preset in args.presets.split(','):
        for mode in args.modes.split(','):
            fn = {'train': bench_train, 'generate': bench_generate}[mode]
            r = fn(preset, args, device)
            print(f'| {r["preset"]} | {r["mode"]} | {r["batch"]} | {r["neural_res"]} | {r["s_per_kimg"]:.1f} | '
                  f'{r["images_per_s"]:.2f} | {r["peak_gib"]:.2f} |', flush=True)
            if device.type == 'cuda':
                torch.cuda.empty_cache()


if __name__ == '__main__':
    main()
