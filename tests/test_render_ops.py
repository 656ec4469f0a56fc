"""The renderer's host kernels (torch_utils/ops/render_ops) against independent references: softplus
and its gradient against float64 torch, the OSGDecoder's chunked no-graph forward against its torch
path, and the fused tri-plane gather against grid_sample's mean over the planes (float64 and float32,
points outside the box, on texel centres and edges, NaN and infinite points, channels-last planes)."""

import pytest
import torch
import torch.nn.functional as F

import training.triplane as triplane
from training.triplane import OSGDecoder
from training.volumetric_rendering import plane_gather
from training.volumetric_rendering.renderer import generate_planes, sample_from_planes


def _softplus_inputs(gen, dtype):
    edges = torch.tensor([0.0, -0.0, 1e-30, -1e-30, 19.999, 20.0, 20.001, -20.0, -87.0, -88.0, -90.0, -104.0,
                          88.0, 100.0, 1e30, -1e30, float('inf'), -float('inf')], dtype=dtype)
    return torch.cat([torch.randn(20000, generator=gen, dtype=dtype) * 8, torch.linspace(-120, 120, 4801, dtype=dtype),
                      edges])


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_softplus_matches_float64(render_ops_host, dtype):
    gen = torch.Generator().manual_seed(1)
    x = _softplus_inputs(gen, dtype)
    ref = F.softplus(x.double())
    y = render_ops_host.softplus(x)
    tol = dict(atol=2e-7, rtol=4e-7) if dtype == torch.float32 else dict(atol=1e-15, rtol=1e-14)
    torch.testing.assert_close(y.double(), ref, **tol)
    assert y[x == -float('inf')].eq(0).all() and y[x == float('inf')].eq(float('inf')).all()
    if dtype == torch.float32:
        assert y[x < -104].eq(0).all()                              # Below float32's range: exactly 0.
    nan = torch.tensor([float('nan')], dtype=dtype)
    assert render_ops_host.softplus(nan).isnan().all()
    # In place, and the gradient dy * sigmoid(x).
    x2 = x.clone()
    assert render_ops_host.softplus(x2, out=x2).data_ptr() == x2.data_ptr()
    torch.testing.assert_close(x2, y, atol=0, rtol=0)
    dy = torch.randn(x.shape, generator=gen, dtype=dtype)
    finite = x.isfinite()
    ref_grad = dy.double() * torch.sigmoid(x.double())
    torch.testing.assert_close(render_ops_host.softplus_grad(dy, x).double()[finite], ref_grad[finite], **tol)


def test_host_softplus_gradcheck(render_ops_host):
    gen = torch.Generator().manual_seed(2)
    x = (torch.randn(40, generator=gen, dtype=torch.float64) * 5).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: triplane._HostSoftplus.apply(t, render_ops_host), (x,))
    # Double backward (a graph of the gradient) goes through torch's ops.
    assert torch.autograd.gradgradcheck(lambda t: triplane._HostSoftplus.apply(t, render_ops_host), (x,))


def _decoder(dtype, c=6, hidden=16, lr_mul=0.8, seed=3):
    torch.manual_seed(seed)
    dec = OSGDecoder(c, {'decoder_lr_mul': lr_mul, 'decoder_output_dim': 5}, hidden_dim=hidden).to(dtype)
    with torch.no_grad():
        for p in dec.parameters():
            p.normal_()
    return dec


