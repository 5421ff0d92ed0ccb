"""File formats, headers, slab readers and writers, image stacks, DICOM series."""
