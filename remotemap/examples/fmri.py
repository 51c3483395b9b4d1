"""An fMRI treatment: each voxel's temporal mean and variance, computed slab by slab.

``TemporalStats`` splits a 4-D NIfTI image (x, y, z, time) into slabs of axial slices,
computes each voxel's mean and variance over time per slab, merges the slabs into one image
(x, y, z, 2: mean then variance) written with nibabel, and fetches it into ``output_dir``.
:func:`temporal_stats` is the same computation in one piece, to check the result against.

Subjects may be given as paths or as :class:`remotemap.Staged` paths: then each subject's
file is sent to the host its steps run on (``split`` reads the copy), while ``label`` and
``fetch``, here, see the caller's path. The parts travel as values (through the caller) by
default, which works on every mode and host. With ``scratch`` (a directory every worker
sees, as on a cluster's shared disk), the split writes the slabs there instead and each part
is only a file name; ``clean`` removes the subject's scratch files once its result is home,
or after a failure.

Needs numpy and nibabel where the steps run (``pip install nibabel``).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel
import numpy as np
import numpy.typing as npt

from remotemap.protocol import write_atomic
from remotemap.workflow.treatment import Treatment

Array = npt.NDArray[Any]
#: nibabel's constructor has no annotations; typed as Any so strict mypy accepts the call.
_Nifti1Image: Any = nibabel.Nifti1Image


@dataclass(frozen=True)
class Slab:
    """Slices ``z[0]:z[1]`` of one subject's image over time: the data, or its file."""

    subject: str
    index: int
    z: tuple[int, int]
    affine: Array
    data: Array | None = None
    path: str | None = None

    def load(self) -> Array:
        if self.data is not None:
            return self.data
        assert self.path is not None
        loaded: Array = np.load(self.path)
        return loaded


@dataclass(frozen=True)
class SlabStats:
    index: int
    z: tuple[int, int]
    affine: Array
    mean: Array
    variance: Array


def load_4d(path: str | os.PathLike[str]) -> tuple[Array, Array]:
    """The image's voxels (x, y, z, t) and affine; errors name the file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"subject file {path} does not exist")
    try:
        image: Any = nibabel.load(path)
        data: Array = np.asanyarray(image.dataobj)
        affine: Array = np.asarray(image.affine, dtype=np.float64)
    except Exception as exc:  # nibabel's errors do not always say which file
        raise ValueError(f"subject file {path} is not a readable NIfTI image: "
                         f"{type(exc).__name__}: {exc}") from exc
    if data.ndim != 4:
        raise ValueError(f"subject file {path} has {data.ndim} dimensions; a 4-D "
                         "(x, y, z, time) image is needed")
    return data, affine


def stats(data: Array) -> tuple[Array, Array]:
    """Each voxel's mean and variance over time (the last axis), in float64.

    Time is moved to the first axis of a C-ordered copy, so numpy sums the volumes one after
    the other whatever the input's memory layout: a slab then gives exactly the numbers the
    whole image gives (summing along a contiguous axis would pair terms differently).
    """
    values = np.ascontiguousarray(np.moveaxis(data, -1, 0), dtype=np.float64)
    return values.mean(axis=0), values.var(axis=0)


def temporal_stats(path: str | os.PathLike[str]) -> Array:
    """The whole computation in one piece: (x, y, z, 2), mean then variance."""
    mean, variance = stats(load_4d(path)[0])
    return np.stack([mean, variance], axis=-1)


def _stem(path: str) -> str:
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


#: A subject: its file's path, or the path wrapped in remotemap.Staged to send it to the hosts.
Subject = str | os.PathLike[str]


class TemporalStats(Treatment[Subject, Slab, SlabStats, bytes]):
    """Temporal mean and variance of a 4-D image, ``n_parts`` slabs of slices at a time."""

    def __init__(self, n_parts: int = 4, output_dir: str | os.PathLike[str] = ".",
                 scratch: str | os.PathLike[str] | None = None) -> None:
        if isinstance(n_parts, bool) or not isinstance(n_parts, int) or n_parts < 1:
            raise ValueError(f"n_parts must be a whole number >= 1, got {n_parts!r}")
        self.n_parts = n_parts
        self.output_dir = os.path.abspath(output_dir)
        self.scratch = os.path.abspath(scratch) if scratch is not None else None

    def label(self, subject: Subject) -> str:
        return _stem(os.fspath(subject))

    def output_path(self, subject: Subject) -> str:
        return os.path.join(self.output_dir, f"{self.label(subject)}_tstats.nii")

    def scratch_dir(self, subject: Subject) -> str | None:
        """This subject's scratch directory (named after the file and its full path, so two
        subjects with the same file name in different folders do not meet)."""
        if self.scratch is None:
            return None
        digest = hashlib.sha256(os.path.abspath(subject).encode()).hexdigest()[:10]
        return os.path.join(self.scratch, f"{self.label(subject)}-{digest}")

    def split(self, subject: Subject) -> list[Slab]:
        data, affine = load_4d(subject)
        # n_parts slabs even when there are fewer slices: a slab may be empty.
        bounds = np.linspace(0, data.shape[2], self.n_parts + 1).astype(int)
        where = self.scratch_dir(subject)
        if where is not None:
            os.makedirs(where, exist_ok=True)
        slabs = []
        for index, (start, stop) in enumerate(itertools.pairwise(bounds)):
            voxels = np.ascontiguousarray(data[:, :, start:stop, :])
            z = (int(start), int(stop))
            if where is None:
                slabs.append(Slab(os.fspath(subject), index, z, affine, data=voxels))
                continue
            path = os.path.join(where, f"slab-{index}.npy")
            np.save(path, voxels)
            slabs.append(Slab(os.fspath(subject), index, z, affine, path=path))
        return slabs

    def process(self, part: Slab) -> SlabStats:
        mean, variance = stats(part.load())
        return SlabStats(part.index, part.z, part.affine, mean, variance)

    def merge(self, subject: Subject, results: list[SlabStats]) -> bytes:
        ordered = sorted(results, key=lambda r: r.index)
        mean = np.concatenate([r.mean for r in ordered], axis=2)
        variance = np.concatenate([r.variance for r in ordered], axis=2)
        image = _Nifti1Image(np.stack([mean, variance], axis=-1), ordered[0].affine)
        image.header["descrip"] = b"temporal mean, variance (remotemap)"
        data: bytes = image.to_bytes()
        return data

    def fetch(self, subject: Subject, merged: bytes) -> str:
        os.makedirs(self.output_dir, exist_ok=True)
        path = self.output_path(subject)
        write_atomic(path, merged, mode=0o644)
        return path

    def clean(self, subject: Subject) -> None:
        where = self.scratch_dir(subject)
        if where is not None:
            shutil.rmtree(where, ignore_errors=True)

    def verify(self, subject: Subject, output: str | os.PathLike[str]) -> None:
        """Raise AssertionError unless ``output`` equals the one-piece computation exactly."""
        image: Any = nibabel.load(os.fspath(output))
        got = np.asanyarray(image.dataobj)
        expected = temporal_stats(subject)
        if got.shape != expected.shape:
            raise AssertionError(f"{output}: shape {got.shape}, expected {expected.shape}")
        if not np.array_equal(got, expected):
            worst = float(np.max(np.abs(got - expected)))
            raise AssertionError(f"{output} differs from the one-piece computation by up to "
                                 f"{worst}")