def _decoder_reference(dec, x):
    """OSGDecoder's formula in float64 from torch's ops (EG3D Sec. 4.1)."""
    fc1, _, fc2 = dec.net
    h = F.softplus(x.double() @ (fc1.weight.double() * fc1.weight_gain).t() + fc1.bias.double() * fc1.bias_gain)
    o = h @ (fc2.weight.double() * fc2.weight_gain).t() + fc2.bias.double() * fc2.bias_gain
    return torch.sigmoid(o[..., 1:]) * 1.002 - 0.001, o[..., :1]


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_decoder_chunked_forward(render_ops_host, monkeypatch, dtype):
    monkeypatch.setattr(triplane, '_DECODER_CHUNK', 1000)          # Several chunks and a partial one.
    gen = torch.Generator().manual_seed(4)
    dec = _decoder(dtype)
    x = torch.randn(2, 1700, 6, generator=gen, dtype=dtype) * 3
    with torch.no_grad():
        out = dec.forward_plane_mean(x, None)
    rgb, sigma = _decoder_reference(dec, x)
    tol = dict(atol=2e-6, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-13, rtol=1e-13)
    assert out['rgb'].shape == (2, 1700, 5) and out['sigma'].shape == (2, 1700, 1)
    assert sigma.abs().max() > 1 and rgb.min() < 0.2 and rgb.max() > 0.8
    torch.testing.assert_close(out['rgb'].double(), rgb, **tol)
    torch.testing.assert_close(out['sigma'].double(), sigma, **tol)
    # The torch path (fused ops off) agrees.
    monkeypatch.setenv('EG3D_FUSED_OPS', '0')
    with torch.no_grad():
        ref = dec.forward_plane_mean(x, None)
    torch.testing.assert_close(out['rgb'], ref['rgb'], **tol)
    torch.testing.assert_close(out['sigma'], ref['sigma'], **tol)


def test_decoder_gradients_with_host_softplus(render_ops_host, monkeypatch):
    # With a graph: FC -> host softplus -> FC; gradients for inputs and weights as the torch path's.
    gen = torch.Generator().manual_seed(5)
    dec = _decoder(torch.float64)
    x = torch.randn(2, 300, 6, generator=gen, dtype=torch.float64)
    grads = []
    for enabled in ('1', '0'):
        monkeypatch.setenv('EG3D_FUSED_OPS', enabled)
        xi = x.clone().requires_grad_(True)
        out = dec.forward_plane_mean(xi, None)
        loss = (out['rgb'] * torch.linspace(-1, 1, 5, dtype=torch.float64)).sum() + out['sigma'].square().sum()
        grads.append(torch.autograd.grad(loss, [xi] + list(dec.parameters())))
    for a, b in zip(*grads):
        assert b.abs().max() > 1e-3
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


def _gather_points(gen, n, m, dtype):
    pts = (torch.rand(n, m, 3, generator=gen, dtype=torch.float64) * 2 - 1) * 0.75
    # Texel centres and edges of an 8x6 plane at box_warp 1 (coordinate = (k + 0.5) / size - 0.5), the box faces.
    pts[:, :6] = torch.tensor([[0.0, 0.0, 0.0], [0.5, -0.5, 0.5], [-0.49, 0.49, 0.51], [0.0625, 1 / 12, -0.4375],
                               [-0.5, -0.5, -0.5], [0.4375, 5 / 12, 0.25]], dtype=torch.float64)
    return pts.to(dtype)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('convention', ['eg3d', 'orthogonal'])
@pytest.mark.parametrize('layout', ['nchw', 'channels_last'])
def test_fused_gather_matches_grid_sample_mean(render_ops_host, dtype, convention, layout):
    gen = torch.Generator().manual_seed(6)
    axes = generate_planes(convention)
    c = 32 if dtype == torch.float32 else 5                        # 32 channels: the specialised kernel.
    planes = torch.randn(2, 3, c, 6, 8, generator=gen, dtype=dtype)
    if layout == 'channels_last':
        planes = planes.reshape(2, 3 * c, 6, 8).contiguous(memory_format=torch.channels_last).view(2, 3, c, 6, 8)
    points = _gather_points(gen, 2, 400, dtype)
    with torch.no_grad():
        assert plane_gather._host_kernels(plane_gather.feature_table(planes)[0], points, 3) is render_ops_host
        out = plane_gather.sample_plane_mean(axes, planes, points, box_warp=1.0)
    ref = sample_from_planes(axes.double(), planes.double(), points.double(), box_warp=1.0).mean(1)
    assert (ref == 0).all(-1).any() and ref.abs().max() > 0.5        # Points inside and outside the box.
    tol = dict(atol=1e-6, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-13, rtol=1e-13)
    torch.testing.assert_close(out.double(), ref, **tol)


