"""bigvolume: anti-aliased downsampling and streaming tools for huge 3D images (numpy + vtk + SimpleITK only)."""
from .core.errors import BigVolumeError, Cancelled, VolumeFileError
from .core.geometry import Geometry
from .ops.haze import DehazeReport, HazeOptions, HazeThreshold, dehaze, dehaze_file, find_threshold, haze_mask
from .io.files import read_volume, write_volume
from .ops.precision import ReduceReport, Window, reduce_bits, reduce_bits_file
from .core.progress import Progress, ProgressCallback
from .ops.resample import (DEFAULT_METHOD, METHODS, FilePlan, choose_factors, downsample_array, plan_file, resample,
                       resample_file)
from .core.volume import Volume

__version__ = "0.1.0"

__all__ = ["BigVolumeError", "Cancelled", "VolumeFileError", "Geometry", "Volume", "read_volume", "write_volume",
           "Progress", "ProgressCallback",
           "DEFAULT_METHOD", "METHODS", "FilePlan", "plan_file", "choose_factors", "downsample_array", "resample", "resample_file",
           "HazeOptions", "HazeThreshold", "DehazeReport", "find_threshold", "haze_mask", "dehaze", "dehaze_file",
           "Window", "ReduceReport", "reduce_bits", "reduce_bits_file",
           "__version__"]
