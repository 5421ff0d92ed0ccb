"""Small OME-Zarr stores for the tests of OME-Zarr input (Testing/, and the OMEZarrPyramid module's self-test in
Slicer), written with zarr itself and the metadata of bigvolume.io.ome_zarr.multiscales_attributes: no dependency on
our pyramid writer, so these tests check the reader against the format, not against the writer. zarr is imported
when a store is written.

Levels are plain strided subsamplings (voxel (f-1)/2 + f*i of the level below) so their content is known exactly
and their grid is the block-centred grid of Geometry.downsampled."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.geometry import Geometry
from ..io.ome_zarr import PyramidLevel, import_zarr, multiscales_attributes


def subsample(array: np.ndarray, factor: int) -> np.ndarray:
    """The voxels at the centres of factor^3 blocks (odd factors: exact centres), of a (k, j, i[, c]) array."""
    start = (factor - 1) // 2
    n = [max(1, int(np.floor(size / factor + 0.5))) for size in array.shape[:3]]
    return array[start::factor, start::factor, start::factor][:n[0], :n[1], :n[2]]


def level_arrays(array: np.ndarray, geometry: Geometry, factors=(3, 9)):
    """(array, PyramidLevel) per level: level 0 and odd-factor subsamplings (whose grids Geometry.downsampled
    gives exactly)."""
    levels = [(array, PyramidLevel("0", geometry))]
    for n, factor in enumerate(factors, start=1):
        data = subsample(array, factor)
        level_geometry = geometry.downsampled(factor)
        assert level_geometry.shape == data.shape[:3], (level_geometry.shape, data.shape)
        levels.append((data, PyramidLevel(str(n), level_geometry, (float(factor),) * 3, "0")))
    return levels


def write_ome_zarr(path: Path, array: np.ndarray, geometry: Geometry, *, version: str = "0.5", chunks=8,
                factors=(3, 9), shards=None, all_chunks_written: bool | None = None, channel_first: bool = True,
                unit: str = "millimeter") -> Path:
    """An OME-Zarr store of ``array`` ((k, j, i) or (k, j, i, c)) and its subsampled levels. A component axis is
    stored as NGFF axis ``c`` before ``z y x``. ``all_chunks_written``: the root's bigvolume record says so."""
    zarr = import_zarr()
    path = Path(path)
    zarr_format = 3 if version == "0.5" else 2
    root = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    levels = level_arrays(array, geometry, factors)
    attributes = multiscales_attributes([level for _, level in levels], version=version, unit=unit)
    components = array.shape[3] if array.ndim == 4 else 1
    if array.ndim == 4:  # NGFF puts a channel axis before the space axes
        key = "ome" if version == "0.5" else None
        multiscale = (attributes[key] if key else attributes)["multiscales"][0]
        multiscale["axes"].insert(0, {"name": "c", "type": "channel"})
        for dataset in multiscale["datasets"]:
            for transform in dataset["coordinateTransformations"]:
                values = transform[transform["type"]]
                values.insert(0, 1.0 if transform["type"] == "scale" else 0.0)
    if all_chunks_written is not None:
        attributes["bigvolume"]["all_chunks_written"] = all_chunks_written
    root.attrs.update(attributes)
    for data, level in levels:
        if data.ndim == 4:
            data = np.moveaxis(data, 3, 0)
            chunk_shape = (components,) + (chunks,) * 3
            names = ("c", "z", "y", "x")
        else:
            chunk_shape = (chunks,) * 3
            names = ("z", "y", "x")
        options = {"dimension_names": names} if zarr_format == 3 else {"chunk_key_encoding": {"name": "v2",
                                                                                               "separator": "/"}}
        if shards is not None:
            options["shards"] = tuple(shards) if data.ndim == 3 else (components,) + tuple(shards)
        # write_empty_chunks: every chunk is a file (the tests remove them one by one)
        stored = root.create_array(level.path, shape=data.shape, chunks=chunk_shape, dtype=data.dtype,
                                   config={"write_empty_chunks": True}, **options)
        stored[...] = data
    return path


def chunk_files(store: Path, level: str = "0") -> list[Path]:
    """The chunk files of a level (not its metadata)."""
    folder = Path(store) / level
    return sorted(f for f in folder.rglob("*") if f.is_file() and not f.name.startswith((".z", "zarr.json")))
