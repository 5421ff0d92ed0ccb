"""Filters and kernels: the kernel tables, vtkImageResize (the Lanczos definition), the FFT reference."""
