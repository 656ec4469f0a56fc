"""Named training presets: 'ffhq', 'afhq', 'shapenet' (upstream EG3D's --cfg values), 'tiny' (a 2-core CPU)
and 'tiny-sg3' (tiny with a StyleGAN3 tri-plane backbone).

Each preset is one complete, flat dict. Keys are train.py's option names as click passes them
(`--map-depth` -> `map_depth`), so command-line flags override fields one to one; `rendering` and
`sr_kwargs` are nested dicts that merge key by key. A few keys name values that upstream's train.py
fixes (z_dim, w_dim, blur_init_sigma, the tri-plane sizes, ...) so that 'tiny' can change them.

The official presets hold upstream's defaults, so an official command line resolves to the official
configuration (eg3d-facts 2.1-2.3; ../shared/fixtures/official-*-config.json record it).

    opts = resolve_preset('ffhq', {'batch': 32, 'gpus': 8, 'gamma': 1, 'gen_pose_cond': True})
"""

from __future__ import annotations

import copy
import difflib
from typing import Any, Mapping

# ----------------------------------------------------------------------------
# Upstream train.py: option defaults (facts 2.1) and values its config fixes (facts 2.2).

_UPSTREAM: dict[str, Any] = {
    # Run and data.
    'gpus':                         None,       # Number of GPUs; required on the command line, as upstream.
    'batch':                        None,       # Total batch size; required.
    'gamma':                        None,       # R1 regularisation weight; required.
    'batch_gpu':                    None,       # Per-GPU micro-batch; None = batch // gpus.
    'cond':                         True,       # Use the dataset labels (the cameras); must be True for EG3D.
    'mirror':                       False,      # x-flip the dataset images (labels are not mirrored).
    'aug':                          'noaug',    # 'noaug', 'ada' or 'fixed' (ADA 'bgc' pipeline).
    'p':                            0.2,        # Augment probability for aug='fixed'.
    'target':                       0.6,        # ADA target value for sign(D(real)).
    'resume':                       None,       # Network pickle to warm-start from; None = from scratch.
    'freezed':                      0,          # Freeze-D: number of frozen discriminator layers.
    'kimg':                         25000,      # Training length in thousands of real images shown.
    'tick':                         4,          # kimg between progress prints.
    'snap':                         50,         # Ticks between network and image snapshots.
    'seed':                         0,          # Random seed.
    'nobench':                      False,      # Disable cudnn.benchmark.
    'workers':                      3,          # DataLoader worker processes.
    'metrics':                      ['fid50k_full'],  # Metrics computed at each snapshot; [] = none.
    'desc':                         None,       # String to include in the run directory's name.
    'mirror_labels':                True,       # With mirror, mirror the camera labels too (ours; False = upstream).
    'image_grid':                   None,       # (columns, rows) of the image snapshots; None = upstream's rule (ours).

    # Networks.
    'z_dim':                        512,        # Latent z size (fixed upstream).
    'w_dim':                        512,        # Intermediate latent w size (fixed upstream).
    'cbase':                        32768,      # channel_base of backbone and D: channels = min(cbase // res, cmax).
    'cmax':                         512,        # channel_max of the backbone and D.
    'map_depth':                    2,          # Layers of G's mapping network (D's mapping keeps 8).
    'mbstd_group':                  4,          # Minibatch-std group size of D.
    'g_num_fp16_res':               0,          # Backbone fp16 resolutions (CUDA); > 0 also sets conv_clamp 256.
    'd_num_fp16_res':               4,          # D fp16 resolutions (CUDA); > 0 also sets D conv_clamp 256.
    'sr_num_fp16_res':              4,          # > 0: both SR blocks in fp16 (CUDA) with conv_clamp 256.
    'sr_module':                    None,       # SR class path; None = by image resolution (512: Hybrid8XDC,
                                                # 256: Hybrid4X, 128: Hybrid2X).
    'sr_kwargs':                    {},         # Extra SR constructor kwargs (upstream passes only channel_base,
                                                # channel_max and fused_modconv_default).
    'sr_noise_mode':                'none',     # Noise mode of the SR layers: 'random' or 'none'.
    'sr_first_cutoff':              2,          # Accepted but unused upstream.
    'sr_first_stopband':            2 ** 2.1,   # Accepted but unused upstream.
    'triplane_resolution':          256,        # Tri-plane size = backbone img_resolution (fixed upstream).
    'triplane_channels':            32,         # Features per plane; backbone img_channels = 3x this.
    'decoder_hidden_dim':           64,         # Hidden width of the tri-plane decoder MLP (fixed upstream).
    'backbone_arch':                'stylegan2',  # Tri-plane backbone: 'stylegan2' (upstream) or 'stylegan3' (ours).
    'backbone_kwargs':              {},         # Extra backbone constructor kwargs, e.g. StyleGAN3's num_layers,
                                                # margin_size, conv_kernel, use_radial_filters (ours).
    'decoder_lr_mul':               1.0,        # lr_multiplier of the decoder FC layers.
    'gen_pose_cond':                False,      # Generator pose conditioning (GPC): the camera feeds G's mapping.
    'c_scale':                      1.0,        # Scale of c before G's mapping.
    'c_noise':                      0.0,        # Accepted but unused upstream.
    'disc_c_noise':                 0.0,        # Gaussian noise on D's camera input, in units of the batch std.

    # Optimisation and schedules.
    'glr':                          0.0025,     # G learning rate (Adam, betas (0, 0.99), eps 1e-8).
    'dlr':                          0.002,      # D learning rate.
    'ema_kimg':                     None,       # G_ema half-life in kimg; None = batch * 10 / 32 (upstream).
    'ema_rampup':                   0.05,       # G_ema ramp-up as a fraction of cur_nimg; None = off.
    'd_reg_interval':               16,         # Lazy R1 interval of D (minibatches).
    'ada_kimg':                     500,        # ADA speed: kimg for p to move by 1 (100 when resuming, as upstream).
    'density_reg':                  0.25,       # Strength of the density regulariser; 0 = off.
    'density_reg_every':            4.0,        # Lazy interval of the density regulariser (G_reg_interval).
    'density_reg_p_dist':           0.004,      # Perturbation distance of the l1 density regulariser.
    'reg_type':                     'l1',       # 'l1', 'l1-alt', 'monotonic-detach', 'monotonic-fixed' or
                                                # 'total-variation' (upstream ignores 'l1-alt' and 'total-variation').
    'neural_rendering_resolution_initial':   64,     # Raw (neural) render resolution at the start.
    'neural_rendering_resolution_final':     None,   # If set, blend the raw resolution toward it; None = keep.
    'neural_rendering_resolution_fade_kimg': 1000,   # Length of that blend in kimg.
    'blur_init_sigma':              10,         # Initial sigma of the blur on D's images (fixed upstream).
    'blur_fade_kimg':               200,        # Blur fade length in kimg at batch 32; scaled by batch / 32.
    'gpc_reg_prob':                 0.5,        # Final probability of swapping the conditioning pose (GPC).
    'gpc_reg_fade_kimg':            1000,       # Fade of the swap probability from 1 to gpc_reg_prob.
    'style_mixing_prob':            0.0,        # Style mixing probability (upstream crashes with density reg).
    'resume_blur':                  False,      # Keep the blur and swap ramps when resuming.

    # GPU speed switches (ours; docs/gpu.md). The defaults are upstream's behaviour.
    'precision':                    'fp32',     # 'fp32', or autocast 'bf16' / 'fp16' (CUDA only).
    'compile':                      None,       # torch.compile mode for G's backbone and SR and D; None = eager.
    'tf32':                         False,      # Allow TF32 matmuls / convolutions on CUDA (upstream: off).

    # Rendering (eg3d-facts 2.3); train.py adds the keys it derives from the options above.
    'rendering': {
        'depth_resolution':             48,             # Stratified (coarse) samples per ray.
        'depth_resolution_importance':  48,             # Importance (fine) samples per ray.
        'ray_start':                    2.25,           # Near bound along each ray (world units), or 'auto'.
        'ray_end':                      3.3,            # Far bound, or 'auto'.
        'box_warp':                     1,              # Side of the cube that the tri-planes span.
        'avg_camera_radius':            2.7,            # Orbit radius for gen scripts and the visualizer.
        'avg_camera_pivot':             [0, 0, 0.2],    # Look-at point for gen scripts and the visualizer.
        'disparity_space_sampling':     False,          # Sample uniformly in disparity instead of depth.
        'clamp_mode':                   'softplus',     # Density activation.
        'sr_antialias':                 True,           # Antialias the resize to the SR input resolution.
    },
}


