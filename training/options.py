"""From a preset plus command-line overrides to the training options that training_loop() takes.

The result has upstream EG3D's keys (G_kwargs, D_kwargs, G_opt_kwargs, D_opt_kwargs, loss_kwargs,
training_set_kwargs, batch_size, batch_gpu, ema_kimg, G_reg_interval, ...), so an official command
line resolves to the official configuration; we add a few keys (listed in OUR_EXTRA_KEYS).
"""

from __future__ import annotations

import os
import re

import dnnlib

# Super-resolution module by dataset resolution (upstream's rule).
SR_MODULES = {
    512: 'training.superresolution.SuperresolutionHybrid8XDC',
    256: 'training.superresolution.SuperresolutionHybrid4X',
    128: 'training.superresolution.SuperresolutionHybrid2X',
}

# Tri-plane sizes that upstream fixes; G_kwargs names them only when a preset changes them.
UPSTREAM_TRIPLANE = {'triplane_resolution': 256, 'triplane_channels': 32, 'decoder_hidden_dim': 64}

# Keys of the training options that upstream does not have.
OUR_EXTRA_KEYS = ('cfg', 'image_grid_size', 'ada_interval', 'D_reg_interval', 'ada_target', 'augment_p',
                  'augment_kwargs', 'cudnn_benchmark', 'resume_kimg', 'resume_state', 'precision',
                  'compile_mode', 'allow_tf32')


class OptionsError(ValueError):
    """An invalid combination of options, found before any work starts."""


def dataset_kwargs(data: str, use_labels: bool, xflip: bool, mirror_labels: bool, seed: int) -> tuple[dict, str]:
    """Open the dataset once to check it and read its resolution and size (errors name the path)."""
    from training.dataset import ImageFolderDataset
    kwargs = dnnlib.EasyDict(class_name='training.dataset.ImageFolderDataset', path=data, use_labels=True,
                             max_size=None, xflip=False)
    dataset = ImageFolderDataset(path=data, use_labels=use_labels)
    kwargs.resolution = dataset.resolution
    kwargs.use_labels = dataset.has_labels if use_labels else False
    kwargs.max_size = len(dataset)
    kwargs.xflip = xflip
    kwargs.random_seed = seed
    if xflip and not mirror_labels:
        kwargs.mirror_labels = False  # Upstream's images-only mirroring (eg3d issue 103), on request.
    if use_labels and not dataset.has_labels:
        raise OptionsError(f'{data}: --cond=True needs camera labels, but the dataset has no dataset.json labels')
    if dataset.has_labels and dataset.label_dim != 25:
        raise OptionsError(f'{data}: labels have {dataset.label_dim} numbers; EG3D cameras have 25 '
                           f'(16 cam2world + 9 intrinsics)')
    return kwargs, dataset.name