def test_fused_gather_non_finite_points_and_grad_mode(render_ops_host, monkeypatch):
    gen = torch.Generator().manual_seed(7)
    axes = generate_planes()
    planes = torch.randn(1, 3, 4, 5, 5, generator=gen)
    points = _gather_points(gen, 1, 50, torch.float32)
    points[0, :3] = torch.tensor([[float('nan'), 0.1, 0.1], [float('inf'), 0.0, 0.0], [-1e30, 0.2, 0.0]])
    with torch.no_grad():
        out = plane_gather.sample_plane_mean(axes, planes, points, box_warp=1.6)
        assert out.isfinite().all()
        monkeypatch.setenv('EG3D_FUSED_OPS', '0')                    # The embedding_bag path.
        ref = plane_gather.sample_plane_mean(axes, planes, points, box_warp=1.6)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-5)
    monkeypatch.setenv('EG3D_FUSED_OPS', '1')
    # Points that need a gradient keep the differentiable path; a table that needs one does not.
    table = plane_gather.feature_table(planes)[0]
    assert plane_gather._host_kernels(table, points.requires_grad_(True), 3) is None
    with torch.no_grad():
        assert plane_gather._host_kernels(table, points, 3) is render_ops_host
        assert plane_gather._host_kernels(table.double(), points, 3) is None   # Mixed dtypes.
    assert plane_gather._host_kernels(table.requires_grad_(True), points.detach(), 3) is render_ops_host


@pytest.mark.parametrize('layout', ['nchw', 'channels_last'])
def test_fused_gather_backward_into_planes(render_ops_host, monkeypatch, layout):
    # The host gather with a graph: the planes' gradient (through the rows and weights the kernel wrote)
    # against grid_sample's, in float64, and a gradcheck; the forward's bits do not depend on requires_grad.
    gen = torch.Generator().manual_seed(10)
    axes = generate_planes()
    planes0 = torch.randn(2, 3, 4, 6, 8, generator=gen, dtype=torch.float64)
    if layout == 'channels_last':
        planes0 = planes0.reshape(2, 12, 6, 8).contiguous(memory_format=torch.channels_last).view(2, 3, 4, 6, 8)
    points = _gather_points(gen, 2, 300, torch.float64)
    planes = planes0.clone().requires_grad_(True)
    out = plane_gather.sample_plane_mean(axes, planes, points, box_warp=1.0)
    assert out.grad_fn is not None and type(out.grad_fn).__name__.startswith('_HostGather')
    ref_planes = planes0.clone().requires_grad_(True)
    ref = sample_from_planes(axes, ref_planes, points, box_warp=1.0).mean(1)
    torch.testing.assert_close(out, ref, atol=1e-13, rtol=1e-13)
    grad = torch.randn(ref.shape, generator=gen, dtype=torch.float64)
    g, = torch.autograd.grad(out, planes, grad)
    g_ref, = torch.autograd.grad(ref, ref_planes, grad)
    assert g_ref.abs().max() > 0.1
    torch.testing.assert_close(g, g_ref, atol=1e-12, rtol=1e-12)
    with torch.no_grad():
        assert torch.equal(plane_gather.sample_plane_mean(axes, planes0, points, box_warp=1.0), out)
    small = planes0[:1, :, :2, :4, :5].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: plane_gather.sample_plane_mean(axes, p, points[:1, :40], box_warp=1.0),
                                    (small,), eps=1e-6, atol=1e-7)

