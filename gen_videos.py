"""Latent-interpolation videos on an orbiting camera with a trained EG3D generator (upstream's options
and file names; the work is in training/video.py).

Accepts this project's network snapshots, training states (training-state-*.pt) and official EG3D
pickles, local paths or URLs; nothing in the file is executed. Runs on CUDA when available, else on
the CPU.

\b
    python gen_videos.py --outdir=out --trunc=0.7 --seeds=0-3 --grid=2x2 --network=ffhq512-128.pkl
    python gen_videos.py --outdir=out --seeds=0,1 --interpolate=False --network=network-snapshot-000400.pkl

Writes <outdir>/interpolation.mp4, or with --interpolate=False one <outdir>/<seed>.mp4 per seed
(a fixed latent, the camera orbits; the backbone runs once per video).
"""

from __future__ import annotations

import os
import sys

import click
import numpy as np
import torch
from tqdm import tqdm

from training import inference, video
from training import shapes as shape_io


def gen_interp_video(G, mp4: str, seeds: list[int], grid: tuple[int, int] = (1, 1), num_keyframes: int | None = None,
                     w_frames: int = 120, truncation_psi: float = 1, truncation_cutoff: int = 14, cfg: str = 'FFHQ',
                     image_mode: str = 'image', gen_shapes: bool = False, shape_res: int = 512,
                     shuffle_seed: int | None = None, device: torch.device | None = None, progress: bool = True,
                     fps: int = 60) -> video.FrameRenderer:
    """Write one video of K * w_frames frames to `mp4` (K keyframes, see training/video.py). With
    gen_shapes, a mesh per cell whenever its latent changes (every frame when interpolating, once for
    one keyframe) goes to <mp4 stem>_shapes/ and the camera labels [frames, 25] to
    <mp4 stem>_trajectory.npy. Returns the frame renderer (its backbone_passes count)."""
    device = device or next(G.parameters()).device
    grid_w, grid_h = grid
    all_seeds = video.keyframe_seeds(seeds, grid, num_keyframes, shuffle_seed)
    num_keyframes = all_seeds.shape[2]
    focal = video.CFG_FOCAL[cfg]
    c_cond = video.camera_label(G, video.PI / 2, video.PI / 2, focal, device)

    zs = torch.cat([inference.latent(int(seed), G.z_dim, device) for seed in all_seeds.ravel()])
    with torch.no_grad():
        ws = G.mapping(zs, c_cond.expand(len(zs), -1), truncation_psi=truncation_psi,
                       truncation_cutoff=truncation_cutoff)
    ws = ws.reshape(grid_h, grid_w, num_keyframes, *ws.shape[1:])
    paths = [[video.LatentPath(ws[yi, xi], w_frames) for xi in range(grid_w)] for yi in range(grid_h)]

    stem = os.path.splitext(mp4)[0]
    num_frames = num_keyframes * w_frames
    render = video.FrameRenderer(G, image_mode)
    trajectory = []
    torch.manual_seed(0)  # The renderer's jitter: reruns give the same video.
    with video.mp4_writer(mp4, fps=fps) as writer:
        for frame in tqdm(range(num_frames), desc=os.path.basename(mp4), unit='frame', disable=not progress):
            c = video.camera_label(G, *video.camera_angles(frame, num_frames), focal, device)
            trajectory.append(c[0].cpu().numpy())
            images = []
            for yi in range(grid_h):
                for xi in range(grid_w):
                    w = paths[yi][xi](frame)
                    img, new_latent = render((yi, xi), w, c)
                    images.append(img)
                    if gen_shapes and new_latent:
                        _save_frame_shape(G, w, f'{stem}_shapes', frame, (yi, xi), grid, shape_res)
            writer.append_data(video.layout_grid(images, grid))
    if gen_shapes:
        np.save(f'{stem}_trajectory.npy', np.stack(trajectory))
    return render


def _save_frame_shape(G, w, directory: str, frame: int, cell, grid, resolution: int) -> None:
    """Upstream's video shapes: .ply at level 10, border 0 on every face and a wider border
    int(38 N / 256) at the top (high y)."""
    name = f'{frame:04d}_shape.ply' if grid == (1, 1) else f'{frame:04d}_r{cell[0]}c{cell[1]}_shape.ply'
    field = shape_io.DensityField(G, w)
    shape_io.save_shape(os.path.join(directory, name), field, resolution, fmt='.ply', pad_value=0,
                        pad_top=int(38 * resolution / 256))

# ----------------------------------------------------------------------------


def _parse(fn):
    def callback(ctx, param, value):
        if value is None:
            return None
        try:
            return fn(value)
        except ValueError as err:
            raise click.BadParameter(str(err)) from None
    return callback


@click.command()
@click.option('--network', 'network_pkl', help='Network snapshot, training state or official pickle (path or URL)',
              required=True)
