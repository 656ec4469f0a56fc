"""Datasets of images with EG3D camera labels: a base class and the zip/folder loader.

A dataset is a folder or an uncompressed zip holding images (any PIL-known extension, found
recursively, sorted by relative path) and, at its root, `dataset.json`:
`{"labels": [["00000/img00000000.png", [25 floats]], ...]}`. A camera label is the 4x4 OpenCV
cam2world matrix (row-major, 16 numbers) followed by the 3x3 normalised intrinsics (row-major,
9 numbers: fx, skew, cx, 0, fy, cy, 0, 0, 1; focal and principal point divided by the image size).
Items are (uint8 image [C, H, W], float32 label [label_dim]).

Every problem with a dataset is found when it is constructed (before any training starts) and raised
as a DatasetError naming the file and the problem.
"""

from __future__ import annotations

import json
import os
import zipfile
from typing import Sequence

import numpy as np
import PIL
import PIL.Image

import dnnlib

CAMERA_LABEL_DIM = 25            # 16 cam2world + 9 normalised intrinsics.
_MODE_CHANNELS = {'L': 1, 'RGB': 3}  # PIL modes the loader reads as they are.


class DatasetError(ValueError):
    """A dataset that cannot be used; the message names the file and the problem."""

# ----------------------------------------------------------------------------
# Camera labels.


def mirror_camera_label(c: np.ndarray) -> np.ndarray:
    """The camera label [..., 25] that sees the x-mirrored world as the horizontally flipped image.

    World mirror S = diag(-1, 1, 1) across the x = 0 plane. The pose becomes S P S (4x4, S extended
    with a 1): the camera centre is mirrored and its x axis (image right) flips. A camera-space x
    sign change maps normalised u = fx x/z + s y/z + cx to 1 - u when cx -> 1 - cx and s -> -s; pixel
    centres (j + 0.5) / R map to those of column R - 1 - j. With s = 0 and cx = 0.5 this is upstream's
    offline mirroring (dataset_preprocessing/mirror_dataset.py), which leaves intrinsics untouched.
    """
    c = np.asarray(c)
    if c.shape[-1] != CAMERA_LABEL_DIM:
        raise ValueError(f'mirror_camera_label: expected labels [..., 25], got shape {list(c.shape)}')
    out = np.array(c, copy=True)
    sign = np.ones(16, dtype=out.dtype)
    sign[[1, 2, 3, 4, 8]] = -1      # S P S negates (0,1), (0,2), (0,3), (1,0), (2,0); (3,0) is zero.
    out[..., :16] *= sign
    out[..., 17] = -out[..., 17]    # Skew.
    out[..., 18] = 1 - out[..., 18]  # Principal point cx.
    return out


def camera_label_problems(c: np.ndarray, atol: float = 1e-3, max_center_offset: float = 0.1) -> list[str]:
    """What is wrong with one 25-number camera label (an empty list when it is valid).

    Checks: finite numbers; a rotation block with R^T R = I and det R = +1; the bottom row (0, 0, 0, 1);
    positive focal lengths; a principal point within `max_center_offset` of the image centre (0.5, 0.5);
    an intrinsics bottom row (0, 0, 1).
    """
    c = np.asarray(c, dtype=np.float64)
    if c.shape != (CAMERA_LABEL_DIM,):
        return [f'a camera label has 25 numbers (16 cam2world + 9 intrinsics), this one has {c.size}']
    if not np.all(np.isfinite(c)):
        return ['the label holds a NaN or an infinity']
    problems = []
    pose, k = c[:16].reshape(4, 4), c[16:].reshape(3, 3)
    rot = pose[:3, :3]
    err = np.abs(rot.T @ rot - np.eye(3)).max()
    if err > atol:
        problems.append(f'the cam2world rotation is not orthonormal (max |R^T R - I| = {err:.3g})')
    elif np.linalg.det(rot) < 0:
        problems.append('the cam2world rotation is a reflection (det R = -1)')
    if np.abs(pose[3] - [0, 0, 0, 1]).max() > atol:
        problems.append(f'the cam2world bottom row is {pose[3].tolist()}, expected [0, 0, 0, 1]')
    if k[0, 0] <= 0 or k[1, 1] <= 0:
        problems.append(f'the focal lengths must be positive (fx = {k[0, 0]:.4g}, fy = {k[1, 1]:.4g})')
    if max(abs(k[0, 2] - 0.5), abs(k[1, 2] - 0.5)) > max_center_offset:
        problems.append(f'the principal point ({k[0, 2]:.4g}, {k[1, 2]:.4g}) is not near the image centre '
                        f'(0.5, 0.5): are the intrinsics in pixels rather than normalised by the image size?')
    if np.abs(k[2] - [0, 0, 1]).max() > atol or abs(k[1, 0]) > atol:
        problems.append(f'the intrinsics are not upper triangular with bottom row [0, 0, 1] ({k.tolist()})')
    return problems