@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('index_dtype', [torch.int32, torch.int64])
@pytest.mark.parametrize('c', [32, 5])
def test_host_scatter_matches_float64_index_add(render_ops_host, dtype, index_dtype, c):
    # The gather's transpose against index_add_ in float64: rows hit many times, weights of 0 (dropped
    # corners), table rows no entry reaches (exact zeros), 1 to more-than-rows blocks of table rows.
    gen = torch.Generator().manual_seed(11)
    table_rows, points, k = 97, 400, 12
    rows = torch.randint(0, table_rows - 7, (points, k), generator=gen).to(index_dtype)
    weights = torch.rand(points, k, generator=gen, dtype=torch.float64)
    weights[weights < 0.25] = 0
    grad = torch.randn(points, c, generator=gen, dtype=torch.float64)
    ref = torch.zeros(table_rows, c, dtype=torch.float64).index_add_(
        0, rows.reshape(-1).long(), (weights[:, :, None] * grad[:, None, :]).reshape(-1, c))
    assert ref.abs().max() > 1 and rows.reshape(-1).bincount().max() > 40
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-13, rtol=1e-13)
    for blocks in (None, 1, 3, table_rows + 5):
        out = render_ops_host.plane_scatter(rows, weights.to(dtype), grad.to(dtype), table_rows, blocks=blocks)
        assert out.dtype == dtype and out.shape == (table_rows, c) and out.is_contiguous()
        torch.testing.assert_close(out.double(), ref, **tol)
        assert out[-7:].eq(0).all()


def test_scatter_rows_host_and_sparse_agree(render_ops_host, monkeypatch):
    # plane_gather._scatter_rows: the host kernel (auto) against the CSR product (sparse) on the rows and
    # weights of a real gather, and EG3D_FUSED_OPS=0 / EG3D_PLANE_SCATTER=sparse take the CSR product.
    gen = torch.Generator().manual_seed(12)
    axes = generate_planes()
    planes = torch.randn(2, 3, 4, 6, 8, generator=gen, dtype=torch.float64)
    table, strides = plane_gather.feature_table(planes)
    points = _gather_points(gen, 2, 300, torch.float64)
    rows, weights = plane_gather._corners(axes, points, (6, 8), strides, table.shape[0])
    grad = torch.randn(rows.shape[0], 4, generator=gen, dtype=torch.float64)
    host = plane_gather._scatter_rows(rows, weights, grad, table.shape)
    sparse = plane_gather._scatter_rows(rows, weights, grad, table.shape, impl='sparse')
    assert sparse.abs().max() > 0.1
    torch.testing.assert_close(host, sparse, atol=1e-13, rtol=1e-13)
    calls = []
    monkeypatch.setattr(type(render_ops_host), 'plane_scatter', lambda *a, **kw: calls.append(1))
    for env, value in (('EG3D_PLANE_SCATTER', 'sparse'), ('EG3D_FUSED_OPS', '0')):
        with monkeypatch.context() as m:
            m.setenv(env, value)
            torch.testing.assert_close(plane_gather._scatter_rows(rows, weights, grad, table.shape), sparse,
                                       atol=0, rtol=0)
    assert not calls
    with pytest.raises(ValueError, match='EG3D_PLANE_SCATTER'):
        plane_gather._scatter_rows(rows, weights, grad, table.shape, impl='dense')


def test_host_scatter_gradcheck_points_and_planes(render_ops_host):
    # Points and planes both needing a gradient (the embedding_bag forward, the host scatter backward).
    gen = torch.Generator().manual_seed(13)
    axes = generate_planes()
    planes = torch.randn(1, 3, 2, 4, 5, generator=gen, dtype=torch.float64).requires_grad_(True)
    points = ((torch.rand(1, 30, 3, generator=gen, dtype=torch.float64) * 2 - 1) * 0.45).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p, x: plane_gather.sample_plane_mean(axes, p, x, box_warp=1.0),
                                    (planes, points), eps=1e-6, atol=1e-7)


