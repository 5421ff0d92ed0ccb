"""The baseline of benchmarks/cli.py: the plain script a user writes without bigvolume.

SimpleITK reads the file (ReadImage + GetArrayViewFromImage, no copy), a vtkImageResize with its default settings
(SetOutputDimensions only) shrinks it, SimpleITK writes the result (geometry from vtk's output: first voxel centre
kept, spacing (n-1)/(m-1) x the input's).

Usage: python plain_vtk_resize.py IN OUT [--factor 4] [--compress] [--stages]
``--stages`` prints one JSON line with the seconds spent reading, resizing and writing.
"""
import argparse
import json
import time

import SimpleITK as sitk
import vtk
from vtk.util import numpy_support


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--factor", type=int, default=4)
    parser.add_argument("--compress", action="store_true")
    parser.add_argument("--stages", action="store_true")
    args = parser.parse_args()
    times = [time.perf_counter()]

    image = sitk.ReadImage(args.input)
    array = sitk.GetArrayViewFromImage(image)
    times.append(time.perf_counter())

    vtk_image = vtk.vtkImageData()
    vtk_image.SetDimensions(image.GetSize())
    vtk_image.SetSpacing(image.GetSpacing())
    vtk_image.SetOrigin(image.GetOrigin())
    vtk_image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(array.reshape(-1), deep=False))
    resize = vtk.vtkImageResize()
    resize.SetInputData(vtk_image)
    resize.SetOutputDimensions(*[max(1, round(n / args.factor)) for n in image.GetSize()])
    resize.Update()
    output = resize.GetOutput()
    result = numpy_support.vtk_to_numpy(output.GetPointData().GetScalars()).reshape(output.GetDimensions()[::-1])
    times.append(time.perf_counter())

    written = sitk.GetImageFromArray(result)
    written.SetSpacing(output.GetSpacing())
    written.SetOrigin(output.GetOrigin())
    written.SetDirection(image.GetDirection())
    sitk.WriteImage(written, args.output, useCompression=args.compress)
    times.append(time.perf_counter())

    if args.stages:
        print(json.dumps(dict(zip(("read", "filter", "write"), (b - a for a, b in zip(times, times[1:]))))))


if __name__ == "__main__":
    main()
