"""Train an EG3D-style 3D-aware GAN.

Upstream EG3D's command lines work unchanged, e.g.

    python train.py --outdir=training-runs --cfg=ffhq --data=FFHQ_512.zip --gpus=8 --batch=32 --gamma=1 \\
        --gen_pose_cond=True

--cfg picks a preset from training/presets.py (ffhq, afhq, shapenet, tiny, tiny-sg3); every flag overrides one
field of it. --dry-run prints the resolved training options as JSON and exits.
"""

from __future__ import annotations

import json
import os
import re
import sys

import click

import dnnlib
from training import options as training_options
from training.presets import PRESETS, resolve_preset


def parse_comma_list(value):
    if value is None or isinstance(value, list):
        return value
    if value.strip().lower() == 'none':
        return []
    return [item.strip() for item in value.split(',') if item.strip()]


def parse_grid(value):
    if value is None:
        return None
    match = re.fullmatch(r'\s*(\d+)\s*[x,]\s*(\d+)\s*', value)
    if not match:
        raise click.BadParameter(f'expected WxH, got {value!r}')
    return int(match.group(1)), int(match.group(2))


def train_rank(rank: int, num_gpus: int, device, c: dict, run_dir: str) -> None:
    """One rank's training; rank 0 tees its output to log.txt."""
    from training import training_loop
    kwargs = {k: v for k, v in c.items() if k not in ('cfg', 'num_gpus')}
    if rank != 0:
        training_loop.training_loop(run_dir=run_dir, rank=rank, num_gpus=num_gpus, device=device, **kwargs)
        return
    with dnnlib.Logger(file_name=os.path.join(run_dir, 'log.txt'), file_mode='a'):
        training_loop.training_loop(run_dir=run_dir, rank=rank, num_gpus=num_gpus, device=device,
                                    training_options=json.loads(json.dumps(c)), **kwargs)


def parse_settings(settings) -> dict:
    """['a=1', 'rendering.depth_resolution=8', 'sr_kwargs={"block_channels": [16, 16]}'] -> nested overrides."""
    out: dict = {}
    for item in settings:
        key, sep, text = item.partition('=')
        if not sep or not key.strip():
            raise click.BadParameter(f'expected KEY=VALUE, got {item!r}', param_hint='--set')
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text  # A bare string.
        *parents, leaf = key.strip().split('.')
        node = out
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return out


def launch(c: dnnlib.EasyDict, run_dir: str, heartbeat_timeout: float, writes_files: bool = True) -> None:
    """Create (or reuse, when resuming a training state) the run directory and train on every rank."""
    from training import distributed
    if writes_files:
        os.makedirs(run_dir, exist_ok=c.get('resume_state') is not None)
        options_path = os.path.join(run_dir, 'training_options.json')
        if not os.path.exists(options_path):
            with dnnlib.util.atomic_write_path(options_path) as tmp, open(tmp, 'wt') as f:
                json.dump(c, f, indent=2)
    distributed.launch(train_rank, c.num_gpus, dict(c=dict(c), run_dir=run_dir), heartbeat_timeout=heartbeat_timeout)


def resolve_resume(resume: str | None, outdir: str) -> tuple[str | None, str | None]:
    """(network snapshot to fine-tune from, training state to continue exactly) for --resume."""
    from training import training_state
    if resume is None:
        return None, None
    if resume == 'latest':
        try:
            return None, training_state.find_latest(outdir)
        except FileNotFoundError:
            print(f'--resume=latest: no training state under {outdir}; starting a new run', file=sys.stderr)
            return None, None
    if os.path.isdir(resume):
        return None, training_state.find_latest(resume)
    if training_state.is_training_state(resume):
        return None, resume
    return resume, None


