"""The end-to-end demo (demo.py, the README's first command): build the synthetic box dataset, train the
'tiny' preset on the CPU for a few kimg, check that it learned, and render samples, a shape and an orbit.

Each stage runs the project's own command (dataset_tool.py, train.py, gen_samples.py, gen_videos.py) as a
new user would, in a subprocess; the checks run here:
  - SWD (metrics/sliced_wasserstein.py) of the last snapshot against the first (kimg 0) and against the
    SWD between the dataset and copies of its mean image (what a generator that learned only the average
    colour layout scores);
  - 3D consistency (metrics/reprojection.py): G_ema's views at two yaws, one reprojected into the other
    through the rendered depth, beat the same reprojection through a flat plane at the mean depth.
Outputs go to a new numbered run directory under <outdir>/runs (the dataset is shared and reused), so a
rerun never clobbers an earlier one. The process exits with 1 when a learning check fails.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import PIL.Image
import torch

import dnnlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


_PROGRESS_BAR = re.compile(r'\d+%\|')


def _shown(path: str) -> str:
    """A path as printed: relative to the working directory when inside it."""
    rel = os.path.relpath(path)
    return path if rel.startswith('..') else rel


class DemoError(RuntimeError):
    """A stage of the demo failed (the message names the stage and the cause)."""


@dataclasses.dataclass
class DemoOptions:
    outdir:        str = 'demo-out'    # Dataset and runs go here.
    kimg:          float | None = None  # Training length; None = the tiny preset's.
    train_minutes: float = 7.0          # Wall-time cap of training (SIGTERM: the loop writes a final snapshot).
    images:        int = 1000           # Dataset size.
    resolution:    int = 32             # Dataset resolution (must match the tiny preset's SR output).
    kind:          str = 'box'          # Synthetic kind (training/synthetic.py).
    yaw_std:       float = 0.7          # Camera yaw spread (rad): twice EG3D's FFHQ-like default, so that a flat
    pitch_std:     float = 0.3          # card cannot pass for the box and geometry is learned early.
    seed:          int = 0              # Training seed.
    swd_images:    int = 256            # Images per SWD set.
    reproj_seeds:  int = 16             # Seeds of the reprojection check (two view pairs each).
    video_frames:  int = 120            # Frames of the orbit video (60 fps).
    shape_res:     int = 64             # Voxels per side of the shape.
    train_args:    tuple = ()           # Extra train.py arguments (tests shrink the networks with --set).
    check:         bool = True          # Exit 1 when a learning check fails.

# ----------------------------------------------------------------------------
# Running the commands.


def run_command(args: list[str], stage: str, log=print, deadline: float | None = None,
                started: re.Pattern | None = None) -> list[str]:
    """Run `python <args>` from the repository root, echoing its output; returns the output lines. With a
    deadline (time.time()), send SIGTERM once it passes and a line has matched `started` (train.py's
    handler then stops the loop cleanly and writes a final snapshot; before that, SIGTERM would kill it)."""
    cmd = [sys.executable, *args]
    log(f'$ {" ".join(_shown(a) if os.path.isabs(a) else a for a in cmd)}')
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    env.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1)
    lines = []
    state = {'started': started is None, 'stopped': False}

    def watch():
        while proc.poll() is None:
            if state['started'] and not state['stopped'] and time.time() > deadline:
                log(f'[demo] {stage}: wall-time cap reached; asking it to stop (SIGTERM)')
                proc.send_signal(signal.SIGTERM)
                state['stopped'] = True
            time.sleep(0.5)

    try:
        if deadline is not None:
            threading.Thread(target=watch, daemon=True).start()
        for line in proc.stdout:
            line = line.rstrip('\n')
            lines.append(line)
            if started is not None and started.match(line):
                state['started'] = True
            if not _PROGRESS_BAR.search(line):  # tqdm's bars (gen_videos.py) would flood a log.
                log(f'  {line}')
        proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    if proc.returncode != 0:
        tail = '\n'.join(lines[-15:])
        raise DemoError(f'{stage} failed (exit code {proc.returncode}):\n{tail}')
    return lines


def make_dataset(o: DemoOptions, log=print) -> str:
    """The synthetic dataset zip (built once; dataset_tool writes it under a temporary name)."""
    path = os.path.join(o.outdir, f'{o.kind}{o.resolution}-{o.images}-yaw{o.yaw_std:g}-pitch{o.pitch_std:g}.zip')
    if os.path.isfile(path):
        log(f'[demo] dataset: reusing {path}')
        return path
    os.makedirs(o.outdir, exist_ok=True)
    run_command(['dataset_tool.py', f'--source=synthetic:{o.kind}', f'--dest={path}',
                 f'--resolution={o.resolution}x{o.resolution}', f'--max-images={o.images}', f'--yaw-std={o.yaw_std:g}',
                 f'--pitch-std={o.pitch_std:g}'], 'dataset_tool.py', log)
    return path


def train(o: DemoOptions, data: str, log=print) -> str:
    """Train the tiny preset; returns the run directory."""
    args = ['train.py', f'--outdir={os.path.join(o.outdir, "runs")}', '--cfg=tiny', f'--data={data}',
            f'--seed={o.seed}', '--metrics=none', '--workers=0']
    if o.kimg is not None:
        args.append(f'--kimg={o.kimg:g}')
    args += list(o.train_args)
    lines = run_command(args, 'train.py', log, deadline=time.time() + 60 * o.train_minutes,
                        started=re.compile(r'tick 0 '))
    for line in lines:
        match = re.match(r'Output directory: (.*)$', line)
        if match:
            return os.path.join(ROOT, match.group(1)) if not os.path.isabs(match.group(1)) else match.group(1)
    raise DemoError('train.py did not print its output directory')


def snapshots(run_dir: str) -> tuple[str, str]:
    """(first, last) network snapshot of a run."""
    found = sorted(glob.glob(os.path.join(run_dir, 'network-snapshot-*.pkl')))
    if len(found) < 2:
        raise DemoError(f'{run_dir}: expected a first (kimg 0) and a last network snapshot, found {len(found)}: '
                        f'training stopped before 1 kimg (--kimg or --train-minutes too small for this machine)')
    return found[0], found[-1]

# ----------------------------------------------------------------------------
# Checks.


def load_snapshot(path: str) -> dict:
    import legacy
    with open(path, 'rb') as f:
        return legacy.load_network_pkl(f)


def swd_table(first: dict, last: dict, num_images: int, seed: int = 0, cache_dir: str | None = None
              ) -> dict[str, float]:
    """SWD (x1e3, averaged over pyramid levels) of the first and last G_ema and of the mean image, all
    against the same real images (their descriptors cached in cache_dir; None = dnnlib's cache)."""
    from metrics import metric_utils, sliced_wasserstein
    dataset_kwargs = dnnlib.EasyDict(last['training_set_kwargs'], max_size=None, xflip=False)
    common = dict(dataset_kwargs=dataset_kwargs, num_workers=0, seed=seed, cache_dir=cache_dir)
    out = {}
    for name, snap in [('first', first), ('last', last)]:
        opts = metric_utils.MetricOptions(G=snap['G_ema'], **common)
        out[name] = sliced_wasserstein.compute_swd(opts, num_images)[1]
    opts = metric_utils.MetricOptions(**common)
    out['mean_image'] = sliced_wasserstein.compute_swd_mean_image(opts, num_images)[1]
    return out


def choose_shape_level(G, seed: int, resolution: int = 48) -> float:
    """A marching-cubes level that gives a surface: upstream's 10 when the density crosses it over a
    sensible share of the box (0.1% .. 30% of the voxels), else the 97th percentile of the density."""
    from training import inference
    from training import shapes as shape_io
    with torch.no_grad():
        ws = G.mapping(inference.latent(seed, G.z_dim, torch.device('cpu')), _front_camera(G))
        field = shape_io.DensityField(G, ws)
        box = field.box_warp
        axis = np.linspace(-box / 2, box / 2, resolution, dtype=np.float32)
        points = np.stack(np.meshgrid(axis, axis, axis, indexing='ij'), axis=-1).reshape(-1, 3)
        sigma = field.sigma(points).flatten().numpy()
    inside = float((sigma > shape_io.DEFAULT_LEVEL).mean())
    if 0.001 <= inside <= 0.3:
        return shape_io.DEFAULT_LEVEL
    return float(np.quantile(sigma, 0.97))


def _front_camera(G) -> torch.Tensor:
    from training import inference
    focal = float(G.rendering_kwargs.get('focal', 4.2647))
    intrinsics = torch.tensor([[focal, 0, 0.5], [0, focal, 0.5], [0, 0, 1]], dtype=torch.float32)
    return inference.orbit_camera(G, math.pi / 2, math.pi / 2, intrinsics, torch.device('cpu'))


def ply_vertex_count(path: str) -> int:
    with open(path, 'rb') as f:
        for raw in f:
            line = raw.decode('ascii', 'replace').strip()
            if line.startswith('element vertex'):
                return int(line.split()[2])
            if line == 'end_header':
                break
    raise DemoError(f'{path}: not a .ply file (no vertex count in its header)')

# ----------------------------------------------------------------------------
# Pictures.


def save_png(path: str, pixels: np.ndarray, scale: int = 1) -> str:
    """inference.save_png (atomic), enlarged `scale` times with nearest-neighbour pixels."""
    from training import inference
    if scale > 1:
        pixels = pixels.repeat(scale, axis=0).repeat(scale, axis=1)
    inference.save_png(path, pixels)
    return path


def sample_grid(sample_pngs: list[str], columns: int = 2) -> np.ndarray:
    """gen_samples.py's three-view strips (seedNNNN.png) tiled into `columns` columns, 2 px gaps."""
    strips = [np.asarray(PIL.Image.open(p).convert('RGB')) for p in sample_pngs]
    h, w, _ = strips[0].shape
    rows = math.ceil(len(strips) / columns)
    gap = 2
    grid = np.full([rows * h + (rows - 1) * gap, columns * w + (columns - 1) * gap, 3], 255, np.uint8)
    for i, s in enumerate(strips):
        r, c = divmod(i, columns)
        grid[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = s
    return grid


def orbit_strip(G, seed: int, num_views: int = 8, yaw_range: float = 0.6) -> np.ndarray:
    """One latent (mapped with the frontal camera) rendered at `num_views` yaws in [-yaw_range, yaw_range]
    about the front: images over depth maps (over every view's more-than-half-opaque pixels, scaled
    together, near bright; black elsewhere)."""
    from training import inference
    focal = float(G.rendering_kwargs.get('focal', 4.2647))
    intrinsics = torch.tensor([[focal, 0, 0.5], [0, focal, 0.5], [0, 0, 1]], dtype=torch.float32)
    images, depths, masks = [], [], []
    opacity = []
    hook = G.renderer.register_forward_hook(lambda module, inputs, output: opacity.append(output[2]))
    try:
        with torch.no_grad():
            torch.manual_seed(seed)
            ws = G.mapping(inference.latent(seed, G.z_dim, torch.device('cpu')), _front_camera(G))
            for yaw in np.linspace(-yaw_range, yaw_range, num_views):
                c = inference.orbit_camera(G, math.pi / 2 + float(yaw), math.pi / 2, intrinsics, torch.device('cpu'))
                out = G.synthesis(ws, c, noise_mode='const')
                size = out['image'].shape[-2:]
                resize = lambda x: torch.nn.functional.interpolate(x, size=size, mode='bilinear', align_corners=False)
                images.append(out['image'][0])
                depths.append(resize(out['image_depth'])[0])
                masks.append(resize(opacity.pop().reshape(out['image_depth'].shape))[0] > 0.5)
    finally:
        hook.remove()
    depth, mask = torch.cat(depths, dim=2), torch.cat(masks, dim=2)
    near, far = (depth[mask].min(), depth[mask].max()) if mask.any() else (depth.min(), depth.max())
    shade = ((far - depth) / (far - near).clamp(min=1e-8)).clamp(0, 1) * 0.8 + 0.2   # Near 1, far 0.2.
    depth_img = torch.where(mask, shade * 2 - 1, torch.full_like(shade, -1)).expand(3, -1, -1)
    return np.concatenate([inference.to_uint8(torch.cat(images, dim=2)), inference.to_uint8(depth_img)], axis=0)

# ----------------------------------------------------------------------------


def run_demo(o: DemoOptions, log=print) -> dict:
    """All stages; returns the summary (also written to <run>/demo/summary.json)."""
    times = {}
    t0 = time.time()
    data = make_dataset(o, log)
    times['dataset'] = time.time() - t0

    t = time.time()
    log('[demo] training the tiny preset on the CPU (tick lines: kimg, sec/kimg, ...)')
    run_dir = train(o, data, log)
    times['training'] = time.time() - t
    first_pkl, last_pkl = snapshots(run_dir)
    demo_dir = os.path.join(run_dir, 'demo')
    os.makedirs(demo_dir, exist_ok=True)

    t = time.time()
    log(f'[demo] checking what was learned: {os.path.basename(first_pkl)} vs {os.path.basename(last_pkl)}')
    first, last = load_snapshot(first_pkl), load_snapshot(last_pkl)
    G = last['G_ema'].eval().requires_grad_(False)
    swd = swd_table(first, last, o.swd_images, o.seed, cache_dir=os.path.join(o.outdir, 'cache'))
    from metrics import reprojection
    reproj = reprojection.generator_reprojection(G, list(range(o.reproj_seeds)))  # Yaws +-0.35 rad.
    times['checks'] = time.time() - t

    t = time.time()
    level = choose_shape_level(G, seed=0)
    samples_dir = os.path.join(demo_dir, 'samples')
    run_command(['gen_samples.py', f'--network={last_pkl}', '--seeds=0-7', f'--outdir={samples_dir}',
                 '--shapes=True', '--shape-only-first=True', '--shape-format=.ply', '--shape-colors=True',
                 '--shape-units=world', f'--shape-res={o.shape_res}', f'--shape-level={level:g}'],
                'gen_samples.py', log)
    ply = os.path.join(samples_dir, 'seed0000.ply')
    vertices = ply_vertex_count(ply)
    video_dir = os.path.join(demo_dir, 'video')
    run_command(['gen_videos.py', f'--network={last_pkl}', '--seeds=0', '--interpolate=False', '--grid=1x1',
                 f'--w-frames={o.video_frames}', f'--outdir={video_dir}'], 'gen_videos.py', log)
    mp4 = os.path.join(video_dir, '0.mp4')
    grid_png = save_png(os.path.join(demo_dir, 'samples.png'),
                        sample_grid([os.path.join(samples_dir, f'seed{s:04d}.png') for s in range(8)]))
    strip_png = save_png(os.path.join(demo_dir, 'orbit.png'), orbit_strip(G, seed=0))
    times['outputs'] = time.time() - t

    kimg_last = int(re.search(r'(\d+)\.pkl$', last_pkl).group(1))
    checks = [
        ('SWD(last) <= 0.7 x SWD(first)', swd['last'] <= 0.7 * swd['first'],
         f'{swd["last"]:.1f} <= 0.7 x {swd["first"]:.1f} = {0.7 * swd["first"]:.1f}'),
        ('SWD(last) < SWD(mean image)', swd['last'] < swd['mean_image'],
         f'{swd["last"]:.1f} < {swd["mean_image"]:.1f}'),
        ('reprojection, rendered depth < flat plane', reproj['rendered'] < reproj['flat'],
         f'{reproj["rendered"]:.4f} < {reproj["flat"]:.4f} ({reproj["pairs"]} view pairs)'),
        ('shape is not empty', vertices > 0, f'{vertices} vertices at level {level:g}'),
    ]
    summary = dict(run_dir=run_dir, first_snapshot=first_pkl, last_snapshot=last_pkl, kimg=kimg_last,
                   swd=swd, reprojection=reproj, shape_level=level, shape_vertices=vertices,
                   checks={name: bool(ok) for name, ok, _ in checks}, seconds=times,
                   outputs=dict(dataset=data, snapshot=last_pkl, samples=grid_png, samples_dir=samples_dir,
                                shape=ply, video=mp4, orbit=strip_png))
    summary_path = os.path.join(demo_dir, 'summary.json')
    with dnnlib.util.atomic_write_path(summary_path) as tmp, open(tmp, 'wt') as f:
        json.dump(summary, f, indent=2)
    summary['outputs']['summary'] = summary_path

    log()
    log(f'[demo] results after {kimg_last} kimg (SWD x1e3 on {o.swd_images} images at {o.resolution}x{o.resolution}; '
        f'reprojection: mean |error| in [0, 1] units)')
    log(f'  {"SWD first snapshot (kimg 0)":<44s} {swd["first"]:8.1f}')
    log(f'  {"SWD last snapshot":<44s} {swd["last"]:8.1f}')
    log(f'  {"SWD mean-image baseline":<44s} {swd["mean_image"]:8.1f}')
    log(f'  {"reprojection error, rendered depth":<44s} {reproj["rendered"]:8.4f}')
    log(f'  {"reprojection error, flat plane at mean depth":<44s} {reproj["flat"]:8.4f}')
    for name, ok, detail in checks:
        log(f'  {"PASS" if ok else "FAIL"}  {name}: {detail}')
    log('[demo] time: ' + ', '.join(f'{k} {v:.0f} s' for k, v in times.items()) + f', total {time.time() - t0:.0f} s')
    log('[demo] outputs:')
    for name, path in summary['outputs'].items():
        log(f'  {name:<12s} {_shown(path)}')
    summary['passed'] = all(ok for _, ok, _ in checks)
    return summary
