"""Metrics: closed forms (FID, KID, precision/recall, IS), SWD behaviour, detector loading, and the whole
pipeline with a stand-in TorchScript detector, a tiny generator and a tiny dataset, 1 vs 2 gloo ranks."""

import io
import json
import os
import pickle
import socket

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

import calc_metrics
import dnnlib
import legacy
from metrics import (detectors, frechet_inception_distance, inception_score, kernel_inception_distance, metric_main,
                     metric_utils, precision_recall, sliced_wasserstein)

# The stand-in detector is TorchScript, which torch 2.13 marks deprecated in favour of torch.export.
pytestmark = pytest.mark.filterwarnings('ignore:.*torch.jit.*deprecated:DeprecationWarning')

# ----------------------------------------------------------------------------
# Stand-ins with the upstream interfaces.


class StandInDetector(torch.nn.Module):
    """Upstream detector interface: uint8 [N, 3, H, W] -> features (return_features) or probabilities."""

    def __init__(self, dim: int = 12, classes: int = 10):
        super().__init__()
        gen = torch.Generator().manual_seed(123)
        self.register_buffer('proj', torch.randn([48, dim], generator=gen))
        self.register_buffer('cls', torch.randn([dim, classes], generator=gen))

    def forward(self, img: torch.Tensor, return_features: bool = False, no_output_bias: bool = False) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(img.float() / 127.5 - 1, 4).flatten(1)
        f = torch.tanh(x @ self.proj * 2)
        if return_features:
            return f
        return torch.softmax(f @ self.cls * 3, dim=1)


class TinyGenerator(torch.nn.Module):
    """G(z, c) -> {'image': [N, 3, R, R] in [-1, 1]} with internal randomness (noise_mode='random')."""

    def __init__(self, z_dim=8, c_dim=25, img_resolution=32):
        super().__init__()
        self.z_dim, self.c_dim, self.img_resolution = z_dim, c_dim, img_resolution
        gen = torch.Generator().manual_seed(7)
        self.weight = torch.nn.Parameter(torch.randn([z_dim + c_dim, 3 * 8 * 8], generator=gen) / 3)

    calls = 0  # Forward calls in this process (shows how work was split over ranks).

    def forward(self, z, c, truncation_psi=1, noise_mode='random'):
        TinyGenerator.calls += 1
        x = (torch.cat([z, c], dim=1) @ self.weight).reshape(-1, 3, 8, 8)
        x = F.interpolate(x, size=self.img_resolution, mode='bilinear', align_corners=False)
        if noise_mode == 'random':
            x = x + 0.3 * torch.randn_like(x)
        return dict(image=torch.tanh(x))


class TinyDataset:
    """ImageFolderDataset's interface over an .npz of uint8 images [N, C, R, R] and float32 labels [N, D]."""

    def __init__(self, path, resolution=None, use_labels=False, max_size=None, xflip=False, random_seed=0):
        with np.load(path) as data:
            self.images, self.labels = data['images'], data['labels']
        if resolution is not None and resolution != self.images.shape[-1]:
            raise ValueError(f'{path}: resolution {self.images.shape[-1]}, asked for {resolution}')
        self.idx = np.arange(len(self.images))
        if max_size is not None and max_size < len(self.idx):
            self.idx = np.sort(np.random.RandomState(random_seed).permutation(len(self.idx))[:max_size])
        self.flip = np.zeros(len(self.idx), bool)
        if xflip:
            self.idx, self.flip = np.tile(self.idx, 2), np.repeat([False, True], len(self.idx))
        self.use_labels = use_labels
        self.name = os.path.splitext(os.path.basename(path))[0]

    def __len__(self):
        return len(self.idx)

    def __getitem__(self, i):
        img = self.images[self.idx[i]]
        return (img[:, :, ::-1] if self.flip[i] else img).copy(), self.get_label(i)

    def get_label(self, i):
        return self.labels[self.idx[i]].copy() if self.use_labels else np.zeros([0], np.float32)

    @property
    def resolution(self):
        return self.images.shape[-1]

    @property
    def image_shape(self):
        return list(self.images.shape[1:])


