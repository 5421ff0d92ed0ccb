"""The default method: vtkImageResize with a windowed-sinc (Lanczos) interpolator, antialiasing on, placed exactly on
the block-centred grid.

vtkImageResize by default keeps the first and last voxel centres (spacing (n-1)/(m-1) instead of the factor). We
run it in index space (unit spacing) with Border on and a cropping region that spans exactly ``m * f`` input voxels
starting at the first voxel's outer edge: its output then has spacing ``f`` and first centre ``(f - 1) / 2``, the
block-centred grid, and the antialiasing blur follows the true per-axis factor.
"""
from __future__ import annotations

import numpy as np
# Only the vtk modules we use: `import vtk` loads every module and costs a tenth of a second per command.
from vtkmodules.util import numpy_support
from vtkmodules.vtkCommonDataModel import vtkImageData
from vtkmodules.vtkImagingCore import vtkImageResize, vtkImageSincInterpolator

from .geometry import block_centres, output_size
from .kernels import LANCZOS_LOBES
from .progress import Progress


def array_to_vtk_image(array: np.ndarray) -> vtkImageData:
    """Wrap a C-contiguous (k, j, i[, c]) array as vtkImageData in index space, without copying."""
    array = np.ascontiguousarray(array)
    image = vtkImageData()
    image.SetDimensions(array.shape[2], array.shape[1], array.shape[0])
    components = 1 if array.ndim == 3 else array.shape[3]
    scalars = numpy_support.numpy_to_vtk(array.reshape(-1, components), deep=False)
    scalars._numpy_source = array  # keep the buffer alive as long as the vtk array
    image.GetPointData().SetScalars(scalars)
    return image


def vtk_image_to_array(image: vtkImageData) -> np.ndarray:
    """A numpy view (k, j, i[, c]) of a vtkImageData's scalars; keep ``image`` alive while using it."""
    extent = image.GetExtent()
    shape = (extent[5] - extent[4] + 1, extent[3] - extent[2] + 1, extent[1] - extent[0] + 1)
    scalars = image.GetPointData().GetScalars()
    array = numpy_support.vtk_to_numpy(scalars)
    components = scalars.GetNumberOfComponents()
    return array.reshape(shape + ((components,) if components > 1 else ()))


def make_lanczos_interpolator() -> vtkImageSincInterpolator:
    interpolator = vtkImageSincInterpolator()
    interpolator.SetWindowFunctionToLanczos()
    interpolator.SetWindowHalfWidth(LANCZOS_LOBES)
    interpolator.AntialiasingOn()
    return interpolator


def make_block_centred_resize(dimensions_in, factors, threads: int | None = None, dimensions_out=None,
                              start=(-0.5, -0.5, -0.5)) -> vtkImageResize:
    """A vtkImageResize configured for the block-centred grid of ``factors`` (I, J, K) on an index-space input.
    ``start``/``dimensions_out``: a window of that grid (output voxel ``i`` centred at ``start + (i + 0.5) * f``),
    for inputs that are a slab of a larger volume."""
    dims_out = dimensions_out or [output_size(n, f) for n, f in zip(dimensions_in, factors)]
    resize = vtkImageResize()
    resize.SetResizeMethodToOutputDimensions()
    resize.SetOutputDimensions(*dims_out)
    resize.SetInterpolator(make_lanczos_interpolator())
    resize.BorderOn()
    region = []
    for m, f, first in zip(dims_out, factors, start):
        region += [first, first + m * f]
    resize.CroppingOn()
    resize.SetCroppingRegion(*region)
    if threads:
        resize.SetNumberOfThreads(int(threads))
    return resize


def lanczos_resize(array: np.ndarray, factors, threads: int | None = None, progress: Progress | None = None,
                   dimensions_out=None, start=(-0.5, -0.5, -0.5)) -> tuple[np.ndarray, vtkImageData]:
    """Downsample ``array`` (k, j, i[, c]) by ``factors`` (I, J, K). Returns the output array (a view) and the
    vtkImageData that owns it. Integer outputs are rounded and clamped by vtk. ``dimensions_out``/``start``: only
    a window of the output grid (see make_block_centred_resize)."""
    image = array_to_vtk_image(array)
    resize = make_block_centred_resize(image.GetDimensions(), factors, threads, dimensions_out, start)
    resize.SetInputData(image)
    progress = progress or Progress()
    if progress.callback is not None:
        # vtkImageResize cannot be interrupted mid-run; a cancel request is honoured as soon as it returns.
        cancel_requested = []

        def on_progress(caller, _event):
            if cancel_requested:
                return  # asked once; the answer stands
            try:
                progress(caller.GetProgress(), "resampling")
            except Exception as error:  # Cancelled: remember it, vtk swallows exceptions in observers
                cancel_requested.append(error)

        resize.AddObserver("ProgressEvent", on_progress)
        resize.Update()
        if cancel_requested:
            raise cancel_requested[0]
    else:
        resize.Update()
    output = vtkImageData()
    output.ShallowCopy(resize.GetOutput())
    check_block_centred(output, factors, start)
    return vtk_image_to_array(output), output


def check_block_centred(output: vtkImageData, factors, start=(-0.5, -0.5, -0.5)) -> None:
    """Guard against a vtk version placing the samples differently: the grid must be the block-centred one."""
    for axis, f in enumerate(factors):
        n = output.GetDimensions()[axis]
        expected = block_centres(n, f) + (start[axis] + 0.5)
        actual = output.GetOrigin()[axis] + output.GetSpacing()[axis] * np.arange(n)
        if not np.allclose(actual, expected, rtol=0, atol=1e-6 * max(1.0, f * n)):
            raise RuntimeError(f"vtkImageResize placed samples off the block-centred grid on axis {axis}")