@click.option('--seeds', type=str, callback=_parse(inference.parse_range), help='List of random seeds', required=True)
@click.option('--shuffle-seed', type=int, help='Random seed to use for shuffling seed order', default=None)
@click.option('--grid', type=str, callback=_parse(inference.parse_vec2), help='Grid width/height, e.g. \'4x3\' '
              '(default: 1x1)', default='1x1')
@click.option('--num-keyframes', type=click.IntRange(min=1), help='Number of seeds to interpolate through. If not '
              'specified, determine based on the length of the seeds array given by --seeds.', default=None)
@click.option('--w-frames', type=click.IntRange(min=1), help='Number of frames to interpolate between latents',
              default=120, show_default=True)
@click.option('--trunc', 'truncation_psi', type=float, help='Truncation psi', default=1, show_default=True)
@click.option('--trunc-cutoff', 'truncation_cutoff', type=int, help='Truncation cutoff', default=14, show_default=True)
@click.option('--outdir', help='Output directory', type=str, required=True, metavar='DIR')
@click.option('--reload_modules', help='Accepted for compatibility: networks are always rebuilt from this checkout\'s '
              'code', type=bool, default=False, show_default=True, metavar='BOOL')
@click.option('--cfg', help='Config (sets the focal length of the cameras)', type=click.Choice(list(video.CFG_FOCAL)),
              default='FFHQ', show_default=True)
@click.option('--image_mode', help='Image mode (image_near/image_far: dolly zoom, see training/video.py)',
              type=click.Choice(list(video.IMAGE_MODES)), default='image', show_default=True)
@click.option('--sample_mult', 'sampling_multiplier', type=float, help='Multiplier for depth sampling in volume '
              'rendering', default=2, show_default=True)
@click.option('--nrr', type=click.IntRange(min=4), help='Neural rendering resolution override', default=None)
@click.option('--shapes', type=bool, help='Gen shapes for shape interpolation', default=False, show_default=True,
              metavar='BOOL')
@click.option('--shape-res', help='Shape grid resolution (with --shapes)', type=click.IntRange(min=8), default=512,
              show_default=True)
@click.option('--interpolate', type=bool, help='Interpolate between seeds', default=True, show_default=True,
              metavar='BOOL')
def generate_videos(network_pkl, seeds, shuffle_seed, grid, num_keyframes, w_frames, truncation_psi,
                    truncation_cutoff, outdir, reload_modules, cfg, image_mode, sampling_multiplier, nrr, shapes,
                    shape_res, interpolate):
    """Render a latent vector interpolation video.

    \b
    python gen_videos.py --outdir=out --trunc=0.7 --seeds=0-31 --grid=4x2 --network=ffhq512-128.pkl
    python gen_videos.py --outdir=out --seeds=0 --interpolate=False --image_mode=image_depth \\
        --network=network-snapshot-000400.pkl

    Animation length and seed keyframes: the animation length is num_keyframes * w_frames frames at
    60 fps. With a grid, each cell takes K consecutive seeds: --seeds=0-7 --grid=2x2 gives cell
    (0, 0) the keyframes 0, 1, cell (0, 1) the keyframes 2, 3, and so on.
    """
    _ = reload_modules
    G, device = inference.load_generator_or_exit(network_pkl, 'gen_videos.py')
    G.rendering_kwargs['depth_resolution'] = int(G.rendering_kwargs['depth_resolution'] * sampling_multiplier)
    G.rendering_kwargs['depth_resolution_importance'] = int(
        G.rendering_kwargs['depth_resolution_importance'] * sampling_multiplier)
    if nrr is not None:
        G.neural_rendering_resolution = nrr
    if truncation_cutoff == 0:
        truncation_psi = 1.0  # No truncation, as upstream.
    if truncation_psi == 1.0:
        truncation_cutoff = 14

    os.makedirs(outdir, exist_ok=True)
    jobs = [(os.path.join(outdir, 'interpolation.mp4'), seeds, num_keyframes)] if interpolate else \
        [(os.path.join(outdir, f'{seed}.mp4'), [seed], None) for seed in seeds]
    try:
        for mp4, job_seeds, keyframes in jobs:
            gen_interp_video(G, mp4, job_seeds, grid=grid, num_keyframes=keyframes, w_frames=w_frames,
                             truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff, cfg=cfg,
                             image_mode=image_mode, gen_shapes=shapes, shape_res=shape_res,
                             shuffle_seed=shuffle_seed, device=device)
            print(f'Wrote {mp4}')
    except video.VideoOptionsError as err:
        print(f'gen_videos.py: {err}', file=sys.stderr)
        raise SystemExit(1)


if __name__ == '__main__':
    from torch_utils import malloc_tuning
    malloc_tuning.apply()  # Keep freed activations in the heap (see the module); EG3D_MALLOC_TUNING=0: off.
    generate_videos()
