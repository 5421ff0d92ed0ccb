"""bigvolume: anti-aliased downsampling and streaming tools for huge 3D images (numpy + vtk + SimpleITK only).

The public API is listed in ``__all__`` and loaded on first use (PEP 562): ``import bigvolume`` is cheap and does not
load vtk or SimpleITK until a function that needs them is called. The layers behind it (docs/ARCHITECTURE.md):
core <- io <- methods <- engine <- ops <- render, testing <- cli; slicer (the scene adapters) for the Slicer
modules only.
"""
import importlib

__version__ = "0.1.0"

# public name -> the submodule that defines it
_PUBLIC = {
    "BigVolumeError": "core.errors", "Cancelled": "core.errors", "VolumeFileError": "core.errors",
    "Geometry": "core.geometry", "Volume": "core.volume",
    "Progress": "core.progress", "ProgressCallback": "core.progress",
    "read_volume": "io.files", "write_volume": "io.files", "read_geometry": "io.files",
    # OME-Zarr input: a pyramid's levels and geometries, a box of one level
    "open_pyramid": "io.zarr_input", "read_region": "io.zarr_input",
    "DEFAULT_METHOD": "ops.resample", "METHODS": "ops.resample", "FilePlan": "ops.resample",
    "plan_file": "ops.resample", "choose_factors": "ops.resample", "downsample_array": "ops.resample",
    "resample": "ops.resample", "resample_file": "ops.resample",
    "import_stack": "ops.stack_import", "plan_stack_import": "ops.stack_import",
    "HazeOptions": "ops.haze", "HazeThreshold": "ops.haze", "DehazeReport": "ops.haze",
    "find_threshold": "ops.haze", "haze_mask": "ops.haze", "dehaze": "ops.haze", "dehaze_file": "ops.haze",
    "Window": "ops.precision", "ReduceReport": "ops.precision", "reduce_bits": "ops.precision",
    "reduce_bits_file": "ops.precision",
    "write_preview": "render.preview",
    "pyramid": "ops.pyramid", "PyramidReport": "ops.pyramid", "plan_levels": "ops.pyramid",
    # the engine, for schedulers and other backends: blocks with their halo, the backends by name
    "ResampleKernels": "methods.kernels", "BACKENDS": "methods.backends", "get_backend": "methods.backends",
    "resample_block": "engine.stream", "output_blocks": "engine.stream",
}

__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name):
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'bigvolume' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