def build_training_options(opts: dict) -> tuple[dnnlib.EasyDict, str]:
    """opts: a resolved preset (training.presets.resolve_preset) including 'data'.
    Returns (training options, run description for the run directory's name)."""
    o = dnnlib.EasyDict(opts)
    for key in ('gpus', 'batch', 'gamma'):
        if o.get(key) is None:
            raise OptionsError(f'--{key} is required for --cfg={o.cfg}')
    if o.gpus < 1 or o.batch < 1 or o.gamma < 0:
        raise OptionsError('--gpus and --batch must be >= 1 and --gamma >= 0')
    batch_gpu = o.batch_gpu or o.batch // o.gpus
    if o.batch % (o.gpus * batch_gpu) != 0:
        raise OptionsError(f'--batch={o.batch} must be a multiple of --gpus={o.gpus} times --batch-gpu={batch_gpu}')
    if o.reg_type not in ('l1', 'monotonic-detach', 'monotonic-fixed') and o.density_reg > 0:
        raise OptionsError(f'--reg_type={o.reg_type} is not implemented (upstream accepted it and silently did '
                           f'nothing); use l1, monotonic-detach or monotonic-fixed, or --density_reg=0')
    if o.cond is False:
        raise OptionsError('--cond=False: EG3D needs the camera labels (c is the camera)')

    c = dnnlib.EasyDict(cfg=o.cfg)
    c.training_set_kwargs, dataset_name = dataset_kwargs(o.data, use_labels=o.cond, xflip=o.mirror,
                                                         mirror_labels=o.mirror_labels, seed=o.seed)
    resolution = c.training_set_kwargs.resolution
    c.data_loader_kwargs = dnnlib.EasyDict(pin_memory=True, prefetch_factor=2, num_workers=o.workers)

    sr_module = o.sr_module or SR_MODULES.get(resolution)
    if sr_module is None:
        raise OptionsError(f'no super-resolution module fits {resolution}x{resolution} images (upstream has them '
                           f'for {", ".join(map(str, SR_MODULES))}); pass --sr-module or use another resolution')

    rendering = dnnlib.EasyDict(
        image_resolution=resolution,
        disparity_space_sampling=o.rendering['disparity_space_sampling'],
        clamp_mode=o.rendering['clamp_mode'],
        superresolution_module=sr_module,
        c_gen_conditioning_zero=not o.gen_pose_cond,
        gpc_reg_prob=o.gpc_reg_prob if o.gen_pose_cond else None,
        c_scale=o.c_scale,
        superresolution_noise_mode=o.sr_noise_mode,
        density_reg=o.density_reg,
        density_reg_p_dist=o.density_reg_p_dist,
        reg_type=o.reg_type,
        decoder_lr_mul=o.decoder_lr_mul,
        sr_antialias=o.rendering['sr_antialias'],
    )
    for key, value in o.rendering.items():
        if key not in rendering:
            rendering[key] = value

    c.G_kwargs = dnnlib.EasyDict(class_name='training.triplane.TriPlaneGenerator', z_dim=o.z_dim, w_dim=o.w_dim,
                                 mapping_kwargs=dnnlib.EasyDict(num_layers=o.map_depth),
                                 channel_base=o.cbase, channel_max=o.cmax, fused_modconv_default='inference_only',
                                 rendering_kwargs=rendering, num_fp16_res=o.g_num_fp16_res,
                                 sr_num_fp16_res=o.sr_num_fp16_res,
                                 sr_kwargs=dnnlib.EasyDict(channel_base=o.cbase, channel_max=o.cmax,
                                                           fused_modconv_default='inference_only', **o.sr_kwargs),
                                 conv_clamp=256 if o.g_num_fp16_res > 0 else None)
    for key, default in UPSTREAM_TRIPLANE.items():
        if o.get(key, default) != default:
            c.G_kwargs[key] = o[key]
    from training.triplane import BACKBONES
    if o.get('backbone_arch', 'stylegan2') not in BACKBONES:
        raise OptionsError(f'backbone_arch must be one of {", ".join(BACKBONES)}, got {o.backbone_arch!r}')
    if o.get('backbone_arch', 'stylegan2') != 'stylegan2':  # Named only when not upstream's, like the sizes.
        c.G_kwargs.backbone_arch = o.backbone_arch
    for key, value in o.get('backbone_kwargs', {}).items():
        if key in c.G_kwargs:
            raise OptionsError(f'backbone_kwargs.{key}: set by another option (channel_base: --cbase, channel_max: '
                               f'--cmax, num_fp16_res: --g-num-fp16-res, ...), not through backbone_kwargs')
        c.G_kwargs[key] = value
    c.D_kwargs = dnnlib.EasyDict(class_name='training.dual_discriminator.DualDiscriminator',
                                 block_kwargs=dnnlib.EasyDict(freeze_layers=o.freezed),
                                 mapping_kwargs=dnnlib.EasyDict(),
                                 epilogue_kwargs=dnnlib.EasyDict(mbstd_group_size=o.mbstd_group),
                                 channel_base=o.cbase, channel_max=o.cmax, disc_c_noise=o.disc_c_noise,
                                 num_fp16_res=o.d_num_fp16_res, conv_clamp=256 if o.d_num_fp16_res > 0 else None)
    c.G_opt_kwargs = dnnlib.EasyDict(class_name='torch.optim.Adam', betas=[0, 0.99], eps=1e-8, lr=o.glr)
    c.D_opt_kwargs = dnnlib.EasyDict(class_name='torch.optim.Adam', betas=[0, 0.99], eps=1e-8, lr=o.dlr)
    c.loss_kwargs = dnnlib.EasyDict(class_name='training.loss.StyleGAN2Loss', r1_gamma=o.gamma,
                                    filter_mode='antialiased', blur_init_sigma=o.blur_init_sigma,
                                    blur_fade_kimg=o.batch * o.blur_fade_kimg / 32,
                                    gpc_reg_prob=o.gpc_reg_prob if o.gen_pose_cond else None,
                                    gpc_reg_fade_kimg=o.gpc_reg_fade_kimg, dual_discrimination=True,
                                    neural_rendering_resolution_initial=o.neural_rendering_resolution_initial,
                                    neural_rendering_resolution_final=o.neural_rendering_resolution_final,
                                    neural_rendering_resolution_fade_kimg=o.neural_rendering_resolution_fade_kimg,
                                    style_mixing_prob=o.style_mixing_prob)

    c.num_gpus = o.gpus
    c.batch_size = o.batch
    c.batch_gpu = batch_gpu
    c.metrics = list(o.metrics)
    c.total_kimg = o.kimg
    c.kimg_per_tick = o.tick
    c.image_snapshot_ticks = c.network_snapshot_ticks = o.snap
    c.random_seed = o.seed
    c.ema_kimg = o.ema_kimg if o.ema_kimg is not None else o.batch * 10 / 32
    if o.ema_rampup != 0.05:  # The loop's default; upstream writes the key only when it changes it.
        c.ema_rampup = o.ema_rampup
    c.G_reg_interval = o.density_reg_every if o.density_reg > 0 else None
    c.D_reg_interval = o.d_reg_interval
    c.cudnn_benchmark = not o.nobench
    # GPU speed switches (docs/gpu.md): written only when they differ from the loop's defaults.
    from training import accel
    try:
        accel.validate(o.get('precision', 'fp32'), o.get('compile'))
    except ValueError as err:
        raise OptionsError(f'--precision / --compile: {err}') from None
    if o.get('precision', 'fp32') != 'fp32':
        c.precision = o.precision
    if o.get('compile') is not None:
        c.compile_mode = o.compile
    if o.get('tf32', False):
        c.allow_tf32 = True
    if o.get('image_grid') is not None:
        c.image_grid_size = list(o.image_grid)

    # Augmentation: upstream's 'bgc' set.
    if o.aug != 'noaug':
        c.augment_kwargs = dnnlib.EasyDict(class_name='training.augment.AugmentPipe', xflip=1, rotate90=1, xint=1,
                                           scale=1, rotate=1, aniso=1, xfrac=1, brightness=1, contrast=1,
                                           lumaflip=1, hue=1, saturation=1)
        if o.aug == 'ada':
            c.ada_target = o.target
        elif o.aug == 'fixed':
            c.augment_p = o.p
        else:
            raise OptionsError(f'--aug must be noaug, ada or fixed, got {o.aug!r}')

    if o.ada_kimg != 500:  # The loop's default; upstream has no flag for it.
        c.ada_kimg = o.ada_kimg

    # Fine-tuning from a network snapshot (upstream's --resume semantics).
    if o.resume is not None:
        c.resume_pkl = o.resume
        c.ada_kimg = 100          # Make ADA react faster at the beginning.
        c.ema_rampup = None       # Disable EMA ramp-up.
        if not o.resume_blur:
            c.loss_kwargs.blur_init_sigma = 0      # Disable blur ramp-up.
            c.loss_kwargs.gpc_reg_fade_kimg = 0    # Disable the swap-probability fade.

    desc = f'{o.cfg}-{dataset_name}-gpus{c.num_gpus:d}-batch{c.batch_size:d}-gamma{c.loss_kwargs.r1_gamma:g}'
    if o.get('desc'):
        desc += f'-{o.desc}'
    return c, desc


def next_run_dir(outdir: str, desc: str) -> str:
    """<outdir>/<NNNNN>-<desc>, NNNNN one more than the highest numeric prefix there."""
    ids = []
    if os.path.isdir(outdir):
        for name in os.listdir(outdir):
            match = re.match(r'^\d+', name)
            if match and os.path.isdir(os.path.join(outdir, name)):
                ids.append(int(match.group()))
    return os.path.join(outdir, f'{max(ids, default=-1) + 1:05d}-{desc}')
