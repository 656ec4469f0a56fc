"""dataset_tool.py: folders plus poses, crops (intrinsics follow the pixels), mirroring, validation, synthetic."""

import json
import os

import numpy as np
import PIL.Image
import pytest
from click.testing import CliRunner

import dataset_tool
from training.dataset import ImageFolderDataset, mirror_camera_label


def run(*args):
    return CliRunner().invoke(dataset_tool.main, [str(a) for a in args], catch_exceptions=False)


def aimed_label(rng, focal=2.0, cx=0.5, cy=0.5) -> list:
    """A camera 3 units from the origin looking at it (so random points near the origin are in view)."""
    centre = rng.standard_normal(3)
    centre *= 3 / np.linalg.norm(centre)
    forward = -centre / 3
    right = np.cross(forward, [0, 1, 0])
    right /= np.linalg.norm(right)
    pose = np.eye(4)
    pose[:3, :3] = np.stack([right, np.cross(forward, right), forward], axis=1)
    pose[:3, 3] = centre
    return pose.ravel().tolist() + [focal, 0, cx, 0, focal * 1.1, cy, 0, 0, 1]


def to_pixels(c, point, width, height):
    """Continuous pixel coordinates (x, y) of a world point: normalised pinhole (u, v) times (W, H)."""
    pose, k = np.asarray(c, np.float64)[:16].reshape(4, 4), np.asarray(c, np.float64)[16:].reshape(3, 3)
    x, y, z = (np.linalg.inv(pose) @ np.append(point, 1.0))[:3]
    return np.array([(k[0, 0] * x / z + k[0, 1] * y / z + k[0, 2]) * width, (k[1, 1] * y / z + k[1, 2]) * height])


def make_folder(tmp_path, rng, n=4, w=20, h=12, poses_format='labels'):
    """Images whose centre square is one colour per image and whose sides are red / blue."""
    src = tmp_path / 'src'
    (src / 'sub').mkdir(parents=True)
    names, labels = [], {}
    for i in range(n):
        arr = np.zeros((h, w, 3), np.uint8)
        x0 = (w - min(w, h)) // 2
        arr[:, :x0] = [255, 0, 0]
        arr[:, x0 + min(w, h):] = [0, 0, 255]
        arr[:, x0:x0 + min(w, h)] = [10 * i, 200 - 10 * i, 7 * i]
        name = f'sub/p{i}.png' if i % 2 else f'p{i}.png'
        PIL.Image.fromarray(arr).save(src / name)
        names.append(name)
        labels[name] = aimed_label(rng, cx=rng.uniform(0.45, 0.55))
    table = {'labels': [[k, v] for k, v in labels.items()]} if poses_format == 'labels' else labels
    (tmp_path / 'poses.json').write_text(json.dumps(table))
    return src, tmp_path / 'poses.json', sorted(names), labels


@pytest.mark.parametrize('dest_name', ['out.zip', 'outdir'])
def test_folder_with_poses_becomes_a_dataset(tmp_path, dest_name):
    rng = np.random.default_rng(0)
    src, poses, names, labels = make_folder(tmp_path, rng, poses_format='labels' if dest_name == 'out.zip' else 'dict')
    dest = tmp_path / dest_name
    result = run('--source', src, '--dest', dest, '--poses', poses, '--transform', 'center-crop', '--resolution', '8x8')
    assert result.exit_code == 0, result.output
    assert 'labels: 4 cameras' in result.output and os.path.isfile(tmp_path / f'{dest_name.split(".")[0]}_cameras.png')
    plot = f'{dest_name.split(".")[0]}_cameras.png'
    assert sorted(os.listdir(tmp_path)) == sorted(['src', 'poses.json', dest_name, plot])

    ds = ImageFolderDataset(str(dest), use_labels=True, validate='full')
    assert (len(ds), ds.resolution, ds.num_channels, ds.label_dim) == (4, 8, 3, 25)
    for i, name in enumerate(names):   # Names sorted by path -> img00000000, img00000001, ...
        img, c = ds[i]
        k = int(name[-5])
        np.testing.assert_allclose(img.reshape(3, -1).T, np.broadcast_to([10 * k, 200 - 10 * k, 7 * k], (64, 3)),
                                   atol=1)   # Only the centre square survives the crop.
        # Geometry: a point's source pixel, moved by the crop (x - 4) and the resize (8/12), is where
        # the output label projects it.
        for point in rng.uniform(-0.3, 0.3, size=(3, 3)):
            expect = (to_pixels(labels[name], point, 20, 12) - [4, 0]) * 8 / 12
            np.testing.assert_allclose(to_pixels(c, point, 8, 8), expect, atol=2e-4)