def _derive(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of `base` with `changes` applied; nested dicts merge key by key."""
    out = copy.deepcopy(dict(base))
    for key, value in changes.items():
        if isinstance(out.get(key), dict) and isinstance(value, Mapping):
            out[key] = _derive(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


PRESETS: dict[str, dict[str, Any]] = {
    # FFHQ (512x512 faces): upstream defaults.
    'ffhq': _derive(_UPSTREAM, {}),

    # AFHQv2 cats: as FFHQ but for the camera pivot.
    'afhq': _derive(_UPSTREAM, {
        'rendering': {'avg_camera_pivot': [0, 0, -0.06]},
    }),

    # ShapeNet cars (128x128, white background): camera inside a larger box.
    'shapenet': _derive(_UPSTREAM, {
        'rendering': {
            'depth_resolution':             64,
            'depth_resolution_importance':  64,
            'ray_start':                    0.1,
            'ray_end':                      2.6,
            'box_warp':                     1.6,
            'white_back':                   True,
            'avg_camera_radius':            1.7,
            'avg_camera_pivot':             [0, 0, 0],
        },
    }),

    # A 2-core CPU (demo.py trains it from scratch in a few minutes): 32x32 images (synthetic:box at
    # --resolution=32x32; demo.py widens the camera spread with --yaw-std=0.7 --pitch-std=0.3), neural
    # rendering at 16x16 upsampled 2x by a small generic SR, a 32x32 tri-plane with 8 channels, 16 + 16
    # depth samples, batch 8, float32 throughout, cameras aimed at the origin as training/synthetic.py's.
    # Schedules are scaled to a run of a few kimg (upstream sizes them for 25,000): the blur fades over
    # 1 kimg (blur_fade_kimg is scaled by batch / 32), the GPC swap probability over 2 kimg (when
    # --gen_pose_cond=True), G_ema's half-life is 0.5 kimg (ramp-up 0.05 x cur_nimg before that), ADA
    # moves p by 1 in 20 kimg, and a neural rendering resolution fade (with
    # --neural_rendering_resolution_final) takes 2 kimg.
    'tiny': _derive(_UPSTREAM, {
        'gpus':                         1,
        'batch':                        8,
        'gamma':                        0.1,        # 32x32 images need far less R1 than 512x512 (StyleGAN2's
                                                    # heuristic 0.0002 res^2 / batch gives 0.026).
        'workers':                      1,
        'kimg':                         4,
        'tick':                         0.5,
        'snap':                         8,          # Ticks: snapshots at kimg 0 and 4 (and at the end).
        'metrics':                      [],
        'image_grid':                   (8, 4),
        'z_dim':                        64,
        'w_dim':                        64,
        'cbase':                        1024,       # Channels: 64 up to 16x16, 32 at 32x32.
        'cmax':                         64,
        'd_num_fp16_res':               0,          # fp16 never runs on the CPU; 0 also means no conv_clamp.
        'sr_num_fp16_res':              0,
        'sr_module':                    'training.superresolution.SuperresolutionGeneric',
        'sr_kwargs':                    {'input_resolution': 16, 'block_channels': [32, 32]},  # SuperresolutionGeneric.
        'triplane_resolution':          32,
        'triplane_channels':            8,
        'decoder_hidden_dim':           32,
        'gen_pose_cond':                False,      # Synthetic objects' looks do not depend on the pose.
        'neural_rendering_resolution_initial':   16,
        'neural_rendering_resolution_fade_kimg': 2,
        'blur_init_sigma':              2,          # Pixels at 32x32 (upstream's 10 is for 512x512).
        'blur_fade_kimg':               4,          # x batch / 32 = 1 kimg.
        'gpc_reg_fade_kimg':            2,
        'ema_kimg':                     0.5,
        'ada_kimg':                     20,
        'rendering': {
            'depth_resolution':             16,
            'depth_resolution_importance':  16,
            'avg_camera_pivot':             [0, 0, 0],
        },
    }),
}

# 'tiny' with StyleGAN3's alias-free synthesis network painting the tri-planes (8 filtered layers
# instead of 14: the reference filtered_lrelu is slow on a CPU).
PRESETS['tiny-sg3'] = _derive(PRESETS['tiny'], {
    'backbone_arch':                'stylegan3',
    'backbone_kwargs':              {'num_layers': 8},
})

# ----------------------------------------------------------------------------


def resolve_preset(name: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The preset `name` with `overrides` applied, as a new plain dict (with a 'cfg' key naming the preset).

    Override keys are option names (dashes are read as underscores). A value of None means "not
    given" and keeps the preset's value, as click passes None for unset flags. Dict-valued options
    ('rendering', 'sr_kwargs') merge key by key. Unknown presets and keys raise ValueError.
    """
    if name not in PRESETS:
        raise ValueError(f'unknown preset {name!r}; choose one of: {", ".join(PRESETS)}')
    preset = PRESETS[name]
    changes = {}
    for key, value in (overrides or {}).items():
        key = key.replace('-', '_')
        if key == 'cfg':
            if value is not None and value != name:
                raise ValueError(f'override cfg={value!r} contradicts the preset {name!r}')
            continue
        if key not in preset:
            hint = difflib.get_close_matches(key, preset, n=1)
            suggestion = f' (did you mean {hint[0]!r}?)' if hint else ''
            raise ValueError(f'preset {name!r} has no option {key!r}{suggestion}')
        if value is None:
            continue
        if isinstance(preset[key], dict) and not isinstance(value, Mapping):
            raise ValueError(f'option {key!r} takes a dict of fields, got {type(value).__name__}: {value!r}')
        changes[key] = value
    return {'cfg': name, **_derive(preset, changes)}
