"""Small OME-Zarr stores written with zarr itself (bigvolume.testing.zarr_stores, shared with the OMEZarrPyramid
module's self-test), under the names the tests use, and stores as other writers made them."""
import zarr

from bigvolume.testing.zarr_stores import chunk_files, level_arrays, subsample  # noqa: F401
from bigvolume.testing.zarr_stores import write_ome_zarr as write_store  # noqa: F401


def bioformats2raw_store(folder, images):
    """A store as bioformats2raw writes it (Zarr v2, OME-Zarr 0.4): the layout attribute at the root, an OME group
    beside the images, one multiscales group per image ("0", "1", ...) with t c z y x arrays in micrometres."""
    root = zarr.open_group(str(folder), mode="w", zarr_format=2)
    root.attrs.update({"bioformats2raw.layout": 3})
    root.create_group("OME")
    axes = [{"name": "t", "type": "time"}, {"name": "c", "type": "channel"}] + \
        [{"name": axis, "type": "space", "unit": "micrometer"} for axis in "zyx"]
    for number, array in enumerate(images):
        image = root.create_group(str(number))
        level = image.create_array("0", shape=(1, 1) + array.shape, chunks=(1, 1, 8, 8, 8), dtype=array.dtype,
                                   chunk_key_encoding={"name": "v2", "separator": "/"})
        level[:] = array[None, None]
        image.attrs.update({"multiscales": [{"version": "0.4", "axes": axes, "datasets": [
            {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 1, 2.0, 0.5, 0.25]}]}]}]})
    return folder


def legacy_store(folder, version, array, shrink):
    """An OME-Zarr 0.1-0.3 store (Zarr v2, t c z y x, no scales): level 1 made by ``shrink`` (decimation, as
    ome-zarr-py's writers did, or 2x2x2 means of whole blocks)."""
    root = zarr.open_group(str(folder), mode="w", zarr_format=2)
    levels = [array, shrink(array)]
    for number, level in enumerate(levels):
        root.create_array(str(number), data=level[None, None], chunks=(1, 1, 8, 8, 8),
                          chunk_key_encoding={"name": "v2", "separator": "/"})
    multiscale = {"version": version, "datasets": [{"path": "0"}, {"path": "1"}]}
    if version == "0.3":
        multiscale["axes"] = ["t", "c", "z", "y", "x"]
    root.attrs.update({"multiscales": [multiscale]})
    return folder, levels


def decimate(array):
    return array[::2, ::2, ::2]


def block_means(array):
    k, j, i = (n // 2 * 2 for n in array.shape)
    return array[:k, :j, :i].reshape(k // 2, 2, j // 2, 2, i // 2, 2).mean(axis=(1, 3, 5)).astype(array.dtype)