# ----------------------------------------------------------------------------


class Dataset:
    """Base class: index subset (max_size), x-flip duplication, labels and the upstream interface.

    Subclasses provide `_load_raw_image(raw_idx)` -> uint8 [C, H, W] and `_load_raw_labels()` ->
    float32 [N, D] or int [N] class indices (one-hot encoded here), or None.
    """

    def __init__(self,
        name:          str,                  # Name of the dataset (the zip or folder base name).
        raw_shape:     Sequence[int],        # Shape of the raw image data [N, C, H, W].
        max_size:      int | None = None,    # Keep a seeded random subset of this many images; None = all.
        use_labels:    bool = False,         # Return labels (True) or empty [0] labels (False).
        xflip:         bool = False,         # Double the dataset with horizontally flipped copies.
        mirror_labels: bool = True,          # With xflip, mirror camera labels too; False = upstream (eg3d issue 103).
        random_seed:   int = 0,              # Seed of the max_size subset.
    ):
        self._name = name
        self._raw_shape = list(raw_shape)
        self._use_labels = use_labels
        self._mirror_labels = mirror_labels
        self._raw_labels = None
        self._label_shape = None
        self._onehot = False
        if self._raw_shape[0] == 0:
            raise DatasetError(f'{name}: the dataset is empty')

        # Seeded subset (before the x-flip duplication, as upstream).
        self._raw_idx = np.arange(self._raw_shape[0], dtype=np.int64)
        if max_size is not None and self._raw_idx.size > max_size:
            keep = np.random.RandomState(random_seed % (1 << 31)).permutation(self._raw_idx.size)[:max_size]
            self._raw_idx = np.sort(keep)
        self._xflip = np.zeros(self._raw_idx.size, dtype=np.uint8)
        if xflip:
            self._raw_idx = np.tile(self._raw_idx, 2)
            self._xflip = np.repeat(np.uint8([0, 1]), self._xflip.size)
        if use_labels:
            self._get_raw_labels()  # Validate now, before training starts.

    def _get_raw_labels(self) -> np.ndarray:
        if self._raw_labels is None:
            labels = self._load_raw_labels() if self._use_labels else None
            if labels is None:
                labels = np.zeros([self._raw_shape[0], 0], dtype=np.float32)
            self._onehot = labels.ndim == 1
            if self._onehot:  # Class indices -> one-hot.
                onehot = np.zeros([labels.size, int(labels.max()) + 1], dtype=np.float32)
                onehot[np.arange(labels.size), labels] = 1
                labels = onehot
            assert labels.ndim == 2 and labels.shape[0] == self._raw_shape[0] and labels.dtype == np.float32
            self._raw_labels = labels
        return self._raw_labels

    def close(self) -> None:
        pass

    def _load_raw_image(self, raw_idx: int) -> np.ndarray:
        raise NotImplementedError

    def _load_raw_labels(self) -> np.ndarray | None:
        raise NotImplementedError

    def __getstate__(self):
        return dict(self.__dict__, _raw_labels=None)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __len__(self) -> int:
        return self._raw_idx.size

    def __getitem__(self, idx: int) -> tuple[np.ndarray, np.ndarray]:
        image = self._load_raw_image(self._raw_idx[idx])
        if list(image.shape) != self.image_shape or image.dtype != np.uint8:
            raise DatasetError(f'{self._name}: image {self._raw_idx[idx]} has shape {list(image.shape)} '
                               f'{image.dtype}, expected {self.image_shape} uint8')
        if self._xflip[idx]:
            image = image[:, :, ::-1]
        return image.copy(), self.get_label(idx)

    def _mirrors_labels(self) -> bool:
        return self._mirror_labels and self.label_shape == [CAMERA_LABEL_DIM]

    def get_label(self, idx: int) -> np.ndarray:
        """Label of item `idx`; x-flipped items get the mirrored camera (unless mirror_labels=False)."""
        label = self._get_raw_labels()[self._raw_idx[idx]]
        if self._xflip[idx] and self._mirrors_labels():
            label = mirror_camera_label(label)
        return label.copy()

    def get_details(self, idx: int) -> dnnlib.EasyDict:
        return dnnlib.EasyDict(raw_idx=int(self._raw_idx[idx]), xflip=bool(self._xflip[idx]),
                               raw_label=self._get_raw_labels()[self._raw_idx[idx]].copy())

    def get_label_std(self) -> np.ndarray:
        """Per-column std of the raw labels (as upstream: before the subset and without mirrored copies)."""
        return self._get_raw_labels().std(0)

    @property
    def name(self) -> str:
        return self._name

    @property
    def image_shape(self) -> list[int]:
        return list(self._raw_shape[1:])

    @property
    def num_channels(self) -> int:
        return self.image_shape[0]

    @property
    def resolution(self) -> int:
        assert self.image_shape[1] == self.image_shape[2]
        return self.image_shape[1]

    @property
    def label_shape(self) -> list[int]:
        if self._label_shape is None:
            self._label_shape = list(self._get_raw_labels().shape[1:])
        return list(self._label_shape)

    @property
    def label_dim(self) -> int:
        return self.label_shape[0]

    @property
    def has_labels(self) -> bool:
        return self.label_dim != 0

    @property
    def has_onehot_labels(self) -> bool:
        self._get_raw_labels()
        return self._onehot

