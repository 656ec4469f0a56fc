"""Generate images, depth maps and shapes with a trained EG3D generator.

Accepts this project's network snapshots, training states (training-state-*.pt) and official EG3D
pickles (ffhq512-128.pkl, ...), local paths or URLs; nothing in the file is executed. Runs on CUDA
when available, else on the CPU. Upstream's options and file names:

\b
    python gen_samples.py --outdir=out --trunc=0.7 --seeds=0-3 --network=ffhq512-128.pkl
    python gen_samples.py --outdir=out --trunc=0.7 --seeds=0 --shapes=True --shape-format=.ply \\
        --network=network-snapshot-000400.pkl

Per seed: seed0000.png (yaw +0.4, 0, -0.4 about the frontal view, pitch -0.2), seed0000_depth.png
(the three depth maps at the neural rendering resolution, near is bright), and with --shapes
seed0000.mrc or seed0000.ply (axes and units: training/shapes.py, docs/migrating-from-eg3d.md).
"""

from __future__ import annotations

import math
import os
import sys

import click
import torch

from camera_utils import FOV_to_intrinsics
from training import inference
from training.image_grid import depth_to_image
from training import shapes as shape_io

FOV_DEG_DEFAULT = 18.837    # Upstream declares it as an int option and so runs with 18 (focal 4.4652, not 4.2634).
VIEWS = ((0.4, -0.2), (0.0, -0.2), (-0.4, -0.2))  # (yaw, pitch) offsets from the frontal pose, as upstream.


