"""ImageFolderDataset, camera-label mirroring and InfiniteSampler."""

import itertools
import json
import os
import pickle
import zipfile

import numpy as np
import PIL.Image
import pytest
import torch

from training.dataset import DatasetError, ImageFolderDataset, camera_label_problems, mirror_camera_label
from training.sampler import InfiniteSampler


def random_rotation(rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    return q * np.linalg.det(q)  # det +1.


def random_label(rng, cx=0.5, cy=0.5, skew=0.0) -> list:
    pose = np.eye(4)
    pose[:3, :3] = random_rotation(rng)
    pose[:3, 3] = rng.standard_normal(3) * 2
    focal = rng.uniform(1, 5)
    k = [focal, skew, cx, 0, focal * rng.uniform(0.9, 1.1), cy, 0, 0, 1]
    return pose.ravel().tolist() + k


def write_dataset(root, images: dict, labels=None, as_zip=False):
    """images: {relative name: uint8 HWC/HW array or raw bytes}; labels: {name: label} or None."""
    files = {}
    for name, img in images.items():
        if isinstance(img, bytes):
            files[name] = img
        else:
            path = root / '_tmp.png'
            PIL.Image.fromarray(img).save(path)
            files[name] = path.read_bytes()
            path.unlink()
    if labels is not None:
        files['dataset.json'] = json.dumps({'labels': [[k, v] for k, v in labels.items()]}).encode()
    if as_zip:
        path = root / 'ds.zip'
        with zipfile.ZipFile(path, 'w', compression=zipfile.ZIP_STORED) as z:
            for name, data in files.items():
                z.writestr(name, data)
        return str(path)
    path = root / 'ds'
    for name, data in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(data)
    return str(path)


def good_images(rng, n=5, res=8, channels=3):
    shape = (res, res, channels) if channels > 1 else (res, res)
    return {f'{i // 3:05d}/img{i:08d}.png': rng.integers(0, 256, size=shape, dtype=np.uint8) for i in range(n)}

# ----------------------------------------------------------------------------
# Loading.


@pytest.mark.parametrize('as_zip', [False, True])
def test_loader_reads_back_images_and_labels(tmp_path, as_zip):
    rng = np.random.default_rng(1)
    images = good_images(rng)
    labels = {name: random_label(rng) for name in images}
    ds = ImageFolderDataset(write_dataset(tmp_path, images, labels, as_zip), use_labels=True, xflip=True)
    names = sorted(images)
    assert (len(ds), ds.resolution, ds.num_channels, ds.label_shape, ds.has_labels) == (10, 8, 3, [25], True)
    assert ds.name == 'ds' and ds.image_shape == [3, 8, 8] and not ds.has_onehot_labels
    for i, name in enumerate(names):
        img, c = ds[i]
        assert img.dtype == np.uint8 and c.dtype == np.float32
        np.testing.assert_array_equal(img, images[name].transpose(2, 0, 1))
        np.testing.assert_array_equal(c, np.float32(labels[name]))
        img_f, c_f = ds[i + len(names)]
        np.testing.assert_array_equal(img_f, images[name].transpose(2, 0, 1)[:, :, ::-1])
        np.testing.assert_array_equal(c_f, mirror_camera_label(np.float32(labels[name])))
        assert ds.get_details(i + len(names)).xflip and ds.get_details(i + len(names)).raw_idx == i
    std = np.std(np.array([labels[n] for n in names], dtype=np.float64), axis=0)
    np.testing.assert_allclose(ds.get_label_std(), std, rtol=1e-5, atol=1e-6)

    upstream = ImageFolderDataset(ds._path, use_labels=True, xflip=True, mirror_labels=False)
    np.testing.assert_array_equal(upstream[len(names)][1], np.float32(labels[names[0]]))
    unlabeled = ImageFolderDataset(ds._path)
    assert unlabeled.label_shape == [0] and unlabeled[0][1].shape == (0,)

    # Pickling for DataLoader workers (an open zip handle is not carried over).
    ds[0]
    clone = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(clone[3][0], ds[3][0])


def test_max_size_subset_and_grayscale(tmp_path):
    rng = np.random.default_rng(2)
    images = good_images(rng, n=9, channels=1)
    path = write_dataset(tmp_path, images, {n: i % 3 for i, n in enumerate(images)})
    ds = ImageFolderDataset(path, max_size=4, random_seed=7, use_labels=True)
    again = ImageFolderDataset(path, max_size=4, random_seed=7, use_labels=True)
    assert len(ds) == 4 and ds.num_channels == 1 and ds.has_onehot_labels and ds.label_shape == [3]
    assert ds._raw_idx.tolist() == again._raw_idx.tolist() == sorted(set(ds._raw_idx.tolist()))
    name = sorted(images)[ds._raw_idx[2]]
    np.testing.assert_array_equal(ds[2][0][0], images[name])
    np.testing.assert_array_equal(ds[2][1], np.eye(3, dtype=np.float32)[ds._raw_idx[2] % 3])


def test_dataloader_batches(tmp_path):
    rng = np.random.default_rng(3)
    images = good_images(rng, n=6)
    ds = ImageFolderDataset(write_dataset(tmp_path, images, {n: random_label(rng) for n in images}, True),
                            use_labels=True)
    loader = torch.utils.data.DataLoader(ds, sampler=InfiniteSampler(ds, seed=1), batch_size=4)
    img, c = next(iter(loader))
    assert img.dtype == torch.uint8 and list(img.shape) == [4, 3, 8, 8] and list(c.shape) == [4, 25]

# ----------------------------------------------------------------------------
# Every bad-dataset case raises at construction, naming the file and the problem.


def _png(arr) -> bytes:
    import io
    buf = io.BytesIO()
    PIL.Image.fromarray(arr).save(buf, format='png')
    return buf.getvalue()


def _bad_cases(rng):
    img = lambda *shape: rng.integers(0, 256, size=shape, dtype=np.uint8)  # noqa: E731
    ok = {'a.png': img(8, 8, 3), 'b.png': img(8, 8, 3)}
    good_labels = {n: random_label(rng) for n in ok}
    truncated = _png(img(8, 8, 3))[:60]
    return {
        'no_dataset_json': (ok, None, {'use_labels': True}, r'dataset\.json: missing'),
        'null_labels': (ok, 'null', {'use_labels': True}, r'dataset\.json: "labels" is null'),
        'missing_label': (ok, {'a.png': good_labels['a.png']}, {'use_labels': True}, r'no label .* "b\.png"'),
        'label_length': (ok, {'a.png': good_labels['a.png'], 'b.png': good_labels['b.png'][:24]},
                         {'use_labels': True}, r'dataset\.json: the label of "b\.png" has 24 numbers, expected 25'),
        'label_nan': (ok, {'a.png': good_labels['a.png'], 'b.png': [float('nan')] * 25},
                      {'use_labels': True}, r'"b\.png" holds a NaN'),
        'bad_json': (ok, b'{"labels": [', {'use_labels': True}, r'dataset\.json: not valid JSON'),
        'mixed_resolution': ({'a.png': img(8, 8, 3), 'b.png': img(16, 16, 3)}, None, {},
                             r'b\.png: image is 16x16 but .*a\.png is 8x8'),
        'non_square': ({'a.png': img(8, 16, 3)}, None, {}, r'a\.png: image is 16x8; images must be square'),
        'non_power_of_two': ({'a.png': img(12, 12, 3)}, None, {}, r'a\.png: resolution 12 is not a power of two'),
        'corrupt': ({'a.png': img(8, 8, 3), 'b.png': b'definitely not a png'}, None, {},
                    r'b\.png: not a readable image'),
        'truncated': ({'a.png': img(8, 8, 3), 'b.png': truncated}, None, {'validate': 'full'},
                      r'b\.png: not a readable image'),
        'rgba': ({'a.png': img(8, 8, 4)}, None, {}, r'a\.png: image mode RGBA \(4 channels\)'),
        'mixed_channels': ({'a.png': img(8, 8, 3), 'b.png': img(8, 8)}, None, {},
                           r'b\.png: image has 1 channel\(s\) but'),
        'empty': ({}, {}, {}, r'the dataset is empty'),
        'wrong_resolution': (ok, None, {'resolution': 16}, r'images are 8x8, but resolution=16'),
    }


@pytest.mark.parametrize('case', list(_bad_cases(np.random.default_rng(0))))
@pytest.mark.parametrize('as_zip', [False, True])
def test_bad_dataset_raises_named_error(tmp_path, case, as_zip):
    images, labels, kwargs, pattern = _bad_cases(np.random.default_rng(0))[case]
    path = write_dataset(tmp_path, images, labels if isinstance(labels, dict) else None, as_zip)
    if isinstance(labels, (str, bytes)):  # Raw dataset.json text.
        raw = labels.encode() if isinstance(labels, str) else labels
        raw = b'{"labels": null}' if raw == b'null' else raw
        if as_zip:
            with zipfile.ZipFile(path, 'a') as z:
                z.writestr('dataset.json', raw)
        else:
            (tmp_path / 'ds' / 'dataset.json').write_bytes(raw)
    if case == 'empty' and not as_zip:
        os.makedirs(path, exist_ok=True)
    with pytest.raises(DatasetError, match=pattern) as info:
        ImageFolderDataset(path, **kwargs)
    assert str(info.value).startswith(path)  # Names the dataset file (and the member, for zips).


def test_missing_path(tmp_path):
    with pytest.raises(DatasetError, match='no such folder or zip file'):
        ImageFolderDataset(str(tmp_path / 'nothing.zip'))
    (tmp_path / 'x.txt').write_text('hello')
    with pytest.raises(DatasetError, match='not a folder or a zip file'):
        ImageFolderDataset(str(tmp_path / 'x.txt'))

# ----------------------------------------------------------------------------
# Label mirroring, checked against an independent pinhole projection.


def project(c: np.ndarray, point: np.ndarray) -> np.ndarray:
    """Normalised image coordinates (u, v) of a world point under label c (OpenCV pinhole, float64)."""
    pose, k = np.asarray(c, np.float64)[:16].reshape(4, 4), np.asarray(c, np.float64)[16:].reshape(3, 3)
    x, y, z = (np.linalg.inv(pose) @ np.append(point, 1.0))[:3]
    return np.array([k[0, 0] * x / z + k[0, 1] * y / z + k[0, 2], k[1, 1] * y / z + k[1, 2]])


def test_mirror_label_projects_mirrored_points_to_mirrored_columns():
    rng = np.random.default_rng(4)
    for _ in range(20):
        c = np.array(random_label(rng, cx=rng.uniform(0.3, 0.7), cy=rng.uniform(0.3, 0.7), skew=rng.uniform(-0.1, 0.1)))
        cam = c[[3, 7, 11]]
        point = cam + c[[2, 6, 10]] * rng.uniform(1, 3) + rng.standard_normal(3) * 0.3  # In front of the camera.
        m = mirror_camera_label(c)
        u, v = project(c, point)
        u_m, v_m = project(m, point * [-1, 1, 1])
        np.testing.assert_allclose([u_m, v_m], [1 - u, v], atol=1e-12)
        # Pixel centres (j + 0.5) / R of column j land on column R - 1 - j.
        res = 64
        np.testing.assert_allclose(u_m * res - 0.5, (res - 1) - (u * res - 0.5), atol=1e-9)
        assert camera_label_problems(m, max_center_offset=0.25) == []    # Still a proper rotation.
        np.testing.assert_allclose(mirror_camera_label(m), c, rtol=0, atol=1e-15)  # An involution.


def test_mirror_label_equals_s_p_s_and_batches():
    rng = np.random.default_rng(5)
    c = np.array([random_label(rng) for _ in range(3)])
    s = np.diag([-1.0, 1, 1, 1])
    expect = np.array([(s @ ci[:16].reshape(4, 4) @ s).ravel() for ci in c])
    np.testing.assert_array_equal(mirror_camera_label(c)[:, :16], expect)
    np.testing.assert_array_equal(mirror_camera_label(c)[:, 16:], c[:, 16:])  # cx = 0.5, no skew: unchanged.
    with pytest.raises(ValueError, match='25'):
        mirror_camera_label(np.zeros(24))


def test_camera_label_problems():
    rng = np.random.default_rng(6)
    c = np.array(random_label(rng))
    assert camera_label_problems(c) == []
    bad = c.copy()
    bad[0] *= 1.1
    assert 'not orthonormal' in camera_label_problems(bad)[0]
    bad = c.copy()
    bad[[0, 1, 2]] *= -1
    assert 'reflection' in camera_label_problems(bad)[0]
    bad = c.copy()
    bad[18] = 256.0
    assert 'principal point' in camera_label_problems(bad)[0]
    bad = c.copy()
    bad[16] = -2
    assert 'focal' in camera_label_problems(bad)[0]

# ----------------------------------------------------------------------------
# InfiniteSampler.


def take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


def test_sampler_ranks_are_disjoint_and_cover_a_pass():
    n, replicas = 30, 3
    streams = [take(InfiniteSampler(range(n), rank=r, num_replicas=replicas, seed=3), n // replicas)
               for r in range(replicas)]
    seen = [set(s) for s in streams]
    assert all(len(s) == n // replicas for s in seen)
    assert set.union(*seen) == set(range(n)) and sum(len(s) for s in seen) == n
    # Interleaving the ranks gives back the single-process stream.
    single = take(InfiniteSampler(range(n), seed=3), 4 * n)
    ranks = [take(InfiniteSampler(range(n), rank=r, num_replicas=replicas, seed=3), 4 * n // replicas)
             for r in range(replicas)]
    assert [ranks[p % replicas][p // replicas] for p in range(4 * n)] == single


def test_sampler_is_seeded_mixes_across_passes_and_resumes():
    n = 17
    a, b = take(InfiniteSampler(range(n), seed=5), 6 * n), take(InfiniteSampler(range(n), seed=5), 6 * n)
    assert a == b and a != take(InfiniteSampler(range(n), seed=6), 6 * n)
    for p in range(6):                                      # Every pass is a permutation,
        assert sorted(a[p * n:(p + 1) * n]) == list(range(n))
    assert a[n:2 * n] != a[:n]                              # re-mixed from pass to pass.
    assert take(InfiniteSampler(range(n), shuffle=False), 2 * n) == list(range(n)) * 2
    assert take(InfiniteSampler(range(n), seed=5, window_size=0), 2 * n) == a[:n] * 2
    for start in [1, 9, n, 2 * n + 5, 5 * n - 1]:
        assert take(InfiniteSampler(range(n), seed=5, start_idx=start), 6 * n - start) == a[start:]
    # Resuming a rank at a global position (cur_nimg) continues that rank's sequence.
    r1 = take(InfiniteSampler(range(n), rank=1, num_replicas=2, seed=5), 3 * n)
    assert take(InfiniteSampler(range(n), rank=1, num_replicas=2, seed=5, start_idx=2 * 11), 3 * n - 11) == r1[11:]


def test_sampler_rejects_bad_arguments():
    with pytest.raises(ValueError, match='empty'):
        InfiniteSampler([])
    with pytest.raises(ValueError, match='rank'):
        InfiniteSampler(range(4), rank=2, num_replicas=2)