def _smooth_images(rng, n, res=32, channels=3):
    """Random smooth colour images with edges, uint8 [n, C, res, res]."""
    base = rng.standard_normal([n, channels, res // 4, res // 4])
    up = F.interpolate(torch.from_numpy(base), size=res, mode='bicubic', align_corners=False).numpy()
    yy, xx = np.mgrid[:res, :res]
    edges = (np.sin(xx[None] * rng.uniform(0.2, 0.8, [n, 1, 1]) + yy[None] * rng.uniform(0.2, 0.8, [n, 1, 1])) > 0)
    img = 128 + 40 * up + 50 * edges[:, None]
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture
def setup(tmp_path):
    """A detector directory with the stand-in (TorchScript archive named as upstream's) and a tiny dataset."""
    rng = np.random.default_rng()
    det_dir = tmp_path / 'detectors'
    det_dir.mkdir()
    scripted = torch.jit.script(StandInDetector())
    for fname in ['inception-2015-12-05.pt', 'vgg16.pt']:
        torch.jit.save(scripted, str(det_dir / fname))
    data = tmp_path / 'tiny.npz'
    np.savez(data, images=_smooth_images(rng, 30), labels=rng.standard_normal([30, 25]).astype(np.float32))
    dataset_kwargs = dict(class_name='test_metrics.TinyDataset', path=str(data), use_labels=True, xflip=True)
    return dnnlib.EasyDict(det_dir=str(det_dir), dataset_kwargs=dataset_kwargs, tmp=tmp_path)

# ----------------------------------------------------------------------------
# Closed forms.


def test_fid_diagonal_closed_form():
    rng = np.random.default_rng()
    d = 40
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    s1, s2 = rng.uniform(0.1, 2, d), rng.uniform(0.1, 2, d)
    expected = np.square(mu1 - mu2).sum() + np.square(s1 - s2).sum()
    got = frechet_inception_distance.fid_from_stats(mu1, np.diag(s1 ** 2), mu2, np.diag(s2 ** 2))
    np.testing.assert_allclose(got, expected, rtol=1e-10)


def test_fid_full_covariances_match_scipy_sqrtm():
    rng = np.random.default_rng()
    d = 30
    a, b = rng.standard_normal([d, 2 * d]), rng.standard_normal([d, 2 * d])
    s1, s2 = a @ a.T / d, b @ b.T / d
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    ref = (np.square(mu1 - mu2).sum() + np.trace(s1) + np.trace(s2)
           - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2).real))
    np.testing.assert_allclose(frechet_inception_distance.fid_from_stats(mu1, s1, mu2, s2), ref, rtol=1e-8)
    assert abs(frechet_inception_distance.fid_from_stats(mu1, s1, mu1, s1)) < 1e-8


def test_feature_stats_mean_cov_matches_numpy():
    rng = np.random.default_rng()
    x = rng.standard_normal([50, 6]) * 3 + 1
    stats = metric_utils.FeatureStats(capture_mean_cov=True, capture_all=True, max_items=45)
    for chunk in np.array_split(x, 4):
        stats.append(chunk)
    mean, cov = stats.get_mean_cov()
    np.testing.assert_allclose(mean, x[:45].mean(0), rtol=1e-12)
    np.testing.assert_allclose(cov, np.cov(x[:45].T, bias=True), rtol=1e-9, atol=1e-12)
    assert stats.get_all().shape == (45, 6) and stats.is_full()


