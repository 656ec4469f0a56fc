"""Presets: the official ones resolve to upstream's configuration; resolution and overrides behave."""

import json

import pytest

from training.presets import PRESETS, resolve_preset

# Where each preset option lands in upstream's training_options (facts 2.2), and how: fn(value, opts).
_ident = lambda v, o: v  # noqa: E731
OPTION_PATHS = [
    ('gpus',                        'num_gpus',                                         _ident),
    ('batch',                       'batch_size',                                       _ident),
    ('batch_gpu',                   'batch_gpu',            lambda v, o: o['batch'] // o['gpus'] if v is None else v),
    ('gamma',                       'loss_kwargs.r1_gamma',                             _ident),
    ('cond',                        'training_set_kwargs.use_labels',                   _ident),
    ('mirror',                      'training_set_kwargs.xflip',                        _ident),
    ('kimg',                        'total_kimg',                                       _ident),
    ('tick',                        'kimg_per_tick',                                    _ident),
    ('snap',                        'image_snapshot_ticks',                             _ident),
    ('snap',                        'network_snapshot_ticks',                           _ident),
    ('seed',                        'random_seed',                                      _ident),
    ('workers',                     'data_loader_kwargs.num_workers',                   _ident),
    ('metrics',                     'metrics',                                          _ident),
    ('z_dim',                       'G_kwargs.z_dim',                                   _ident),
    ('w_dim',                       'G_kwargs.w_dim',                                   _ident),
    ('cbase',                       'G_kwargs.channel_base',                            _ident),
    ('cbase',                       'G_kwargs.sr_kwargs.channel_base',                  _ident),
    ('cbase',                       'D_kwargs.channel_base',                            _ident),
    ('cmax',                        'G_kwargs.channel_max',                             _ident),
    ('cmax',                        'G_kwargs.sr_kwargs.channel_max',                   _ident),
    ('cmax',                        'D_kwargs.channel_max',                             _ident),
    ('map_depth',                   'G_kwargs.mapping_kwargs.num_layers',               _ident),
    ('mbstd_group',                 'D_kwargs.epilogue_kwargs.mbstd_group_size',        _ident),
    ('freezed',                     'D_kwargs.block_kwargs.freeze_layers',              _ident),
    ('disc_c_noise',                'D_kwargs.disc_c_noise',                            _ident),
    ('g_num_fp16_res',              'G_kwargs.num_fp16_res',                            _ident),
    ('g_num_fp16_res',              'G_kwargs.conv_clamp',              lambda v, o: 256 if v > 0 else None),
    ('d_num_fp16_res',              'D_kwargs.num_fp16_res',                            _ident),
    ('d_num_fp16_res',              'D_kwargs.conv_clamp',              lambda v, o: 256 if v > 0 else None),
    ('sr_num_fp16_res',             'G_kwargs.sr_num_fp16_res',                         _ident),
    ('glr',                         'G_opt_kwargs.lr',                                  _ident),
    ('dlr',                         'D_opt_kwargs.lr',                                  _ident),
    ('ema_kimg',                    'ema_kimg',             lambda v, o: o['batch'] * 10 / 32 if v is None else v),
    ('density_reg_every',           'G_reg_interval',                                   _ident),
    ('density_reg',                 'G_kwargs.rendering_kwargs.density_reg',            _ident),
    ('density_reg_p_dist',          'G_kwargs.rendering_kwargs.density_reg_p_dist',     _ident),
    ('reg_type',                    'G_kwargs.rendering_kwargs.reg_type',               _ident),
    ('decoder_lr_mul',              'G_kwargs.rendering_kwargs.decoder_lr_mul',         _ident),
    ('c_scale',                     'G_kwargs.rendering_kwargs.c_scale',                _ident),
    ('sr_noise_mode',               'G_kwargs.rendering_kwargs.superresolution_noise_mode', _ident),
    ('gen_pose_cond',               'G_kwargs.rendering_kwargs.c_gen_conditioning_zero', lambda v, o: not v),
    ('gpc_reg_prob',                'G_kwargs.rendering_kwargs.gpc_reg_prob',
                                                        lambda v, o: v if o['gen_pose_cond'] else None),
    ('gpc_reg_prob',                'loss_kwargs.gpc_reg_prob',         lambda v, o: v if o['gen_pose_cond'] else None),
    ('gpc_reg_fade_kimg',           'loss_kwargs.gpc_reg_fade_kimg',                    _ident),
    ('blur_init_sigma',             'loss_kwargs.blur_init_sigma',                      _ident),
    ('blur_fade_kimg',              'loss_kwargs.blur_fade_kimg',       lambda v, o: o['batch'] * v / 32),
    ('style_mixing_prob',           'loss_kwargs.style_mixing_prob',                    _ident),
    ('neural_rendering_resolution_initial', 'loss_kwargs.neural_rendering_resolution_initial', _ident),
    ('neural_rendering_resolution_final', 'loss_kwargs.neural_rendering_resolution_final', _ident),
    ('neural_rendering_resolution_fade_kimg', 'loss_kwargs.neural_rendering_resolution_fade_kimg', _ident),
]

# Options that upstream's --resume changes in training_options (facts 2.4); the ffhq512 fixture has --resume.
RESUME_CHANGED = {'blur_init_sigma', 'gpc_reg_fade_kimg', 'ema_rampup'}


def _get(tree, path):
    for part in path.split('.'):
        tree = tree[part]
    return tree


def _flag_overrides(flags, preset):
    """The fixture's command line as overrides: --name=value, typed like the preset's value."""
    out = {}
    for flag in flags:
        key, _, text = flag[2:].partition('=')
        key = key.replace('-', '_')
        if key in ('cfg', 'data', 'outdir', 'dry_run', 'resume'):
            continue
        if key == 'metrics':
            out[key] = [] if text == 'none' else text.split(',')
        elif isinstance(preset.get(key), bool):
            out[key] = {'True': True, 'False': False}[text]
        else:
            out[key] = int(text) if text.lstrip('-').isdigit() else float(text)
    return out


@pytest.mark.parametrize('config', ['official-small-config.json', 'official-ffhq512-config.json'])
def test_ffhq_preset_matches_official_options(fixtures_dir, config):
    meta = json.loads((fixtures_dir / config).read_text())['meta']
    official = meta['training_options']
    assert '--cfg=ffhq' in meta['train_py_flags']
    overrides = _flag_overrides(meta['train_py_flags'], PRESETS['ffhq'])
    overrides['rendering'] = meta['render_overrides']  # Applied after the config was built (fixture README).
    opts = resolve_preset('ffhq', overrides)
    resumed = any(f.startswith('--resume') for f in meta['train_py_flags'])

    checked = 0
    for key, path, fn in OPTION_PATHS:
        if resumed and key in RESUME_CHANGED:
            continue
        assert fn(opts[key], opts) == _get(official, path), f'{key} -> {path}'
        checked += 1
    assert checked >= 45

    rendering = official['G_kwargs']['rendering_kwargs']
    for key, value in opts['rendering'].items():
        assert rendering[key] == value, f'rendering.{key}'
    assert 'white_back' not in opts['rendering']  # Absent upstream for ffhq (reads as False).

    # Tri-plane sizes, read off the official parameter shapes.
    shapes = json.loads((fixtures_dir / config).read_text())['G']
    assert shapes['backbone.synthesis.b256.torgb.bias'] == [3 * opts['triplane_channels']]
    assert f'backbone.synthesis.b{opts["triplane_resolution"]}.conv1.weight' in shapes
    assert shapes['decoder.net.0.weight'] == [opts['decoder_hidden_dim'], opts['triplane_channels']]


def test_per_cfg_rendering_values():
    # eg3d-facts 2.3, per-cfg table.
    expected = {
        'ffhq':     dict(depth_resolution=48, depth_resolution_importance=48, ray_start=2.25, ray_end=3.3,
                         box_warp=1, avg_camera_radius=2.7, avg_camera_pivot=[0, 0, 0.2]),
        'afhq':     dict(depth_resolution=48, depth_resolution_importance=48, ray_start=2.25, ray_end=3.3,
                         box_warp=1, avg_camera_radius=2.7, avg_camera_pivot=[0, 0, -0.06]),
        'shapenet': dict(depth_resolution=64, depth_resolution_importance=64, ray_start=0.1, ray_end=2.6,
                         box_warp=1.6, white_back=True, avg_camera_radius=1.7, avg_camera_pivot=[0, 0, 0]),
    }
    for name, values in expected.items():
        rendering = resolve_preset(name)['rendering']
        for key, value in values.items():
            assert rendering[key] == value, f'{name}: rendering.{key}'
        assert rendering.get('white_back', False) == values.get('white_back', False)
        assert rendering['disparity_space_sampling'] is False and rendering['clamp_mode'] == 'softplus'
    # Everything but the rendering values is shared by the official presets.
    strip = lambda p: {k: v for k, v in p.items() if k != 'rendering'}  # noqa: E731
    assert strip(PRESETS['ffhq']) == strip(PRESETS['afhq']) == strip(PRESETS['shapenet'])


def test_every_preset_is_complete():
    keys = set(PRESETS['ffhq'])
    for name, preset in PRESETS.items():
        assert set(preset) == keys, name
        assert set(preset['rendering']) >= set(PRESETS['ffhq']['rendering']), name


def test_tiny_preset_fits_a_small_cpu():
    tiny = resolve_preset('tiny')
    assert tiny['cfg'] == 'tiny' and tiny['gpus'] == 1 and tiny['batch'] % tiny['mbstd_group'] == 0
    # Sized for demo.py: 32x32 images from 16x16 renders, a 32x32 tri-plane, 16 + 16 depth samples.
    assert tiny['neural_rendering_resolution_initial'] == 16 == tiny['sr_kwargs']['input_resolution']
    assert tiny['triplane_resolution'] <= 32 and tiny['triplane_channels'] < 32
    assert tiny['rendering']['depth_resolution'] + tiny['rendering']['depth_resolution_importance'] <= 32
    assert tiny['rendering']['avg_camera_pivot'] == [0, 0, 0]  # training/synthetic.py's cameras aim at the origin.
    # Schedules scaled to a run of a few kimg (upstream's are sized for 25,000 kimg).
    assert tiny['kimg'] <= 10 and tiny['tick'] * tiny['snap'] <= tiny['kimg']  # A snapshot besides kimg 0.
    assert tiny['batch'] * tiny['blur_fade_kimg'] / 32 <= 2 and tiny['blur_init_sigma'] <= 4
    assert tiny['gpc_reg_fade_kimg'] <= 2 and tiny['neural_rendering_resolution_fade_kimg'] <= 2
    assert tiny['ema_kimg'] <= 1 and tiny['ada_kimg'] <= 50
    assert tiny['sr_module'] == 'training.superresolution.SuperresolutionGeneric'
    assert tiny['g_num_fp16_res'] == tiny['d_num_fp16_res'] == tiny['sr_num_fp16_res'] == 0
    for key in ('triplane_resolution', 'triplane_channels', 'decoder_hidden_dim'):
        assert key in tiny


def test_resolve_overrides():
    opts = resolve_preset('ffhq', {'map-depth': 4, 'glr': None, 'rendering': {'depth_resolution': 12},
                                   'sr_kwargs': {'x': 1}, 'cfg': 'ffhq'})
    assert opts['map_depth'] == 4
    assert opts['glr'] == PRESETS['ffhq']['glr']  # None = not given.
    assert opts['rendering']['depth_resolution'] == 12
    assert opts['rendering']['depth_resolution_importance'] == 48  # Nested dicts merge.
    assert opts['sr_kwargs'] == {'x': 1}
    # A deep copy: editing the result leaves the preset alone.
    opts['rendering']['avg_camera_pivot'].append(9)
    opts['metrics'].append('kid50k_full')
    assert PRESETS['ffhq']['rendering']['avg_camera_pivot'] == [0, 0, 0.2]
    assert PRESETS['ffhq']['metrics'] == ['fid50k_full']


def test_resolve_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown preset 'ffhq512'.*ffhq, afhq, shapenet, tiny"):
        resolve_preset('ffhq512')
    with pytest.raises(ValueError, match="no option 'map_deph'.*'map_depth'"):
        resolve_preset('ffhq', {'map_deph': 3})
    with pytest.raises(ValueError, match="'rendering' takes a dict"):
        resolve_preset('ffhq', {'rendering': 5})
    with pytest.raises(ValueError, match='contradicts'):
        resolve_preset('ffhq', {'cfg': 'afhq'})
