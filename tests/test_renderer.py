"""Ray sampler, tri-plane sampling, importance sampling and compositing, against closed forms and
independent references (pinhole projection, geometric series, ray-sphere hits, KS tests against a
numpy CDF), plus the official fixture's recorded draws and depths."""

import math

import numpy as np
import pytest
import scipy.stats
import torch

from camera_utils import FOV_to_intrinsics, LookAtPoseSampler
from training.volumetric_rendering import math_utils
from training.volumetric_rendering.ray_marcher import MipRayMarcher2
from training.volumetric_rendering.ray_sampler import RaySampler, split_camera_label
from training.volumetric_rendering.renderer import (ImportanceRenderer, RendererDraws, generate_planes, ray_bounds,
                                                     renderer_draws, sample_from_planes, sample_pdf)

# Which world coordinates each plane sees, written out independently of the axis matrices.
PLANE_COORDS = {'eg3d': [(0, 1), (0, 2), (2, 0)], 'orthogonal': [(0, 1), (1, 2), (2, 0)]}


def options(**kw):
    base = dict(ray_start=2.25, ray_end=3.3, box_warp=1.0, depth_resolution=8, depth_resolution_importance=0,
                disparity_space_sampling=False, clamp_mode='softplus')
    base.update(kw)
    return base


def random_pose(gen, dtype=torch.float64):
    """A random rigid cam2world [1, 4, 4] (rotation from QR, det +1)."""
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=gen, dtype=dtype))
    q = q * torch.sign(torch.diagonal(r))
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    pose = torch.eye(4, dtype=dtype)
    pose[:3, :3] = q
    pose[:3, 3] = torch.randn(3, generator=gen, dtype=dtype) * 2
    return pose[None]


class ConstantDecoder:
    """Constant raw density and colour everywhere."""

    def __init__(self, sigma, rgb):
        self.sigma, self.rgb = sigma, torch.as_tensor(rgb, dtype=torch.float64)

    def __call__(self, features, directions):
        n, _, p, _ = features.shape
        return {'rgb': self.rgb.to(features.dtype).expand(n, p, -1),
                'sigma': torch.full((n, p, 1), self.sigma, dtype=features.dtype)}


class LinearDecoder:
    """Mean over planes; channel 0 is the raw density, the rest the colour (differentiable)."""

    def __call__(self, features, directions):
        f = features.mean(1)
        return {'rgb': f[..., 1:], 'sigma': f[..., :1]}


def coordinate_planes(res, box_warp, convention, dtype=torch.float64):
    """Planes [1, 3, 3, res, res] whose channels hold the world coordinates of each texel centre
    (the two that the plane sees) and a constant 1. Bilinear interpolation reproduces them exactly
    inside the texel-centre area, so a decoder can recover (x, y, z) from the sampled features."""
    centres = ((torch.arange(res, dtype=dtype) + 0.5) / res * 2 - 1) * box_warp / 2
    rows, cols = torch.meshgrid(centres, centres, indexing='ij')
    planes = torch.stack([torch.stack([cols, rows, torch.ones_like(rows)]) for _ in PLANE_COORDS[convention]])
    return planes[None]


class SphereDecoder:
    """Opaque sphere from coordinate planes: x, y from plane 0 and z from plane 1's second axis
    (z in both conventions); points where the constant channel is not 1 (outside the box) are empty."""

    def __init__(self, centre, radius):
        self.centre, self.radius = torch.tensor(centre, dtype=torch.float64), radius

    def __call__(self, features, directions):
        xyz = torch.stack([features[:, 0, :, 0], features[:, 0, :, 1], features[:, 1, :, 1]], dim=-1)
        valid = features[..., 2].min(dim=1).values > 0.999
        inside = valid & ((xyz - self.centre).norm(dim=-1) < self.radius)
        sigma = torch.where(inside, 1000.0, -60.0).to(features.dtype)[..., None]
        return {'rgb': torch.ones_like(sigma).expand(-1, -1, 3), 'sigma': sigma}

# ----------------------------------------------------------------------------
# Ray sampler.