# ----------------------------------------------------------------------------
# Files in a folder or a zip.


def image_extensions() -> set[str]:
    PIL.Image.init()
    return {ext.lower() for ext in PIL.Image.EXTENSION}


def list_files(path: str) -> list[str]:
    """All file names in a folder (recursive) or a zip, relative, with forward slashes, sorted."""
    if os.path.isdir(path):
        names = [os.path.relpath(os.path.join(root, f), path).replace(os.sep, '/')
                 for root, _dirs, files in os.walk(path) for f in files]
    elif os.path.isfile(path) and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = [info.filename for info in z.infolist() if not info.is_dir()]
    elif os.path.exists(path):
        raise DatasetError(f'{path}: not a folder or a zip file')
    else:
        raise DatasetError(f'{path}: no such folder or zip file')
    return sorted(names)


def decode_image(data_or_file, where: str, full: bool = True) -> PIL.Image.Image:
    """Open an image with PIL (decoding all pixels when `full`); unreadable data raises a DatasetError."""
    try:
        img = PIL.Image.open(data_or_file)
        if full:
            img.load()
        return img
    except PIL.UnidentifiedImageError:
        raise DatasetError(f'{where}: not a readable image (unknown format or corrupt data)') from None
    except (OSError, SyntaxError, ValueError, PIL.Image.DecompressionBombError) as err:
        raise DatasetError(f'{where}: not a readable image ({type(err).__name__}: {err})') from None


def load_labels_json(data: bytes, where: str) -> dict[str, object] | None:
    """The {file name: label} mapping of a dataset.json (None when its "labels" is null)."""
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetError(f'{where}: not valid JSON ({err})') from None
    return labels_from_json(obj, where)


def labels_from_json(obj, where: str) -> dict[str, object] | None:
    """load_labels_json for an already parsed object."""
    if not isinstance(obj, dict) or 'labels' not in obj:
        raise DatasetError(f'{where}: expected an object {{"labels": [[file name, label], ...]}}')
    labels = obj['labels']
    if labels is None:
        return None
    if isinstance(labels, dict):
        return {str(k).replace('\\', '/'): v for k, v in labels.items()}
    if not isinstance(labels, list) or not all(isinstance(p, list) and len(p) == 2 for p in labels):
        raise DatasetError(f'{where}: "labels" must be a list of [file name, label] pairs')
    return {str(name).replace('\\', '/'): value for name, value in labels}


def labels_to_array(labels: dict[str, object], fnames: Sequence[str], where: str) -> np.ndarray:
    """Labels of `fnames` in order: float32 [N, 25] camera labels or int64 [N] class indices."""
    missing = [f for f in fnames if f not in labels]
    if missing:
        raise DatasetError(f'{where}: no label for {len(missing)} of {len(fnames)} images, '
                           f'e.g. "{missing[0]}"')
    values = [labels[f] for f in fnames]
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        if min(values) < 0:
            raise DatasetError(f'{where}: negative class index for "{fnames[values.index(min(values))]}"')
        return np.array(values, dtype=np.int64)
    for fname, value in zip(fnames, values):
        if not isinstance(value, list) or not all(isinstance(x, (int, float)) for x in value):
            raise DatasetError(f'{where}: the label of "{fname}" is not a list of numbers')
        if len(value) != CAMERA_LABEL_DIM:
            raise DatasetError(f'{where}: the label of "{fname}" has {len(value)} numbers, expected 25 '
                               f'(16 cam2world + 9 intrinsics)')
    array = np.array(values, dtype=np.float32)
    bad = np.flatnonzero(~np.isfinite(array).all(axis=1))
    if bad.size:
        raise DatasetError(f'{where}: the label of "{fnames[bad[0]]}" holds a NaN or an infinity')
    return array


def check_image_shapes(shapes: Sequence[tuple[int, int, int]], wheres: Sequence[str]) -> None:
    """All images [C, H, W] must share one square power-of-two size and one channel count."""
    c0, h0, w0 = shapes[0]
    for (c, h, w), where in zip(shapes, wheres):
        if (h, w) != (h0, w0):
            raise DatasetError(f'{where}: image is {w}x{h} but {wheres[0]} is {w0}x{h0}; '
                               f'all images must have one resolution')
        if c != c0:
            raise DatasetError(f'{where}: image has {c} channel(s) but {wheres[0]} has {c0}')
    if h0 != w0:
        raise DatasetError(f'{wheres[0]}: image is {w0}x{h0}; images must be square')
    if w0 < 4 or w0 & (w0 - 1):
        raise DatasetError(f'{wheres[0]}: resolution {w0} is not a power of two (>= 4)')