def _direct_unbiased_mmd2(x, y):
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3 by explicit double loops, float64."""
    m, d = x.shape
    k = lambda a, b: (float(a @ b) / d + 1) ** 3
    kxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kyy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kxy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return kxx + kyy - 2 * kxy


def test_kid_matches_direct_unbiased_mmd():
    rng = np.random.default_rng()
    real = rng.standard_normal([25, 5])
    gen = rng.standard_normal([25, 5]) * 1.3 + 0.4
    got = kernel_inception_distance.kid_from_features(real, gen, num_subsets=1, max_subset_size=1000)
    np.testing.assert_allclose(got, _direct_unbiased_mmd2(gen, real), rtol=1e-10)
    # Many subsets of a subset size below n: still an average of unbiased estimates around the full value.
    avg = kernel_inception_distance.kid_from_features(real, gen, num_subsets=200, max_subset_size=20)
    assert abs(avg - got) < 0.25 * abs(got)


def _line(points, d=4):
    """Points on a line embedded in d dimensions (x, 0, ..., 0)."""
    out = np.zeros([len(points), d], np.float32)
    out[:, 0] = points
    return out


def test_precision_recall_constructed_sets():
    # Reals at 0..9 on a line. k = 3 neighbours (self excluded): interior radii 2, end points 3,
    # points 1 and 8 have radius 2 (neighbours at 1, 1, 2). Real manifold: [-3, 12].
    real = _line(np.arange(10))
    # Generated: 6 points inside [-3, 12], 4 far away at 100, 102, 104, 106 (their own cluster).
    inside = [0.5, 3.5, 11.5, -2.5, 5.2, 7.7]
    gen = _line(inside + [100, 102, 104, 106])
    precision, recall = precision_recall.precision_recall_from_features(real, gen, nhood_size=3,
                                                                        row_batch_size=3, col_batch_size=4)
    assert precision == pytest.approx(0.6)
    # Generated radii: 0.5 -> 4.7 (neighbours at 3, 3, 4.7) covers [-4.2, 5.2]; 7.7 -> 4.2 (2.5, 3.8, 4.2)
    # covers [3.5, 11.9]; the far cluster's balls (radius <= 6) stay far. Every real is covered.
    assert recall == pytest.approx(1.0)
    # A generated cluster at 0, 0.4, 0.8, 1.2 (radii 1.2, 0.8, 0.8, 1.2: covers [-1.2, 2.4]) and another
    # far away: precision 4/8, recall 3/10 (reals 0, 1, 2).
    gen2 = _line([0.0, 0.4, 0.8, 1.2, 100, 100.4, 100.8, 101.2])
    precision2, recall2 = precision_recall.precision_recall_from_features(real, gen2, nhood_size=3)
    assert (precision2, recall2) == (pytest.approx(0.5), pytest.approx(0.3))


def test_inception_score_closed_forms():
    rng = np.random.default_rng()
    classes = 7
    onehot = np.eye(classes)[np.tile(np.arange(classes), 10)]  # Each split of 7 holds every class once.
    mean, std = inception_score.inception_score_from_probs(onehot, num_splits=10)
    assert mean == pytest.approx(classes, rel=1e-12) and std == pytest.approx(0, abs=1e-12)
    same = np.tile(rng.dirichlet(np.ones(classes)), [40, 1])  # p(y|x) = p(y): KL 0, IS 1.
    assert inception_score.inception_score_from_probs(same, num_splits=4)[0] == pytest.approx(1, abs=1e-12)

# ----------------------------------------------------------------------------
# SWD.


def test_laplacian_pyramid_matches_scipy_and_descriptors_are_patches():
    import scipy.ndimage
    rng = np.random.default_rng()
    x = rng.standard_normal([2, 3, 32, 32])
    k1 = np.array([1., 4., 6., 4., 1.]) / 16
    k2 = np.outer(k1, k1)[None, None]
    # Reference: 2-D correlation with mirrored borders (x[-1] = x[1]) in float64.
    down_ref = scipy.ndimage.correlate(x, k2, mode='mirror')[:, :, ::2, ::2]
    up_ref = scipy.ndimage.correlate(_zero_insert(x), 4 * k2, mode='mirror')
    xt = torch.from_numpy(x)
    np.testing.assert_allclose(sliced_wasserstein.pyramid_down(xt).numpy(), down_ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(sliced_wasserstein.pyramid_up(xt).numpy(), up_ref, rtol=0, atol=1e-12)
    levels = sliced_wasserstein.laplacian_pyramid(xt, 2)
    np.testing.assert_allclose(levels[1].numpy(), down_ref, rtol=0, atol=1e-12)
    up_down = scipy.ndimage.correlate(_zero_insert(down_ref), 4 * k2, mode='mirror')
    np.testing.assert_allclose(levels[0].numpy(), x - up_down, rtol=0, atol=1e-12)
    # A constant image has zero band-pass levels and a constant low-pass.
    const = sliced_wasserstein.laplacian_pyramid(torch.full([1, 3, 32, 32], 7.0, dtype=torch.float64), 2)
    assert const[0].abs().max() < 1e-12 and (const[1] - 7).abs().max() < 1e-12
    # Descriptors are the 7x7 neighbourhoods at the recorded positions.
    ext = sliced_wasserstein.LaplacianDescriptors(resolution=32, seed=3, descriptors_per_level=5)
    imgs = torch.from_numpy(_smooth_images(rng, 2))
    feats = ext(imgs, np.array([10, 11]))
    pos = ext.positions(np.array([10, 11]))
    lv = sliced_wasserstein.laplacian_pyramid(imgs.float(), 2)
    per_level = ext.split_levels(feats.numpy())
    for level in range(2):
        for img in range(2):
            for d in range(5):
                y, x0 = pos[img, level, d]
                np.testing.assert_array_equal(per_level[level].reshape(2, 5, 3, 7, 7)[img, d],
                                              lv[level][img, :, y:y + 7, x0:x0 + 7].numpy())


def _zero_insert(x):
    out = np.zeros(list(x.shape[:2]) + [2 * x.shape[2], 2 * x.shape[3]])
    out[:, :, ::2, ::2] = x
    return out


def _swd(real, gen, gen_seed=2):
    """Average SWD x1e3 between two image sets; descriptor positions seeded with 1 (real) and gen_seed."""
    ext_r = sliced_wasserstein.LaplacianDescriptors(resolution=real.shape[-1], seed=1)
    ext_g = sliced_wasserstein.LaplacianDescriptors(resolution=real.shape[-1], seed=gen_seed)
    fr = ext_r(torch.from_numpy(real), np.arange(len(real))).numpy()
    fg = ext_g(torch.from_numpy(gen), np.arange(len(gen))).numpy()
    levels = sliced_wasserstein.swd_from_features(ext_r, fr, fg, seed=0, num_repeats=2)  # 256 directions.
    return np.mean(list(levels.values()))


def _blur(images, sigma):
    r = int(np.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k = torch.from_numpy(k / k.sum()).float()
    x = torch.from_numpy(images).float()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, [r, r, 0, 0], mode='reflect'), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    x = F.conv2d(F.pad(x, [0, 0, r, r], mode='reflect'), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return x.round().clamp(0, 255).to(torch.uint8).numpy()


def _shuffle_patches(images, fraction, rng, p=8):
    """Swap a `fraction` of the p x p tiles of each image with random other tiles."""
    out = images.copy()
    n, _, r, _ = images.shape
    tiles = [(i, j) for i in range(0, r, p) for j in range(0, r, p)]
    for k in range(n):
        chosen = rng.choice(len(tiles), int(round(fraction * len(tiles))), replace=False)
        perm = rng.permutation(chosen)
        for a, b in zip(chosen, perm):
            (ia, ja), (ib, jb) = tiles[a], tiles[b]
            out[k, :, ia:ia + p, ja:ja + p] = images[k, :, ib:ib + p, jb:jb + p]
    return out


def test_swd_zero_for_identical_sets_and_growing_with_corruption():
    rng = np.random.default_rng()
    real = _smooth_images(rng, 64)
    assert _swd(real, real, gen_seed=1) == 0  # Same images, same descriptor positions.
    same = _swd(real, real)  # Same images, other positions: the sampling floor (8192 descriptors per level).
    blur = [same] + [_swd(real, _blur(real, s)) for s in [1.5, 4]]
    noise = [same] + [_swd(real, np.clip(real + rng.normal(0, s, real.shape), 0, 255).astype(np.uint8))
                      for s in [25, 90]]
    shuffle = [same] + [_swd(real, _shuffle_patches(real, f, rng)) for f in [0.3, 1.0]]
    for series in [blur, noise, shuffle]:
        assert series[1] > 1.3 * series[0] and series[2] > 1.2 * series[1], (blur, noise, shuffle)


# ----------------------------------------------------------------------------
# Detectors.


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path, monkeypatch):
    """Downloads and statistics caches in the test's directory; no detector variables from the caller."""
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'dnnlib-cache'))
    for name in [detectors.DIR_ENV] + [detectors.env_var(n) for n in detectors.DETECTORS]:
        monkeypatch.delenv(name, raising=False)