def test_ray_sampler_pinhole():
    gen = torch.Generator().manual_seed(1)
    pose = random_pose(gen)
    fx, fy, cx, cy, skew = 1.7, 2.1, 0.45, 0.55, 0.05
    intrinsics = torch.tensor([[[fx, skew, cx], [0, fy, cy], [0, 0, 1]]], dtype=torch.float64)
    res = 7
    origins, dirs = RaySampler()(pose, intrinsics, res)
    assert origins.shape == dirs.shape == (1, res * res, 3)
    torch.testing.assert_close(origins[0], pose[0, :3, 3].expand(res * res, 3), atol=0, rtol=0)
    torch.testing.assert_close(dirs.norm(dim=-1), torch.ones(1, res * res, dtype=torch.float64), atol=1e-12, rtol=0)
    # Project each direction back with the pinhole model: u = fx x/z + s y/z + cx, v = fy y/z + cy.
    d_cam = dirs[0] @ pose[0, :3, :3]
    x, y, z = d_cam.unbind(-1)
    assert (z > 0).all()
    u, v = fx * x / z + skew * y / z + cx, fy * y / z + cy
    rows, cols = np.divmod(np.arange(res * res), res)                # Row-major pixel order.
    np.testing.assert_allclose(u.numpy(), (cols + 0.5) / res, atol=1e-12)
    np.testing.assert_allclose(v.numpy(), (rows + 0.5) / res, atol=1e-12)
    # Centre pixel (res odd) looks along the principal ray when the principal point is the centre.
    intrinsics_c = torch.tensor([[[fx, 0, 0.5], [0, fy, 0.5], [0, 0, 1]]], dtype=torch.float64)
    _, dirs_c = RaySampler()(pose, intrinsics_c, res)
    torch.testing.assert_close(dirs_c[0, res * res // 2], pose[0, :3, 2], atol=1e-12, rtol=0)
    # Corner pixel (0, 0): direction (( 0.5/res - 0.5) / fx, (0.5/res - 0.5) / fy, 1) in the camera.
    corner = torch.tensor([(0.5 / res - 0.5) / fx, (0.5 / res - 0.5) / fy, 1.0], dtype=torch.float64)
    torch.testing.assert_close(dirs_c[0, 0], pose[0, :3, :3] @ (corner / corner.norm()), atol=1e-12, rtol=0)


def test_ray_sampler_frontal_first_pixel_and_shapes():
    pose = LookAtPoseSampler.sample(math.pi / 2, math.pi / 2, [0, 0, 0], radius=2.7)
    _, dirs = RaySampler()(pose, FOV_to_intrinsics(18.837)[None], 4)
    assert dirs[0, 0, 0] < 0 and dirs[0, 0, 1] > 0 and dirs[0, 0, 2] < 0     # Top-left looks to (-x, +y, -z).
    with pytest.raises(AssertionError, match='intrinsics'):
        RaySampler()(pose, torch.eye(3)[None].repeat(2, 1, 1), 4)
    with pytest.raises(AssertionError, match='cam2world'):
        RaySampler()(pose[:, :3], torch.eye(3)[None], 4)

# ----------------------------------------------------------------------------
# Tri-plane projection.


@pytest.mark.parametrize('convention', ['eg3d', 'orthogonal'])
def test_triplane_read_back(convention):
    res, channels, box_warp = 16, 4, 1.6
    gen = torch.Generator().manual_seed(2)
    texel = [3, 11, 6]                                               # Texel index per world axis.
    point = torch.tensor([[(k + 0.5) / res * 2 - 1 for k in texel]], dtype=torch.float64) * box_warp / 2
    planes = torch.zeros(1, 3, channels, res, res, dtype=torch.float64)
    values = torch.randn(3, channels, generator=gen, dtype=torch.float64)
    for p, (a, b) in enumerate(PLANE_COORDS[convention]):
        planes[0, p, :, texel[b], texel[a]] = values[p]                # First coordinate -> width, second -> height.
    axes = generate_planes(convention)
    read = sample_from_planes(axes, planes, point[None], box_warp=box_warp)
    assert read.shape == (1, 3, 1, channels)
    torch.testing.assert_close(read[0, :, 0], values, atol=1e-12, rtol=0)
    # One texel away along each axis, a plane that sees that axis reads zero; one that does not, reads the value.
    step = box_warp / res
    for axis in range(3):
        moved = point.clone()
        moved[0, axis] += step
        read = sample_from_planes(axes, planes, moved[None], box_warp=box_warp)[0, :, 0]
        for p, pair in enumerate(PLANE_COORDS[convention]):
            expected = torch.zeros(channels, dtype=torch.float64) if axis in pair else values[p]
            torch.testing.assert_close(read[p], expected, atol=1e-12, rtol=0)
        # Half a texel away: bilinear weight 1/2 on the planes that see the axis.
        moved[0, axis] -= step / 2
        read = sample_from_planes(axes, planes, moved[None], box_warp=box_warp)[0, :, 0]
        for p, pair in enumerate(PLANE_COORDS[convention]):
            torch.testing.assert_close(read[p], values[p] * (0.5 if axis in pair else 1.0), atol=1e-12, rtol=0)
    # Outside the box every plane reads zero.
    outside = torch.tensor([[[0.0, 0.0, box_warp]]], dtype=torch.float64)
    assert torch.equal(sample_from_planes(axes, planes, outside, box_warp=box_warp), torch.zeros(1, 3, 1, channels,
                                                                                                 dtype=torch.float64))


def test_plane_conventions_differ_only_in_plane_1():
    eg3d, ortho = generate_planes('eg3d'), generate_planes('orthogonal')
    assert torch.equal(eg3d[0], ortho[0]) and torch.equal(eg3d[2], ortho[2]) and not torch.equal(eg3d[1], ortho[1])
    with pytest.raises(ValueError, match='plane_convention'):
        generate_planes('xyz')

# ----------------------------------------------------------------------------
# Compositing: constant density, sphere.


@pytest.mark.parametrize('white_back', [False, True])
def test_constant_density_closed_form(white_back):
    sigma_raw, colour, a, b, d = 0.7, [0.2, 0.5, 0.9], 2.0, 3.5, 41
    sigma = math.log1p(math.exp(sigma_raw - 1))                      # softplus(x - 1)
    gen = torch.Generator().manual_seed(4)
    origins = torch.randn(2, 5, 3, generator=gen, dtype=torch.float64)
    dirs = torch.nn.functional.normalize(torch.randn(2, 5, 3, generator=gen, dtype=torch.float64), dim=-1)
    planes = torch.randn(2, 3, 4, 8, 8, generator=gen, dtype=torch.float64)
    opts = options(ray_start=a, ray_end=b, depth_resolution=d, jitter=False, white_back=white_back)
    rgb, depth, weight_total = ImportanceRenderer()(planes, ConstantDecoder(sigma_raw, colour), origins, dirs, opts)

    # Samples at a + k delta (k < d): n = d - 1 intervals with q = exp(-sigma delta) each.
    n, delta = d - 1, (b - a) / (d - 1)
    q = math.exp(-sigma * delta)
    opacity = 1 - q ** n                                             # = 1 - exp(-sigma (b - a))
    depth_ref = (a + delta / 2) + delta * q * (1 - n * q ** (n - 1) + (n - 1) * q ** n) / (1 - q) / (1 - q ** n)
    # Tolerance 1e-8: the marcher's (1 - alpha + 1e-10) adds about n * 1e-10 over n intervals.
    torch.testing.assert_close(weight_total, torch.full_like(weight_total, opacity), atol=1e-8, rtol=0)
    torch.testing.assert_close(depth, torch.full_like(depth, depth_ref), atol=1e-8, rtol=0)
    expected = torch.tensor(colour, dtype=torch.float64) * opacity + (1 - opacity if white_back else 0)
    torch.testing.assert_close(rgb, (expected * 2 - 1).expand_as(rgb), atol=1e-8, rtol=0)

    # Per-sample transmittance exp(-sigma (t_i - a)) through the marcher's weights.
    depths = torch.linspace(a, b, d, dtype=torch.float64).reshape(1, 1, d, 1)
    _, _, weights = MipRayMarcher2()(torch.zeros(1, 1, d, 1, dtype=torch.float64),
                                     torch.full((1, 1, d, 1), sigma_raw, dtype=torch.float64), depths, opts)
    transmittance = torch.exp(-sigma * (depths[0, 0, :-1, 0] - a))
    torch.testing.assert_close(weights[0, 0, :, 0], transmittance * (1 - q), atol=1e-8, rtol=0)


def test_constant_density_continuous_limit():
    # Expected depth of a homogeneous slab [a, b]: a + 1/sigma - L e^(-sigma L) / (1 - e^(-sigma L)).
    sigma_raw, a, b, d = 2.5, 1.0, 2.0, 1001
    sigma = math.log1p(math.exp(sigma_raw - 1))
    origins = torch.zeros(1, 1, 3, dtype=torch.float64)
    dirs = torch.tensor([[[0.0, 0.0, 1.0]]], dtype=torch.float64)
    planes = torch.zeros(1, 3, 1, 2, 2, dtype=torch.float64)
    _, depth, weight_total = ImportanceRenderer()(planes, ConstantDecoder(sigma_raw, [0.0]), origins, dirs,
                                                  options(ray_start=a, ray_end=b, depth_resolution=d, jitter=False))
    length = b - a
    depth_ref = a + 1 / sigma - length * math.exp(-sigma * length) / (1 - math.exp(-sigma * length))
    assert abs(depth.item() - depth_ref) < (b - a) / (d - 1)
    # The marcher's 1e-10 in (1 - alpha + 1e-10) adds about n * 1e-10 over n intervals.
    assert abs(weight_total.item() - (1 - math.exp(-sigma * length))) < 1e-6


@pytest.mark.parametrize('convention,box_warp', [('eg3d', 1.0), ('orthogonal', 1.6)])
def test_sphere_depth(convention, box_warp):
    centre, radius = [0.1, -0.05, 0.08], 0.25
    pose = LookAtPoseSampler.sample(math.pi / 2 + 0.3, math.pi / 2 - 0.15, [0, 0, 0], radius=2.7, device='cpu').double()
    res = 20
    origins, dirs = RaySampler()(pose, FOV_to_intrinsics(18.837)[None].double(), res)
    opts = options(depth_resolution=24, depth_resolution_importance=24, box_warp=box_warp, plane_convention=convention)
    planes = coordinate_planes(64, box_warp, convention)
    torch.manual_seed(5)
    rgb, depth, weight_total = ImportanceRenderer()(planes, SphereDecoder(centre, radius), origins, dirs, opts)

    # Analytic first hit of o + t d with |x - c| = r.
    oc = origins[0] - torch.tensor(centre, dtype=torch.float64)
    half_b = (dirs[0] * oc).sum(-1)
    disc = half_b ** 2 - ((oc * oc).sum(-1) - radius ** 2)
    hit = disc > 0.02                                                # Clear hits (grazing rays are ambiguous).
    miss = disc < -0.02
    assert hit.sum() > 60 and miss.sum() > 60
    t_hit = -half_b - disc.clamp_min(0).sqrt()
    spacing = (3.3 - 2.25) / (24 - 1)
    assert (depth[0, hit, 0] - t_hit[hit]).abs().max() < spacing
    assert (weight_total[0, hit, 0] > 0.99).all() and (weight_total[0, miss, 0] < 1e-6).all()
    torch.testing.assert_close(rgb[0, miss], -torch.ones(int(miss.sum()), 3, dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(rgb[0, hit], torch.ones(int(hit.sum()), 3, dtype=torch.float64), atol=0.02, rtol=0)

# ----------------------------------------------------------------------------
# Importance sampling.


def piecewise_linear_cdf(bins, weights):
    """numpy reference: the CDF rises linearly by weight k (+1e-5, normalised) between bins k and k + 1."""
    w = np.asarray(weights, np.float64) + 1e-5
    knots = np.concatenate([[0.0], np.cumsum(w / w.sum())])
    return lambda t: np.interp(t, np.asarray(bins, np.float64)[:len(knots)], knots)


def test_sample_pdf_ks():
    bins = np.array([0.3, 0.5, 0.6, 1.0, 1.1, 1.6, 1.7, 2.5, 2.8])        # 9 bins, 7 weights: the last bin unused.
    weights = np.array([0.5, 2.0, 0.1, 1.5, 0.0, 3.0, 0.7])
    torch.manual_seed(6)
    samples = sample_pdf(torch.tensor(bins, dtype=torch.float32).expand(100, -1),
                         torch.tensor(weights, dtype=torch.float32).expand(100, -1), 200).double().numpy().ravel()
    assert samples.min() >= bins[0] and samples.max() <= bins[7] + 1e-6
    assert scipy.stats.kstest(samples, piecewise_linear_cdf(bins, weights)).pvalue > 0.01
    # The test has power: NeRF's convention (weights over all bins, here shifted by one) is rejected.
    assert scipy.stats.kstest(samples, piecewise_linear_cdf(bins[1:], weights)).pvalue < 1e-6
    # det: the quantile midpoints of the same CDF.
    det = sample_pdf(torch.tensor(bins)[None], torch.tensor(weights)[None], 10, det=True)[0].numpy()
    np.testing.assert_allclose(piecewise_linear_cdf(bins, weights)(det), (np.arange(10) + 0.5) / 10, atol=1e-9)


def test_sample_importance_smoothing_ks():
    # Coarse depths z (S = 10) and interval weights w (S - 1); upstream smooths w by max-pool then
    # average-pool: s_j = (max(w_{j-1}, w_j) + max(w_j, w_{j+1})) / 2 (edges: no neighbour), + 0.01,
    # and samples the pdf s[1:-1] over bins at the coarse midpoints.
    z = np.array([2.0, 2.1, 2.3, 2.35, 2.6, 2.7, 2.9, 3.0, 3.2, 3.3])
    w = np.array([0.0, 0.05, 0.6, 0.1, 0.0, 0.3, 0.02, 0.0, 0.1])
    padded = np.concatenate([[-np.inf], w, [-np.inf]])
    pooled = np.maximum(padded[:-1], padded[1:])
    smoothed = (pooled[:-1] + pooled[1:]) / 2 + 0.01
    bins = (z[:-1] + z[1:]) / 2
    rays = 160
    torch.manual_seed(9)
    fine = ImportanceRenderer().sample_importance(torch.tensor(z, dtype=torch.float32).reshape(1, 1, 10, 1).expand(2, rays // 2, -1, -1),
                                                  torch.tensor(w, dtype=torch.float32).reshape(1, 1, 9, 1).expand(2, rays // 2, -1, -1), 128)
    assert fine.shape == (2, rays // 2, 128, 1)
    samples = fine.double().numpy().ravel()
    assert samples.max() <= bins[-2] + 1e-6                           # The last midpoint bin is never used.
    assert scipy.stats.kstest(samples, piecewise_linear_cdf(bins, smoothed[1:-1])).pvalue > 0.01
    # A single ray keeps its shape (upstream's squeeze() would drop the batch dimension).
    one = ImportanceRenderer().sample_importance(torch.tensor(z).reshape(1, 1, 10, 1), torch.tensor(w).reshape(1, 1, 9, 1), 4)
    assert one.shape == (1, 1, 4, 1)

# ----------------------------------------------------------------------------
# Ray bounds.


def test_ray_box_limits():
    o = torch.tensor([[0.0, 0.0, 3.0], [0.2, 3.0, 0.1], [2.0, 2.0, 3.0], [0.2, 0.3, 0.1]], dtype=torch.float64)
    d = torch.tensor([[0.0, 0.0, -1.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    near, far = math_utils.get_ray_limits_box(o, d, 1.0)
    np.testing.assert_allclose(near[:2, 0].numpy(), [2.5, 2.5])
    np.testing.assert_allclose(far[:2, 0].numpy(), [3.5, 3.5])
    assert far[2, 0] < near[2, 0]                                     # Miss.
    np.testing.assert_allclose([near[3, 0].item(), far[3, 0].item()], [-0.7, 0.3])   # Starts inside: t < 0.
    # Random rays aimed into the box: entry and exit points lie on the box surface.
    gen = torch.Generator().manual_seed(3)
    o = torch.nn.functional.normalize(torch.randn(200, 3, generator=gen, dtype=torch.float64), dim=-1) * 4
    target = (torch.rand(200, 3, generator=gen, dtype=torch.float64) - 0.5) * 1.2
    d = torch.nn.functional.normalize(target - o, dim=-1)
    near, far = math_utils.get_ray_limits_box(o, d, 1.6)
    assert (far > near).all()
    for t in (near, far):
        np.testing.assert_allclose((o + t * d).abs().amax(-1).numpy(), 0.8, atol=1e-12)
    mid = o + (near + far) / 2 * d
    assert (mid.abs() < 0.8).all()


def test_auto_bounds_miss_handling():
    o = torch.tensor([[[0.0, 0.0, 3.0], [0.3, 0.0, 3.0], [2.0, 2.0, 3.0]]], dtype=torch.float64)
    d = torch.nn.functional.normalize(torch.tensor([[[0.0, 0.0, -1.0], [0.0, 0.0, -1.0], [0.0, 0.0, -1.0]]],
                                                   dtype=torch.float64), dim=-1)
    o[0, 1, 2] = 3.2
    start, end = ray_bounds(o, d, options(ray_start='auto', ray_end='auto'))
    np.testing.assert_allclose(start[0, :, 0].numpy(), [2.5, 2.7, 2.5])
    # The miss ends at the max of the hits' *starts* (2.7), not of their ends (3.7): upstream's bug.
    np.testing.assert_allclose(end[0, :, 0].numpy(), [3.5, 3.7, 2.7])
    assert ray_bounds(o, d, options()) == (2.25, 3.3)
    with pytest.raises(ValueError, match='both'):
        ray_bounds(o, d, options(ray_start='auto'))
    # 'auto' coarse depths run from start to end per ray.
    depths = ImportanceRenderer().sample_stratified(o, start, end, 5, jitter=False)
    np.testing.assert_allclose(depths[0, 1, :, 0].numpy(), np.linspace(2.7, 3.7, 5), atol=1e-12)


def test_disparity_sampling_closed_form():
    o = torch.zeros(1, 2, 3)
    depths = ImportanceRenderer().sample_stratified(o, 2.0, 4.0, 5, disparity_space_sampling=True, jitter=False)
    s = np.linspace(0, 1, 5)
    np.testing.assert_allclose(depths[0, 0, :, 0].numpy(), 1 / ((1 - s) / 2.0 + s / 4.0), rtol=1e-6)
    torch.manual_seed(0)
    jittered = ImportanceRenderer().sample_stratified(o, 2.0, 4.0, 5, disparity_space_sampling=True)
    torch.manual_seed(0)
    u = torch.rand(1, 2, 5, 1)
    s = torch.linspace(0, 1, 5).reshape(1, 1, 5, 1) + u / 4
    torch.testing.assert_close(jittered, 1 / ((1 - s) / 2.0 + s / 4.0))

# ----------------------------------------------------------------------------
# Randomness: order, replay, jitter off.


def _small_scene(seed=0):
    gen = torch.Generator().manual_seed(seed)
    pose = LookAtPoseSampler.sample(1.5, 1.6, [0, 0, 0], radius=2.7).repeat(2, 1, 1)
    origins, dirs = RaySampler()(pose, FOV_to_intrinsics(18.837)[None].repeat(2, 1, 1), 3)
    planes = torch.randn(2, 3, 5, 8, 8, generator=gen)
    return planes, origins, dirs


def test_draw_order_replay_and_jitter_off():
    planes, origins, dirs = _small_scene()
    opts = options(depth_resolution=6, depth_resolution_importance=4)
    renderer = ImportanceRenderer()
    torch.manual_seed(123)
    ref = renderer(planes, LinearDecoder(), origins, dirs, opts)
    torch.manual_seed(123)
    with renderer_draws() as draws:
        out = renderer(planes, LinearDecoder(), origins, dirs, opts)
    for a, b in zip(ref, out):
        assert torch.equal(a, b)
    # Upstream's order and shapes: rand_like on the coarse depths [B, M, D, 1], then rand [B*M, D_imp].
    torch.manual_seed(123)
    assert torch.equal(draws.recorded['render.stratified_u'][0], torch.rand(2, 9, 6, 1))
    assert torch.equal(draws.recorded['render.importance_u'][0], torch.rand(18, 4))
    # Replaying the recorded draws under another seed reproduces the render.
    torch.manual_seed(999)
    with renderer_draws(replay={k: v[0] for k, v in draws.recorded.items()}):
        replayed = renderer(planes, LinearDecoder(), origins, dirs, opts)
    for a, b in zip(ref, replayed):
        assert torch.equal(a, b)
    with pytest.raises(RuntimeError, match='ran out'):
        with renderer_draws(replay={'render.importance_u': []}):
            renderer(planes, LinearDecoder(), origins, dirs, opts)
    with pytest.raises(ValueError, match='shape'):
        with renderer_draws(replay={'render.stratified_u': torch.rand(2, 9, 5, 1)}):
            renderer(planes, LinearDecoder(), origins, dirs, opts)
    # jitter=False: no draws from the global generator and identical renders.
    state = torch.get_rng_state()
    det1 = renderer(planes, LinearDecoder(), origins, dirs, dict(opts, jitter=False))
    det2 = renderer(planes, LinearDecoder(), origins, dirs, dict(opts, jitter=False))
    assert torch.equal(torch.get_rng_state(), state)
    for a, b in zip(det1, det2):
        assert torch.equal(a, b)


def upstream_order_forward(renderer, planes, decoder, origins, dirs, opts):
    """The renderer written out the upstream way from its own parts: full marcher on the coarse
    samples, then unify_samples (cat + sort + gather of colours) and the marcher again."""
    n, m = origins.shape[:2]
    start, end = ray_bounds(origins, dirs, opts)
    depths_c = renderer.sample_stratified(origins, start, end, opts['depth_resolution'])

    def evaluate(depths):
        s = depths.shape[2]
        pts = (origins.unsqueeze(-2) + depths * dirs.unsqueeze(-2)).reshape(n, -1, 3)
        out = renderer.run_model(planes, decoder, pts, dirs.unsqueeze(-2).expand(-1, -1, s, -1).reshape(n, -1, 3), opts)
        return out['rgb'].reshape(n, m, s, -1), out['sigma'].reshape(n, m, s, 1)
    colors_c, dens_c = evaluate(depths_c)
    _, _, weights = renderer.ray_marcher(colors_c, dens_c, depths_c, opts)
    depths_f = renderer.sample_importance(depths_c, weights, opts['depth_resolution_importance'])
    colors_f, dens_f = evaluate(depths_f)
    depths, colors, dens = renderer.unify_samples(depths_c, colors_c, dens_c, depths_f, colors_f, dens_f)
    rgb, depth, weights = renderer.ray_marcher(colors, dens, depths, opts)
    return rgb, depth, weights.sum(2)


@pytest.mark.parametrize('white_back', [False, True])
def test_forward_matches_upstream_order(white_back):
    # forward composites coarse + fine samples without reordering colours; values and gradients must
    # equal the upstream-ordered composition on the same draws.
    planes, origins, dirs = _small_scene()
    planes = planes.double()
    origins, dirs = origins.double(), dirs.double()
    opts = options(depth_resolution=7, depth_resolution_importance=5, white_back=white_back)
    renderer = ImportanceRenderer()
    results = []
    for fn in (renderer, lambda *a: upstream_order_forward(renderer, *a)):
        p = planes.clone().requires_grad_(True)
        torch.manual_seed(31)
        out = fn(p, LinearDecoder(), origins, dirs, opts)
        (out[0].square().sum() + out[1].sum()).backward()
        results.append([t.detach() for t in out] + [p.grad])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


def test_renderer_gradcheck():
    planes, origins, dirs = _small_scene()
    planes = (planes[:1, :, :3, :4, :4] * 0.5).double().requires_grad_(True)
    opts = options(depth_resolution=5, jitter=False, box_warp=1.0)
    renderer = ImportanceRenderer()
    origins, dirs = origins[:1, :4].double(), dirs[:1, :4].double()

    def render(p):
        rgb, depth, _ = renderer(p, LinearDecoder(), origins, dirs, opts)
        return rgb, depth
    assert torch.autograd.gradcheck(render, (planes,), eps=1e-6, atol=1e-6)


def test_boundary_checks():
    planes, origins, dirs = _small_scene()
    r, dec = ImportanceRenderer(), LinearDecoder()
    with pytest.raises(AssertionError, match='planes'):
        r(planes[:, :2], dec, origins, dirs, options())
    with pytest.raises(AssertionError, match='ray_origins'):
        r(planes[:1], dec, origins, dirs, options())
    with pytest.raises(AssertionError, match='ray_directions'):
        r(planes, dec, origins, dirs[:, :4], options())
    with pytest.raises(KeyError, match='box_warp'):
        r(planes, dec, origins, dirs, {k: v for k, v in options().items() if k != 'box_warp'})
    with pytest.raises(ValueError, match='plane_convention'):
        r(planes, dec, origins, dirs, options(plane_convention='yz'))
    with pytest.raises(ValueError, match='clamp_mode'):
        r(planes, dec, origins, dirs, options(clamp_mode='mipnerf'))
    with pytest.raises(AssertionError, match='sigma'):
        r(planes, lambda f, d: {'rgb': f.mean(1), 'sigma': f.mean(1)}, origins, dirs, options())


def test_depth_clamped_to_batch_range():
    # A ray with no weight (0/0) gets the batch-global max depth; others are clamped to the global range.
    depths = torch.tensor([[[[1.0], [2.0]], [[3.0], [5.0]]]])
    densities = torch.tensor([[[[-200.0], [-200.0]], [[5.0], [5.0]]]])
    rgb, depth, weights = MipRayMarcher2()(torch.zeros(1, 2, 2, 3), densities, depths, {})
    assert depth[0, 0, 0] == 5.0 and abs(depth[0, 1, 0] - 4.0) < 1e-6
    torch.testing.assert_close(rgb[0, 0], -torch.ones(3))

# ----------------------------------------------------------------------------
# The official fixture (small config: 12 + 12 samples, ray_start 2.25, ray_end 3.3, 32 x 32 rays).


def test_fixture_draws_and_depths(fixtures_dir):
    data = np.load(fixtures_dir / 'official-small-s1.npz')
    prefix = 'rand/fwd_eval/'
    strat_u = torch.from_numpy(data[prefix + 'render.stratified_u#0'])
    imp_u = torch.from_numpy(data[prefix + 'render.importance_u#0'])
    coarse_ref = torch.from_numpy(data[prefix + 'render.depths_coarse#0'])
    fine_ref = torch.from_numpy(data[prefix + 'render.depths_fine#0'])
    cam2world, intrinsics = split_camera_label(torch.from_numpy(data['in/c_render']))
    origins, dirs = RaySampler()(cam2world, intrinsics, int(data['in/neural_rendering_resolution']))
    opts = options(depth_resolution=12, depth_resolution_importance=12)
    renderer = ImportanceRenderer()

    # Our coarse depths from the recorded jitter equal the official ones exactly.
    with renderer_draws(replay=RendererDraws.from_arrays(data, prefix)):
        coarse = renderer.sample_stratified(origins, 2.25, 3.3, 12)
    assert torch.equal(coarse, coarse_ref)

    # The official run seeded 8 before synthesis; our renderer, fed our rays for its cameras, draws
    # exactly the recorded uniforms in the same order (the backbone draws nothing with const noise).
    planes = torch.randn(4, 3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(8)
    with renderer_draws() as draws:
        renderer(planes, LinearDecoder(), origins, dirs, opts)
    assert torch.equal(draws.recorded['render.stratified_u'][0], strat_u)
    assert torch.equal(draws.recorded['render.importance_u'][0], imp_u)

    # The official fine depths are consistent with their rays' coarse depths: rows of [B*M] follow
    # the ray order, they lie within the used bins (the last coarse midpoint is never reached) and
    # grow with u (an inverse CDF).
    z = coarse_ref.reshape(4 * 1024, 12)
    mids = (z[:, :-1] + z[:, 1:]) / 2
    assert (fine_ref >= mids[:, :1] - 1e-6).all() and (fine_ref <= mids[:, -2:-1] + 1e-6).all()
    assert (fine_ref.max(dim=1).values < mids[:, -1]).all()
    order = imp_u.argsort(dim=1)
    assert (fine_ref.gather(1, order).diff(dim=1) >= -1e-6).all()


def test_official_pickle_state_and_profiler_scope():
    # Official pickles restore these classes without __init__, from their __dict__: the renderer's
    # holds only nn.Module internals, ray_marcher and a plain plane_axes tensor; the ray sampler's
    # holds five None attributes.
    def restore(cls, extra, modules=None):
        state = dict(torch.nn.Module().__dict__)
        state['_modules'] = dict(modules or {})
        state.update(extra)
        obj = cls.__new__(cls)
        obj.__setstate__(state)
        return obj
    marcher = restore(MipRayMarcher2, {})
    renderer = restore(ImportanceRenderer, {'plane_axes': generate_planes()}, {'ray_marcher': marcher})
    sampler = restore(RaySampler, dict.fromkeys(['ray_origins_h', 'ray_directions', 'depths', 'image_coords',
                                                 'rendering_options']))
    planes, origins, dirs = _small_scene()
    pose = LookAtPoseSampler.sample(1.5, 1.6, [0, 0, 0], radius=2.7).repeat(2, 1, 1)
    origins2, dirs2 = sampler(pose, FOV_to_intrinsics(18.837)[None].repeat(2, 1, 1), 3)
    assert torch.equal(origins, origins2) and torch.equal(dirs, dirs2)
    opts = options(depth_resolution=4, depth_resolution_importance=4, jitter=False)
    with torch.profiler.profile() as prof:
        out = renderer(planes, LinearDecoder(), origins, dirs, opts)
    assert 'renderer' in {e.key for e in prof.key_averages()}
    for a, b in zip(out, ImportanceRenderer()(planes, LinearDecoder(), origins, dirs, opts)):
        assert torch.equal(a, b)