class ImageFolderDataset(Dataset):
    """Images and labels from a folder or an uncompressed zip (EG3D / StyleGAN dataset format)."""

    def __init__(self,
        path:         str,                 # Folder or .zip holding the images and dataset.json.
        resolution:   int | None = None,   # Expected resolution; None = whatever the images have.
        validate:     str = 'headers',     # At construction: 'headers' of all images, 'full' decode, 'first' only.
        **super_kwargs,                    # Dataset kwargs: max_size, use_labels, xflip, mirror_labels, random_seed.
    ):
        if validate not in ('headers', 'full', 'first'):
            raise ValueError(f'validate must be "headers", "full" or "first", not {validate!r}')
        self._path = path
        self._zipfile = None
        self._type = 'dir' if os.path.isdir(path) else 'zip'
        self._all_fnames = list_files(path)
        exts = image_extensions()
        self._image_fnames = [f for f in self._all_fnames if os.path.splitext(f)[1].lower() in exts]
        if not self._image_fnames:
            raise DatasetError(f'{path}: the dataset is empty (no image files found)')

        check = self._image_fnames if validate != 'first' else self._image_fnames[:1]
        shapes = [self._image_header(f, full=(validate == 'full')) for f in check]
        check_image_shapes(shapes, [self._where(f) for f in check])
        if resolution is not None and shapes[0][1] != resolution:
            raise DatasetError(f'{path}: images are {shapes[0][1]}x{shapes[0][1]}, but resolution={resolution} '
                               f'was asked for')
        name = os.path.splitext(os.path.basename(os.path.normpath(path)))[0]
        super().__init__(name=name, raw_shape=[len(self._image_fnames), *shapes[0]], **super_kwargs)

    def _where(self, fname: str) -> str:
        return os.path.join(self._path, fname) if self._type == 'dir' else f'{self._path}:{fname}'

    def _get_zipfile(self) -> zipfile.ZipFile:
        if self._zipfile is None:
            self._zipfile = zipfile.ZipFile(self._path)
        return self._zipfile

    def _open_file(self, fname: str):
        if self._type == 'dir':
            return open(os.path.join(self._path, fname), 'rb')
        return self._get_zipfile().open(fname, 'r')

    def _image_header(self, fname: str, full: bool) -> tuple[int, int, int]:
        with self._open_file(fname) as f:
            img = decode_image(f, self._where(fname), full=full)
            if img.mode not in _MODE_CHANNELS:
                raise DatasetError(f'{self._where(fname)}: image mode {img.mode} ({len(img.getbands())} channels); '
                                   f'the loader reads 1-channel (L) or 3-channel (RGB) images '
                                   f'(dataset_tool.py converts them)')
            return _MODE_CHANNELS[img.mode], img.size[1], img.size[0]

    def close(self) -> None:
        if getattr(self, '_zipfile', None) is not None:
            self._zipfile.close()
        self._zipfile = None

    def __getstate__(self):
        return dict(super().__getstate__(), _zipfile=None)

    def _load_raw_image(self, raw_idx: int) -> np.ndarray:
        fname = self._image_fnames[raw_idx]
        with self._open_file(fname) as f:
            img = decode_image(f, self._where(fname))
        if img.mode not in _MODE_CHANNELS:
            raise DatasetError(f'{self._where(fname)}: image mode {img.mode}, expected L or RGB')
        image = np.asarray(img)
        image = image[:, :, None] if image.ndim == 2 else image
        if list(image.shape) != [self._raw_shape[2], self._raw_shape[3], self._raw_shape[1]]:
            raise DatasetError(f'{self._where(fname)}: image is {image.shape[1]}x{image.shape[0]}x{image.shape[2]}, '
                               f'expected {self._raw_shape[3]}x{self._raw_shape[2]}x{self._raw_shape[1]}')
        return image.transpose(2, 0, 1)

    def _load_raw_labels(self) -> np.ndarray:
        where = self._where('dataset.json')
        if 'dataset.json' not in self._all_fnames:
            raise DatasetError(f'{where}: missing; use_labels=True needs camera labels in dataset.json '
                               f'(dataset_tool.py --poses attaches them)')
        with self._open_file('dataset.json') as f:
            labels = load_labels_json(f.read(), where)
        if labels is None:
            raise DatasetError(f'{where}: "labels" is null; use_labels=True needs camera labels')
        return labels_to_array(labels, self._image_fnames, where)