# Options are upstream's names and spellings; their defaults come from the preset (None = "not given").
@click.command(context_settings=dict(show_default=True))
@click.option('--outdir', help='Where to save the results', metavar='DIR', required=True)
@click.option('--cfg', help='Preset', type=click.Choice(sorted(PRESETS)), required=True)
@click.option('--data', help='Training data (zip or folder with dataset.json)', metavar='[ZIP|DIR]', required=True)
@click.option('--gpus', help='Number of GPUs (processes) to use', metavar='INT', type=click.IntRange(min=1))
@click.option('--batch', help='Total batch size', metavar='INT', type=click.IntRange(min=1))
@click.option('--gamma', help='R1 regularization weight', metavar='FLOAT', type=click.FloatRange(min=0))
@click.option('--cond', help='Train conditional model (the camera labels)', metavar='BOOL', type=bool)
@click.option('--mirror', help='Enable dataset x-flips', metavar='BOOL', type=bool)
@click.option('--mirror-labels', 'mirror_labels', help='With --mirror, mirror the camera labels too (False = upstream)', metavar='BOOL', type=bool)
@click.option('--aug', help='Augmentation mode', type=click.Choice(['noaug', 'ada', 'fixed']))
@click.option('--resume', help='Resume from given network pickle', metavar='[PATH|URL]', type=str)
@click.option('--freezed', help='Freeze first layers of D', metavar='INT', type=click.IntRange(min=0))
@click.option('--p', help='Probability for --aug=fixed', metavar='FLOAT', type=click.FloatRange(min=0, max=1))
@click.option('--target', help='Target value for --aug=ada', metavar='FLOAT', type=click.FloatRange(min=0, max=1))
@click.option('--batch-gpu', help='Limit batch size per GPU', metavar='INT', type=click.IntRange(min=1))
@click.option('--cbase', help='Capacity multiplier', metavar='INT', type=click.IntRange(min=1))
@click.option('--cmax', help='Max. feature maps', metavar='INT', type=click.IntRange(min=1))
@click.option('--glr', help='G learning rate', metavar='FLOAT', type=click.FloatRange(min=0))
@click.option('--dlr', help='D learning rate', metavar='FLOAT', type=click.FloatRange(min=0))
@click.option('--map-depth', help='Mapping network depth', metavar='INT', type=click.IntRange(min=1))
@click.option('--mbstd-group', help='Minibatch std group size', metavar='INT', type=click.IntRange(min=1))
@click.option('--desc', help='String to include in result dir name', metavar='STR', type=str)
@click.option('--metrics', help='Quality metrics', metavar='[NAME|A,B,C|none]', type=str)
@click.option('--kimg', help='Total training duration', metavar='KIMG', type=click.FloatRange(min=0, min_open=True))
@click.option('--tick', help='How often to print progress', metavar='KIMG', type=click.FloatRange(min=0, min_open=True))
@click.option('--snap', help='How often to save snapshots', metavar='TICKS', type=click.IntRange(min=1))
@click.option('--seed', help='Random seed', metavar='INT', type=click.IntRange(min=0))
@click.option('--nobench', help='Disable cuDNN benchmarking', metavar='BOOL', type=bool)
@click.option('--precision', help='Autocast precision on CUDA (docs/gpu.md)', type=click.Choice(['fp32', 'bf16', 'fp16']))
@click.option('--compile', 'compile', help='torch.compile G backbone, SR and D with this mode (docs/gpu.md)', type=click.Choice(['default', 'reduce-overhead', 'max-autotune', 'max-autotune-no-cudagraphs']))
@click.option('--tf32', help='Allow TF32 matmuls and convolutions on CUDA (default False, as upstream)', metavar='BOOL', type=bool)
@click.option('--workers', help='DataLoader worker processes', metavar='INT', type=click.IntRange(min=0))
@click.option('-n', '--dry-run', help='Print training options and exit', is_flag=True)
@click.option('--image-grid', 'image_grid', help='Columns x rows of the image snapshots', metavar='WxH', type=str)
@click.option('--set', 'settings', help='Set any preset field, e.g. triplane_resolution=32 or rendering.depth_resolution=8 (JSON values; repeatable)', metavar='KEY=VALUE', multiple=True)
@click.option('--heartbeat-timeout', help='Seconds before a silent rank is taken as dead', metavar='SEC', type=float, default=60.0)
# EG3D options.
@click.option('--neural_rendering_resolution_initial', help='Resolution to render at', metavar='INT', type=click.IntRange(min=1))
@click.option('--neural_rendering_resolution_final', help='Final resolution to render at, if blending', metavar='INT', type=click.IntRange(min=1))
@click.option('--neural_rendering_resolution_fade_kimg', help='Kimg to blend resolution over', metavar='INT', type=click.IntRange(min=0))
@click.option('--blur_fade_kimg', help='Blur over how many', metavar='INT', type=click.IntRange(min=1))
@click.option('--gen_pose_cond', help='If true, enable generator pose conditioning.', metavar='BOOL', type=bool)
@click.option('--c-scale', help='Scale factor for generator pose conditioning.', metavar='FLOAT', type=click.FloatRange(min=0))
@click.option('--c-noise', help='Add noise for generator pose conditioning (unused, as upstream).', metavar='FLOAT', type=click.FloatRange(min=0))
@click.option('--gpc_reg_prob', help='Strength of swapping regularization. None means no generator pose conditioning.', metavar='FLOAT', type=click.FloatRange(min=0))
@click.option('--gpc_reg_fade_kimg', help='Length of swapping prob fade', metavar='INT', type=click.IntRange(min=0))
@click.option('--disc_c_noise', help='Strength of discriminator pose conditioning regularization, in standard deviations.', metavar='FLOAT', type=click.FloatRange(min=0))
@click.option('--sr_noise_mode', help='Type of noise for superresolution', type=click.Choice(['random', 'none']))
@click.option('--resume_blur', help='Enable to blur even on resume', metavar='BOOL', type=bool)
@click.option('--sr_num_fp16_res', help='Number of fp16 layers in superresolution', metavar='INT', type=click.IntRange(min=0))
@click.option('--g_num_fp16_res', help='Number of fp16 layers in generator', metavar='INT', type=click.IntRange(min=0))
@click.option('--d_num_fp16_res', help='Number of fp16 layers in discriminator', metavar='INT', type=click.IntRange(min=0))
@click.option('--sr_first_cutoff', help='First cutoff for AF superresolution (unused, as upstream)', metavar='INT', type=click.IntRange(min=2))
@click.option('--sr_first_stopband', help='First stopband for AF superresolution (unused, as upstream)', metavar='FLOAT', type=click.FloatRange(min=2))
@click.option('--style_mixing_prob', help='Style-mixing regularization probability for training.', metavar='FLOAT', type=click.FloatRange(min=0, max=1))
@click.option('--sr-module', help='Superresolution module override', metavar='STR', type=str)
@click.option('--density_reg', help='Density regularization strength.', metavar='FLOAT', type=click.FloatRange(min=0))
@click.option('--density_reg_every', help='lazy density reg', metavar='int', type=click.FloatRange(min=1))
@click.option('--density_reg_p_dist', help='density regularization strength.', metavar='FLOAT', type=click.FloatRange(min=0))
@click.option('--reg_type', help='Type of regularization', type=click.Choice(['l1', 'l1-alt', 'monotonic-detach', 'monotonic-fixed', 'total-variation']))
@click.option('--decoder_lr_mul', help='decoder learning rate multiplier.', metavar='FLOAT', type=click.FloatRange(min=0))
def main(**kwargs):
    """Train an EG3D-style 3D-aware GAN (see the module docstring and README.md)."""
    dry_run = kwargs.pop('dry_run')
    outdir = kwargs.pop('outdir')
    data = kwargs.pop('data')
    cfg = kwargs.pop('cfg')
    heartbeat_timeout = kwargs.pop('heartbeat_timeout')
    settings = parse_settings(kwargs.pop('settings'))
    kwargs['metrics'] = parse_comma_list(kwargs['metrics'])
    kwargs['image_grid'] = parse_grid(kwargs['image_grid'])
    from training import distributed
    launcher = distributed.rank_from_env()  # torchrun / srun decide the number of processes.
    if launcher is not None:
        kwargs['gpus'] = launcher.world_size
    try:
        resume_pkl, resume_state = resolve_resume(kwargs['resume'], outdir)
        kwargs['resume'] = resume_pkl
        for key in settings:
            if kwargs.get(key) is not None:
                raise ValueError(f'--set {key}=... and --{key.replace("_", "-")} both given')
        opts = resolve_preset(cfg, {**kwargs, **settings})
        opts['data'] = data
        c, desc = training_options.build_training_options(opts)
        if c.get('precision', 'fp32') != 'fp32' or c.get('compile_mode') is not None:  # CUDA only: say so now.
            import torch
            from training import accel
            accel.check('cuda' if torch.cuda.is_available() else 'cpu', c.get('precision', 'fp32'),
                        c.get('compile_mode'))
    except (ValueError, OSError) as err:
        raise click.ClickException(str(err)) from None

    if resume_state is not None:
        c.resume_state = resume_state
        run_dir = os.path.dirname(os.path.abspath(resume_state))
    else:
        run_dir = training_options.next_run_dir(outdir, desc)
    if dry_run:
        print(json.dumps(c, indent=2))
        print(f'Dry run; would write to {run_dir}', file=sys.stderr)
        return
    is_main = launcher is None or launcher.rank == 0
    if is_main:
        print(f'Output directory: {run_dir}')
    launch(c, run_dir, heartbeat_timeout, writes_files=is_main)


if __name__ == '__main__':
    from torch_utils import malloc_tuning
    malloc_tuning.apply()  # Keep freed activations in the heap (see the module); EG3D_MALLOC_TUNING=0: off.
    main()