class _EmbeddedArchive:
    """Pickles as torch.jit.load(io.BytesIO(archive)): a pickle of a TorchScript module built that way."""

    def __init__(self, archive: bytes):
        self.archive = archive

    def __reduce__(self):
        return (torch.jit.load, (io.BytesIO(self.archive),))


class _Evil:
    def __reduce__(self):
        return (os.system, ('echo should-not-run',))


def test_detector_locations_and_safe_pickles(setup, monkeypatch):
    images = torch.from_numpy(_smooth_images(np.random.default_rng(), 5))
    archive = os.path.join(setup.det_dir, 'inception-2015-12-05.pt')
    ref = torch.jit.load(archive)(images, return_features=True)

    # A pickle embedding the archive (protocols 2 and 4) loads to the same TorchScript module.
    with open(archive, 'rb') as f:
        data = f.read()
    for protocol in [2, 4]:
        pkl = setup.tmp / f'inception-p{protocol}.pkl'
        pkl.write_bytes(pickle.dumps(_EmbeddedArchive(data), protocol=protocol))
        det = detectors.load_detector_file(str(pkl))
        torch.testing.assert_close(det(images, return_features=True), ref, rtol=0, atol=0)

    # Anything else is refused, naming the global, and nothing runs.
    evil = setup.tmp / 'evil.pkl'
    evil.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(detectors.DetectorError, match=r'evil\.pkl.*refused global "(posix|nt)\.system"'):
        detectors.load_detector_file(str(evil))

    # Locations: NAME=PATH beats directories; then $EG3D_DETECTOR_DIR; then the URL.
    assert detectors.find_detector('vgg16', [f'vgg16={pkl}', setup.det_dir]) == str(pkl)
    assert detectors.find_detector('inception', [setup.det_dir]) == archive
    monkeypatch.setenv(detectors.DIR_ENV, setup.det_dir)
    assert detectors.find_detector('vgg16') == os.path.join(setup.det_dir, 'vgg16.pt')
    with pytest.raises(detectors.DetectorError, match='a file must be named'):
        detectors.find_detector('vgg16', [archive])