def _sample_sets(gen, dtype, n=2, m=300, s=(10, 7), c=5):
    """Coarse depths sorted (stratified with jitter), fine depths random, both in [2, 3] without ties."""
    delta = 1.0 / s[0]
    coarse = 2 + (torch.arange(s[0], dtype=torch.float64) + 0.9 * torch.rand(n, m, s[0], generator=gen,
                                                                            dtype=torch.float64)) * delta
    sets = [coarse] + [2 + torch.rand(n, m, k, generator=gen, dtype=torch.float64) for k in s[1:]]
    depths = [d.unsqueeze(-1).to(dtype) for d in sets]
    all_depths = torch.cat(depths, dim=2).squeeze(-1)
    assert (all_depths.sort(-1).values.diff(dim=-1) > 0).all()        # No ties: one valid order.
    colors = [torch.rand(n, m, k, c, generator=gen, dtype=torch.float64).to(dtype) for k in s]
    densities = [(torch.randn(n, m, k, 1, generator=gen, dtype=torch.float64) * 4).to(dtype) for k in s]
    for d in densities:
        d[0, :3] = -300                                                # Rays with no weight at all (0 / 0).
    return colors, densities, depths


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('sizes', [(10, 7), (12,), (5, 6, 4)])
@pytest.mark.parametrize('white_back', [False, True])
def test_host_composite_matches_ray_marcher(render_ops_host, dtype, sizes, white_back):
    from training.volumetric_rendering import ray_marcher
    gen = torch.Generator().manual_seed(8)
    colors, densities, depths = _sample_sets(gen, dtype, s=sizes)
    opts = {'white_back': white_back}
    with torch.no_grad():
        rgb, depth, weight = ray_marcher.composite_sample_sets_host(colors, densities, depths, opts)
    # The reference: MipRayMarcher2 on the concatenated, depth-sorted samples, in float64.
    all_depths, order = torch.sort(torch.cat(depths, dim=2).double(), dim=2)
    all_colors = torch.cat(colors, dim=2).double().gather(2, order.expand(-1, -1, -1, colors[0].shape[-1]))
    all_densities = torch.cat(densities, dim=2).double().gather(2, order)
    ref_rgb, ref_depth, ref_weights = ray_marcher.MipRayMarcher2()(all_colors, all_densities, all_depths, opts)
    assert (ref_weights.sum(2)[0, :3] == 0).all() and ref_weights.sum(2).max() > 0.5
    tol = dict(atol=2e-6, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(rgb.double(), ref_rgb, **tol)
    torch.testing.assert_close(depth.double(), ref_depth, **tol)
    torch.testing.assert_close(weight.double(), ref_weights.sum(2), **tol)
    # In grad mode it steps aside (the renderer then takes composite_sample_sets).
    assert ray_marcher.composite_sample_sets_host(colors, densities, depths, opts) is None


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('det', [False, True])
def test_host_importance_sampling_matches_reference(render_ops_host, monkeypatch, dtype, det):
    from training.volumetric_rendering import ray_marcher
    from training.volumetric_rendering.renderer import ImportanceRenderer, renderer_draws
    gen = torch.Generator().manual_seed(9)
    n, m, s, k = 2, 200, 12, 9
    z = (2 + (torch.arange(s) + torch.rand(n, m, s, generator=gen)) / s).to(dtype).unsqueeze(-1)
    w = ray_marcher.interval_weights(torch.randn(n, m, s, 1, generator=gen, dtype=dtype) * 3, z)
    w[0, :5] = 0                                                       # Rays without weight: a uniform pdf.
    u = torch.rand(n * m, k, generator=gen, dtype=dtype)
    out = []
    for enabled in ('1', '0'):                                         # Host kernel, then torch's sample_pdf.
        monkeypatch.setenv('EG3D_FUSED_OPS', enabled)
        with renderer_draws(replay={'render.importance_u': [u]}) as draws:
            out.append(ImportanceRenderer().sample_importance(z, w, k, det=det))
        assert len(draws.recorded['render.importance_u']) == (0 if det else 1)
    assert out[0].shape == (n, m, k, 1) and (out[0] >= z[:, :, :1]).all() and (out[0] <= z[:, :, -1:]).all()
    tol = dict(atol=2e-6, rtol=1e-6) if dtype == torch.float32 else dict(atol=1e-13, rtol=1e-13)
    torch.testing.assert_close(out[0], out[1], **tol)
