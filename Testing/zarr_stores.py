"""Small OME-Zarr stores written with zarr itself (bigvolume.testing.zarr_stores, shared with the OMEZarrPyramid
module's self-test), under the names the tests use."""
from bigvolume.testing.zarr_stores import chunk_files, level_arrays, subsample  # noqa: F401
from bigvolume.testing.zarr_stores import write_ome_zarr as write_store  # noqa: F401