def test_offline_without_detector_names_option_and_url(setup, monkeypatch):
    url = 'http://127.0.0.1:9/metrics/inception-2015-12-05.pkl'  # Refused locally: nothing leaves the machine.
    monkeypatch.setitem(detectors.DETECTORS, 'inception', detectors.DetectorSpec('inception', url, ('inception.pt',)))
    with pytest.raises(detectors.DetectorError) as err:
        detectors.find_detector('inception', [str(setup.tmp)])
    for part in ['--detector', url, detectors.DIR_ENV, str(setup.tmp)]:
        assert part in str(err.value)

# ----------------------------------------------------------------------------
# The whole pipeline: stand-in detector, tiny generator, tiny dataset; 1 process vs 2 gloo ranks.

TINY_METRICS = ['fid40_full', 'kid40', 'pr40_3_full', 'is40', 'swd30']


def _register_tiny_metrics():
    metric_main.register_metric('fid40_full', metric_main.fid_results, full=True, num_gen=40, max_real=None)
    metric_main.register_metric('kid40', metric_main.kid_results, num_gen=40, max_real=None, num_subsets=10,
                                max_subset_size=20)
    metric_main.register_metric('pr40_3_full', metric_main.pr_results, full=True, num_gen=40, max_real=None,
                                nhood_size=3, row_batch_size=16, col_batch_size=16)
    metric_main.register_metric('is40', metric_main.is_results, num_gen=40, num_splits=4)
    metric_main.register_metric('swd30', metric_main.swd_results, full=True, num_images=30)


def _run_tiny_metrics(rank, world, setup, cache_dir):
    _register_tiny_metrics()
    TinyGenerator.calls = 0
    results = {}
    for metric in TINY_METRICS:
        res = metric_main.calc_metric(metric=metric, G=TinyGenerator(), dataset_kwargs=setup.dataset_kwargs,
                                      num_gpus=world, rank=rank, device='cpu', detectors=[setup.det_dir],
                                      cache_dir=cache_dir, batch_size=8, batch_gen=4, num_workers=0)
        results.update(res.results)
    return results, TinyGenerator.calls