def generate_samples(G, seeds: list[int], outdir: str, truncation_psi: float = 1, truncation_cutoff: int = 14,
                     fov_deg: float = FOV_DEG_DEFAULT, depth: bool = True, shape_kwargs: dict | None = None,
                     shape_only_first: bool = False, device: torch.device | None = None, log=print) -> list[str]:
    """Write each seed's images (and shapes when shape_kwargs is given, see training.shapes.save_shape) to
    outdir. The renderer's random jitter is seeded with the seed, so reruns give the same files.
    Returns the paths written."""
    device = device or next(G.parameters()).device
    os.makedirs(outdir, exist_ok=True)
    intrinsics = FOV_to_intrinsics(fov_deg)
    c_cond = inference.orbit_camera(G, math.pi / 2, math.pi / 2, intrinsics, device)
    written = []
    for seed_idx, seed in enumerate(seeds):
        log(f'Generating image for seed {seed} ({seed_idx + 1}/{len(seeds)}) ...')
        torch.manual_seed(seed)
        z = inference.latent(seed, G.z_dim, device)
        with torch.no_grad():
            ws = G.mapping(z, c_cond, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
            outs = []
            for view, (yaw, pitch) in enumerate(VIEWS):  # One backbone pass, three renders.
                c = inference.orbit_camera(G, math.pi / 2 + yaw, math.pi / 2 + pitch, intrinsics, device)
                outs.append(G.synthesis(ws, c, cache_backbone=view == 0, use_cached_backbone=view > 0))
            G._last_planes = None
        image = torch.cat([out['image'][0] for out in outs], dim=2)
        path = os.path.join(outdir, f'seed{seed:04d}.png')
        inference.save_png(path, inference.to_uint8(image))
        written.append(path)
        if depth:
            depths = depth_to_image(torch.cat([out['image_depth'][0] for out in outs], dim=2))
            path = os.path.join(outdir, f'seed{seed:04d}_depth.png')
            inference.save_png(path, inference.to_uint8(depths))
            written.append(path)
        if shape_kwargs is not None and (seed_idx == 0 or not shape_only_first):
            fmt = shape_kwargs.get('fmt', '.mrc')
            path = os.path.join(outdir, f'seed{seed:04d}{fmt}')
            log(f'Extracting the shape of seed {seed} ({shape_kwargs["resolution"]}^3) -> {path}')
            field = shape_io.DensityField(G, ws)
            summary = shape_io.save_shape(path, field, **shape_kwargs)
            if summary.get('vertices') == 0:
                log(f'  no surface at level {shape_kwargs.get("level", shape_io.DEFAULT_LEVEL):g}: empty mesh')
            written.append(path)
    return written

# ----------------------------------------------------------------------------


def _range(ctx, param, value):
    try:
        return inference.parse_range(value)
    except ValueError as err:
        raise click.BadParameter(str(err)) from None


@click.command()
@click.option('--network', 'network_pkl', help='Network snapshot, training state or official pickle (path or URL)',
              required=True)
@click.option('--seeds', type=str, callback=_range, help='List of random seeds (e.g. \'0,1,4-6\')', required=True)
@click.option('--trunc', 'truncation_psi', type=float, help='Truncation psi', default=1, show_default=True)
@click.option('--trunc-cutoff', 'truncation_cutoff', type=int, help='Truncation cutoff', default=14, show_default=True)
@click.option('--class', 'class_idx', type=int, help='Not supported: EG3D is conditioned on the camera, not a class '
              '(upstream ignored it)')
@click.option('--outdir', help='Where to save the output images', type=str, required=True, metavar='DIR')
@click.option('--shapes', help='Export shapes as .mrc or .ply files', type=bool, default=False, show_default=True,
              metavar='BOOL')
@click.option('--shape-res', help='Shape grid resolution (voxels per side)', type=click.IntRange(min=8), default=512,
              show_default=True)
@click.option('--fov-deg', help='Field of view of the renders (FOV_to_intrinsics degrees)', type=float,
              default=FOV_DEG_DEFAULT, show_default=True)
@click.option('--shape-format', help='Shape file format', type=click.Choice(list(shape_io.SHAPE_FORMATS)),
              default='.mrc', show_default=True)
@click.option('--shape-only-first', help='Export the shape of the first seed only', type=bool, default=False,
              show_default=True, metavar='BOOL')
@click.option('--shape-units', help='.ply vertex units: voxel (upstream: indices, map frame) or world (EG3D axes)',
              type=click.Choice(list(shape_io.SHAPE_UNITS)), default='voxel', show_default=True)
@click.option('--shape-colors', help='Vertex colours (the decoder\'s RGB at each vertex; .ply only)', type=bool,
              default=False, show_default=True, metavar='BOOL')
@click.option('--shape-level', help='Surface level of the raw density (marching cubes)', type=float,
              default=shape_io.DEFAULT_LEVEL, show_default=True)
@click.option('--depth', help='Also write seedNNNN_depth.png', type=bool, default=True, show_default=True,
              metavar='BOOL')
@click.option('--reload_modules', help='Accepted for compatibility: networks are always rebuilt from this checkout\'s '
              'code', type=bool, default=False, show_default=True, metavar='BOOL')
def generate_images(network_pkl, seeds, truncation_psi, truncation_cutoff, class_idx, outdir, shapes, shape_res,
                    fov_deg, shape_format, shape_only_first, shape_units, shape_colors, shape_level, depth,
                    reload_modules):
    """Generate images, depth maps and shapes using a pretrained EG3D network.

    \b
    python gen_samples.py --outdir=out --trunc=0.7 --seeds=0-3 --network=ffhq512-128.pkl
    python gen_samples.py --outdir=out --seeds=0 --shapes=True --shape-format=.ply --shape-colors=True \\
        --network=network-snapshot-000400.pkl
    """
    _ = reload_modules
    if class_idx is not None:
        raise click.UsageError('--class: EG3D generators are conditioned on the camera, not on a class label '
                               '(upstream accepted the option and ignored it)')
    if shape_colors and shape_format != '.ply':
        raise click.UsageError('--shape-colors needs --shape-format=.ply')
    G, device = inference.load_generator_or_exit(network_pkl, 'gen_samples.py')
    shape_kwargs = None
    if shapes:
        shape_kwargs = dict(resolution=shape_res, fmt=shape_format, units=shape_units, level=shape_level,
                            colors=shape_colors)
    try:
        generate_samples(G, seeds, outdir, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                         fov_deg=fov_deg, depth=depth, shape_kwargs=shape_kwargs, shape_only_first=shape_only_first,
                         device=device)
    except ImportError as err:
        print(f'gen_samples.py: {err}', file=sys.stderr)
        raise SystemExit(1)


if __name__ == '__main__':
    from torch_utils import malloc_tuning
    malloc_tuning.apply()  # Keep freed activations in the heap (see the module); EG3D_MALLOC_TUNING=0: off.
    generate_images()