def test_center_crop_wide_places_the_crop_on_a_square_canvas(tmp_path):
    rng = np.random.default_rng(1)
    src, poses, names, labels = make_folder(tmp_path, rng, n=2, w=40, h=16)   # Crop 32x16 -> 16x8 -> canvas 16x16.
    result = run('--source', src, '--dest', tmp_path / 'wide.zip', '--poses', poses,
                 '--transform', 'center-crop-wide', '--resolution', '16x8')
    assert result.exit_code == 0, result.output
    ds = ImageFolderDataset(str(tmp_path / 'wide.zip'), use_labels=True)
    img, c = ds[0]
    assert ds.resolution == 16 and img[:, :4].max() == 0 and img[:, 12:].max() == 0 and img[:, 4:12].max() > 0
    for point in rng.uniform(-0.3, 0.3, size=(3, 3)):
        expect = (to_pixels(labels[names[0]], point, 40, 16) - [4, 0]) * 0.5 + [0, 4]
        np.testing.assert_allclose(to_pixels(c, point, 16, 16), expect, atol=2e-4)


def test_mirror_writes_flipped_copies_with_mirrored_labels(tmp_path):
    rng = np.random.default_rng(2)
    src, poses, names, labels = make_folder(tmp_path, rng, n=3, w=8, h=8)
    # Give the images some left-right structure.
    for name in names:
        PIL.Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(src / name)
    assert run('--source', src, '--dest', tmp_path / 'm.zip', '--poses', poses, '--mirror').exit_code == 0
    ds = ImageFolderDataset(str(tmp_path / 'm.zip'), use_labels=True)
    assert len(ds) == 6
    for i, name in enumerate(names):
        np.testing.assert_array_equal(ds[i][0], np.asarray(PIL.Image.open(src / name)).transpose(2, 0, 1))
        np.testing.assert_array_equal(ds[3 + i][0], ds[i][0][:, :, ::-1])
        np.testing.assert_allclose(ds[3 + i][1], mirror_camera_label(np.array(labels[name])), atol=1e-6)
    # Re-converting the zip keeps its labels (read from its dataset.json).
    assert run('--source', tmp_path / 'm.zip', '--dest', tmp_path / 'again.zip').exit_code == 0
    np.testing.assert_array_equal(ImageFolderDataset(str(tmp_path / 'again.zip'), use_labels=True)[4][1], ds[4][1])


def _bad(label, kind):
    c = list(label)
    if kind == 'not_orthonormal':
        c[0] *= 1.2
    elif kind == 'pixel_intrinsics':
        c[18], c[21] = 256.0, 256.0
    elif kind == 'negative_focal':
        c[16] = -c[16]
    elif kind == 'wrong_length':
        c = c[:24]
    return c