def _pipeline_worker(rank, world, port, setup, out_dir):
    torch.distributed.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank, world_size=world)
    torch.set_num_threads(1)
    results, calls = _run_tiny_metrics(rank, world, setup, os.path.join(out_dir, 'cache2'))
    with open(os.path.join(out_dir, f'rank{rank}.json'), 'w') as f:
        json.dump(dict(results=results, calls=calls), f)
    torch.distributed.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_pipeline_one_process_equals_two_gloo_ranks(setup):
    single, single_calls = _run_tiny_metrics(0, 1, setup, str(setup.tmp / 'cache1'))
    assert set(single) == {'fid40_full', 'kid40', 'pr40_3_full_precision', 'pr40_3_full_recall', 'is40_mean',
                           'is40_std', 'swd30', 'swd30_32', 'swd30_16'}
    assert all(np.isfinite(v) for v in single.values()), single
    assert single['fid40_full'] > 0 and 0 <= single['pr40_3_full_precision'] <= 1 and single['is40_mean'] >= 1
    assert single['swd30'] == pytest.approx((single['swd30_32'] + single['swd30_16']) / 2)

    mp.start_processes(_pipeline_worker, args=(2, _free_port(), setup, str(setup.tmp)), nprocs=2, join=True,
                       start_method='spawn')
    calls = []
    for rank in range(2):
        with open(setup.tmp / f'rank{rank}.json') as f:
            multi = json.load(f)
        multi, _ = multi['results'], calls.append(multi['calls'])
        assert set(multi) == set(single)
        for name, value in single.items():
            assert multi[name] == pytest.approx(value, rel=1e-6, abs=1e-9), (rank, name, multi[name], value)
    # The generator work was split (batches of 8 dealt round-robin), not repeated on each rank.
    assert sum(calls) == single_calls and 0 < calls[1] < calls[0]


def test_real_statistics_order_cache_and_generator_labels(setup):
    opts = metric_utils.MetricOptions(dataset_kwargs=setup.dataset_kwargs, detectors=[setup.det_dir],
                                      cache_dir=str(setup.tmp / 'cache'), batch_size=8, num_workers=0)
    extractor = metric_utils.DetectorFeatures(opts, 'inception', return_features=True)
    stats = metric_utils.compute_feature_stats_for_dataset(opts, extractor, max_items=50, capture_all=True,
                                                           capture_mean_cov=True)
    # Reference: the detector on the dataset's first 50 items (30 images, then 20 x-flipped ones).
    with np.load(setup.dataset_kwargs['path']) as data:
        images = data['images']
    items = np.concatenate([images, images[:20, :, :, ::-1]])
    ref = torch.jit.load(os.path.join(setup.det_dir, 'inception-2015-12-05.pt'))(
        torch.from_numpy(items.copy()), return_features=True).double().numpy()
    np.testing.assert_allclose(stats.get_all(), ref, rtol=1e-5, atol=1e-6)
    mean, cov = stats.get_mean_cov()
    np.testing.assert_allclose(mean, ref.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cov, np.cov(ref.T, bias=True), rtol=1e-4, atol=1e-6)

    # The cache: named after dataset and detector; a second pass reads it even if the images change.
    cached = list((setup.tmp / 'cache' / 'gan-metrics').glob('tiny-inception-*.npz'))
    assert len(cached) == 1
    np.savez(setup.dataset_kwargs['path'], images=255 - images, labels=np.zeros([30, 25], np.float32))
    again = metric_utils.compute_feature_stats_for_dataset(opts, extractor, max_items=50, capture_all=True,
                                                           capture_mean_cov=True)
    np.testing.assert_array_equal(again.get_all(), stats.get_all())
    opts.cache = False
    fresh = metric_utils.compute_feature_stats_for_dataset(opts, extractor, max_items=50, capture_all=True)
    assert np.abs(fresh.get_all() - stats.get_all()).max() > 1e-3

    # Generator inputs: per item, independent of the batch the item falls in; labels from the dataset.
    labels = np.random.default_rng().standard_normal([6, 25]).astype(np.float32)
    z1, c1 = metric_utils.generator_inputs(opts, range(0, 10), labels, 8)
    z2, c2 = metric_utils.generator_inputs(opts, range(4, 7), labels, 8)
    np.testing.assert_array_equal(z1[4:7], z2)
    np.testing.assert_array_equal(c1[4:7], c2)
    assert all(any(np.array_equal(c, l) for l in labels) for c in c1)
    assert len({tuple(c) for c in c1}) > 1

