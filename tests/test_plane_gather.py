"""The one-pass tri-plane gather (training/volumetric_rendering/plane_gather.py) against the reference
path (grid_sample per plane, then the mean) in float64: values, gradients for planes and points, a
gradcheck, the channels-last layout, and the whole renderer with EG3D's decoder on both paths."""

import math

import pytest
import torch

from camera_utils import FOV_to_intrinsics, LookAtPoseSampler
from training.triplane import OSGDecoder
from training.volumetric_rendering import plane_gather
from training.volumetric_rendering.ray_sampler import RaySampler
from training.volumetric_rendering.renderer import ImportanceRenderer, generate_planes, sample_from_planes


def _points(gen, n, m, spread):
    """Random points in [-spread, spread]^3 plus some on texel centres and plane edges."""
    pts = (torch.rand(n, m, 3, generator=gen, dtype=torch.float64) * 2 - 1) * spread
    pts[:, :4] = torch.tensor([[0.0, 0.0, 0.0], [0.5, -0.5, 0.5], [-0.49, 0.49, 0.51], [0.625, 0.125, -0.375]],
                              dtype=torch.float64)
    return pts


@pytest.mark.parametrize('convention', ['eg3d', 'orthogonal'])
@pytest.mark.parametrize('box_warp', [1.0, 1.6, None])
def test_gather_matches_grid_sample_mean(convention, box_warp):
    gen = torch.Generator().manual_seed(11)
    axes = generate_planes(convention)
    planes = torch.randn(2, 3, 5, 6, 8, generator=gen, dtype=torch.float64).requires_grad_(True)
    points = _points(gen, 2, 300, 0.7 * (box_warp or 2)).requires_grad_(True)
    ref = sample_from_planes(axes, planes, points, box_warp=box_warp).mean(1)
    out = plane_gather.sample_plane_mean(axes, planes, points, box_warp=box_warp)
    assert out.shape == (2, 300, 5)
    assert ref.abs().max() > 0.1 and (ref == 0).all(-1).any()   # Points inside and outside the planes.
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=1e-12)
    grad = torch.randn(ref.shape, generator=gen, dtype=torch.float64)
    ref_grads = torch.autograd.grad(ref, [planes, points], grad)
    out_grads = torch.autograd.grad(out, [planes, points], grad)
    for a, b in zip(out_grads, ref_grads):
        assert b.abs().max() > 0.1
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


def test_gather_gradcheck():
    gen = torch.Generator().manual_seed(12)
    axes = generate_planes()
    planes = torch.randn(1, 3, 2, 4, 5, generator=gen, dtype=torch.float64).requires_grad_(True)
    points = ((torch.rand(1, 20, 3, generator=gen, dtype=torch.float64) * 2 - 1) * 0.55).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p, x: plane_gather.sample_plane_mean(axes, p, x, box_warp=1.0),
                                    (planes, points), eps=1e-6, atol=1e-7)


def test_gather_reads_channels_last_planes_in_place():
    gen = torch.Generator().manual_seed(13)
    axes = generate_planes()
    backbone_out = torch.randn(2, 3 * 4, 6, 6, generator=gen, dtype=torch.float64)
    planes_cl = backbone_out.contiguous(memory_format=torch.channels_last).view(2, 3, 4, 6, 6)
    table, strides = plane_gather.feature_table(planes_cl)
    assert table.data_ptr() == planes_cl.data_ptr() and strides == [6 * 6 * 3, 1, 6 * 3, 3]
    points = _points(gen, 2, 100, 0.6)
    ref = sample_from_planes(axes, backbone_out.view(2, 3, 4, 6, 6), points, box_warp=1.0).mean(1)
    torch.testing.assert_close(plane_gather.sample_plane_mean(axes, planes_cl, points, box_warp=1.0), ref,
                               atol=1e-12, rtol=1e-12)
    # A non-contiguous layout that is not channels-last (a transposed view) is copied, with the same result.
    planes_t = backbone_out.view(2, 3, 4, 6, 6).transpose(-1, -2)
    ref_t = sample_from_planes(axes, planes_t, points, box_warp=1.0).mean(1)
    torch.testing.assert_close(plane_gather.sample_plane_mean(axes, planes_t, points, box_warp=1.0), ref_t,
                               atol=1e-12, rtol=1e-12)


def test_use_gather_switch(monkeypatch):
    planes = torch.zeros(1, 3, 2, 4, 4)
    monkeypatch.delenv(plane_gather.ENV, raising=False)
    monkeypatch.delenv('EG3D_FUSED_OPS', raising=False)
    assert plane_gather.use_gather(planes)
    assert not plane_gather.use_gather(planes, 'grid_sample')
    assert not plane_gather.use_gather(planes.half())                 # auto: float32 / float64 only.
    with pytest.raises(ValueError, match='float32 or float64'):
        plane_gather.use_gather(planes.half(), 'gather')
    with pytest.raises(ValueError, match='plane_sampling'):
        plane_gather.use_gather(planes, 'bilinear')
    monkeypatch.setenv('EG3D_FUSED_OPS', '0')                          # The reference path everywhere.
    assert not plane_gather.use_gather(planes)
    assert plane_gather.use_gather(planes, 'gather')
    monkeypatch.setenv('EG3D_FUSED_OPS', '1')
    monkeypatch.setenv(plane_gather.ENV, 'grid_sample')
    assert not plane_gather.use_gather(planes)


def test_renderer_paths_agree_with_osg_decoder():
    # The whole renderer (coarse + importance passes) with EG3D's decoder: the gather path gives the
    # grid_sample path's features, depths and gradients (planes and decoder weights) on the same draws.
    torch.manual_seed(0)
    n, res, c = 2, 6, 4
    planes0 = torch.randn(n, 3, c, 16, 16, dtype=torch.float64) * 0.8
    poses = torch.cat([LookAtPoseSampler.sample(math.pi / 2 + 0.3 * i, math.pi / 2 - 0.1 * i, [0, 0, 0.2],
                                                radius=2.7) for i in range(n)]).double()
    origins, dirs = RaySampler()(poses, FOV_to_intrinsics(18.837)[None].repeat(n, 1, 1).double(), res)
    decoder = OSGDecoder(c, {'decoder_lr_mul': 1, 'decoder_output_dim': c}, hidden_dim=8).double()
    results = []
    for impl in ('grid_sample', 'gather'):
        planes = planes0.clone().requires_grad_(True)
        opts = dict(ray_start=2.25, ray_end=3.3, box_warp=1, depth_resolution=6, depth_resolution_importance=5,
                    plane_sampling=impl)
        torch.manual_seed(5)
        rgb, depth, weight = ImportanceRenderer()(planes, decoder, origins, dirs, opts)
        grads = torch.autograd.grad(rgb.square().sum() + depth.sum(), [planes] + list(decoder.parameters()))
        results.append([rgb, depth, weight, *grads])
    assert results[0][3].abs().max() > 1e-3
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)