@pytest.mark.parametrize('kind, message', [
    ('not_orthonormal', 'rotation is not orthonormal'),
    ('pixel_intrinsics', 'principal point (256, 256) is not near the image centre'),
    ('negative_focal', 'focal lengths must be positive'),
    ('wrong_length', '25 numbers'),
    ('missing', 'no pose for 1 of 3 images, e.g. "sub/p1.png"'),
])
def test_bad_poses_are_rejected_naming_the_file(tmp_path, kind, message):
    rng = np.random.default_rng(3)
    src, poses, names, labels = make_folder(tmp_path, rng, n=3, w=8, h=8)
    if kind == 'missing':
        del labels['sub/p1.png']
    else:
        labels['sub/p1.png'] = _bad(labels['sub/p1.png'], kind)
    poses.write_text(json.dumps(labels))
    result = CliRunner().invoke(dataset_tool.main, ['--source', str(src), '--dest', str(tmp_path / 'x.zip'),
                                                    '--poses', str(poses)])
    assert result.exit_code != 0
    assert str(poses) in result.output and message in result.output, result.output
    if kind != 'missing':
        assert '"sub/p1.png"' in result.output
    assert sorted(os.listdir(tmp_path)) == ['poses.json', 'src']   # Nothing written, no temporary left.


def test_images_are_converted_and_checked(tmp_path):
    src = tmp_path / 'src'
    src.mkdir()
    PIL.Image.fromarray(np.full((8, 8, 4), 90, np.uint8)).save(src / 'a.png')            # RGBA -> RGB.
    PIL.Image.fromarray(np.full((8, 8, 3), 50, np.uint8)).convert('P').save(src / 'b.png')  # Palette -> RGB.
    assert run('--source', src, '--dest', tmp_path / 'c.zip').exit_code == 0
    ds = ImageFolderDataset(str(tmp_path / 'c.zip'))
    assert ds.num_channels == 3 and ds[0][0].max() == 90 and not ds.has_labels
    PIL.Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(src / 'c.png')
    result = CliRunner().invoke(dataset_tool.main, ['--source', str(src), '--dest', str(tmp_path / 'd.zip')])
    assert result.exit_code != 0 and 'c.png: becomes 16x16 RGB but' in result.output
    (src / 'c.png').write_bytes(b'garbage')
    result = CliRunner().invoke(dataset_tool.main, ['--source', str(src), '--dest', str(tmp_path / 'd.zip')])
    assert result.exit_code != 0 and 'c.png: not a readable image' in result.output
    result = CliRunner().invoke(dataset_tool.main, ['--source', str(src), '--dest', str(tmp_path / 'd.zip'),
                                                    '--resolution', '12x12', '--max-images', '2'])
    assert result.exit_code != 0 and 'power-of-two' in result.output
    assert not os.path.exists(tmp_path / 'd.zip')


def test_synthetic_source_is_deterministic_and_plotted(tmp_path):
    args = ['--source', 'synthetic:shapes', '--max-images', '6', '--resolution', '16x16', '--seed', '3']
    one = run(*args, '--dest', tmp_path / 'a.zip', '--workers', '1')
    assert one.exit_code == 0, one.output
    assert run(*args, '--dest', tmp_path / 'b.zip', '--workers', '2').exit_code == 0
    assert (tmp_path / 'a.zip').read_bytes() == (tmp_path / 'b.zip').read_bytes()
    ds = ImageFolderDataset(str(tmp_path / 'a.zip'), use_labels=True)
    assert (len(ds), ds.resolution, ds.label_dim) == (6, 16, 25)
    plot = np.asarray(PIL.Image.open(tmp_path / 'a_cameras.png').convert('RGB'))
    assert ((plot[..., 2] > 200) & (plot[..., 0] < 80)).sum() > 6       # Blue camera dots.

    folder = tmp_path / 'folder'
    assert run(*args, '--dest', folder, '--plot-cameras', 'none').exit_code == 0
    assert sorted(os.listdir(folder)) == ['00000', 'dataset.json'] and not (tmp_path / 'folder_cameras.png').exists()
    assert ImageFolderDataset(str(folder), use_labels=True)[5][0].tobytes() == ds[5][0].tobytes()
    result = CliRunner().invoke(dataset_tool.main, [*args, '--dest', str(folder)])
    assert result.exit_code != 0 and 'not empty' in result.output