# ----------------------------------------------------------------------------
# calc_metrics.py: the same code path as the training loop's calc_metric.


def test_calc_metrics_cli_matches_calc_metric_and_writes_jsonl(setup, monkeypatch):
    from click.testing import CliRunner
    run_dir = setup.tmp / 'run'
    run_dir.mkdir()
    (run_dir / 'training_options.json').write_text('{}')
    snapshot = run_dir / 'network-snapshot-000000.pkl'
    snapshot.write_bytes(b'stand-in')
    training_set_kwargs = dict(setup.dataset_kwargs, use_labels=False)  # calc_metrics sets them from G.
    monkeypatch.setattr(legacy, 'load_network_pkl',
                        lambda f: dict(G_ema=TinyGenerator(), training_set_kwargs=training_set_kwargs))

    _register_tiny_metrics()  # In this process, where calc_metrics runs with --gpus=1.
    args = ['--network', str(snapshot), '--metrics', 'swd2k,fid40_full', '--detector', setup.det_dir,
            '--verbose', 'false']
    out = CliRunner().invoke(calc_metrics.main, args, catch_exceptions=False)
    assert out.exit_code == 0, out.output
    lines = [json.loads(line) for line in out.output.splitlines() if line.startswith('{')]
    assert [line['metric'] for line in lines] == ['swd2k', 'fid40_full']
    for line in lines:
        assert set(line) == {'results', 'metric', 'total_time', 'total_time_str', 'num_gpus', 'snapshot_pkl',
                             'timestamp'}
        assert line['snapshot_pkl'] == snapshot.name and line['num_gpus'] == 1
        with open(run_dir / f'metric-{line["metric"]}.jsonl') as f:
            assert json.loads(f.read().splitlines()[-1])['results'] == line['results']

    # What the training loop computes for the same snapshot (its training_set_kwargs, labels on).
    expected_kwargs = dict(setup.dataset_kwargs, resolution=32, use_labels=True)
    for line in lines:
        direct = metric_main.calc_metric(metric=line['metric'], G=TinyGenerator(), dataset_kwargs=expected_kwargs,
                                         detectors=[setup.det_dir], num_workers=0)
        assert line['results'] == pytest.approx(dict(direct.results), rel=1e-9)


def test_calc_metrics_cli_errors(setup, monkeypatch):
    from click.testing import CliRunner
    snapshot = setup.tmp / 'net.pkl'
    snapshot.write_bytes(b'stand-in')
    monkeypatch.setattr(legacy, 'load_network_pkl', lambda f: dict(G_ema=TinyGenerator(), training_set_kwargs=None))
    runner = CliRunner()
    out = runner.invoke(calc_metrics.main, ['--network', str(snapshot), '--metrics', 'fid2k_full,nope'])
    assert out.exit_code != 0 and 'unknown metric(s) nope' in out.output
    out = runner.invoke(calc_metrics.main, ['--network', str(snapshot), '--metrics', 'swd2k'])
    assert out.exit_code != 0 and 'give --data' in out.output
    url = 'http://127.0.0.1:9/metrics/inception-2015-12-05.pkl'  # Refused locally.
    monkeypatch.setitem(detectors.DETECTORS, 'inception', detectors.DetectorSpec('inception', url, ('x.pt',)))
    monkeypatch.setattr(legacy, 'load_network_pkl',
                        lambda f: dict(G_ema=TinyGenerator(), training_set_kwargs=setup.dataset_kwargs))
    out = runner.invoke(calc_metrics.main, ['--network', str(snapshot), '--metrics', 'fid2k_full',
                                            '--verbose', 'false'])
    assert out.exit_code == 1 and '--detector' in out.output and url in out.output, out.output
