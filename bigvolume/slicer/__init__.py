"""Adapters between bigvolume and Slicer's MRML nodes (duck-typed: this package imports no ``slicer`` module at
load time), and the one door through which the Slicer modules reach bigvolume beyond its public API.

The Slicer modules (AntiAliasedResample, ImageStackImport, HazeRemoval, OMEZarrPyramid, BigVolumeResampleCLI,
bigvolume_slicer) import ``bigvolume`` (the public API) and ``bigvolume.slicer`` only. The names below are what their
panels and logics need from the layers underneath (limits, constants, file helpers); they load on first use (PEP 562).
"""
import importlib

# name -> the module (relative to bigvolume) that defines it
_FROM_LAYERS = {
    "Progress": "core.progress",
    "LPS_TO_RAS": "core.geometry", "factors_for_size": "core.geometry", "validate_factors": "core.geometry",
    "default_memory_limit": "core.memory", "format_bytes": "core.memory", "memory_bytes": "core.memory",
    "physical_memory": "core.memory",
    "atomic_output": "io.files", "check_output_path": "io.files", "read_geometry": "io.files",
    "volume_suffix": "io.files",
    "choose_level": "io.zarr_input", "level_size_text": "io.zarr_input",
    "ZarrSlabReader": "io.zarr_input",
    "DEFAULT_STACK_ORIENTATION": "io.stacks", "IMAGE_SUFFIXES": "io.stacks", "STACK_ORIENTATIONS": "io.stacks",
    "Roi": "io.stacks", "StackInfo": "io.stacks", "stack_direction": "io.stacks", "stack_origin": "io.stacks",
    "vtk_image_to_array": "methods.vtk_resize",
    "ArraySink": "engine.sinks", "STREAMABLE_METHODS": "engine.stream", "DEVICE_METHODS": "engine.gpu",
    "DEVICES": "engine.gpu",
    "OME_ZARR_VERSIONS": "io.ome_zarr", "DEFAULT_OME_ZARR_VERSION": "io.ome_zarr",
    "DEFAULT_CHUNKS": "ops.pyramid",
    "check_method": "ops.resample", "label_note": "ops.resample", "nan_note": "ops.resample",
    "StackImport": "ops.stack_import",
    "AUTO": "ops.haze", "DEFAULT_DILATE": "ops.haze", "LEVELS": "ops.haze", "MAX_RADIUS": "ops.haze",
    "BITS_TO_DTYPE": "ops.precision",
    "write_ome_zarr": "testing.zarr_stores",  # the OMEZarrPyramid module's self-test
}

__all__ = sorted(_FROM_LAYERS)


def __getattr__(name):
    module = _FROM_LAYERS.get(name)
    if module is None:
        raise AttributeError(f"module 'bigvolume.slicer' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"..{module}", __name__), name)
    globals()[name] = value
    return value
