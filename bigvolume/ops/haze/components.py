"""Connected components across slabs: each slab labelled on its own (SimpleITK), the labels that meet across slab
boundaries or touch the volume's border joined in a vectorised union-find; compact codes and fast look-ups for the
second pass."""
from __future__ import annotations

import numpy as np

from ...core.volume import owned_view


def label(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """6-connected components of a (k, j, i) bool block: labels 1..n (0 = background), n."""
    import SimpleITK as sitk
    image = sitk.GetImageFromArray(mask.view(np.uint8))
    labeller = sitk.ConnectedComponentImageFilter()
    labeller.SetFullyConnected(False)
    labels = labeller.Execute(image)
    return owned_view(sitk.GetArrayViewFromImage(labels), labels), labeller.GetObjectCount()  # no copy


def _join(nodes: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Root (the smallest member) of every node's component in the graph with edges a[i]-b[i]: hooking roots onto
    the smaller root and pointer jumping, vectorised, until every edge joins two nodes of one root."""
    root = np.arange(nodes, dtype=np.int64)
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    while True:
        ra, rb = root[a], root[b]
        differ = ra != rb
        if not differ.any():
            return root
        ra, rb = ra[differ], rb[differ]
        low, high = np.minimum(ra, rb), np.maximum(ra, rb)
        np.minimum.at(root, high, low)
        while True:  # pointer jumping: every node straight to its root
            jumped = root[root]
            if np.array_equal(jumped, root):
                break
            root = jumped


class SlabLabels:
    """First pass of a labelling over slabs: per slab, how many labels and where they start; the pairs of global
    labels that touch across slab boundaries or (node 0) the volume's border; voxel counts per label."""

    BORDER = 0

    def __init__(self, with_border: bool, with_sizes: bool):
        self.with_border, self.with_sizes = with_border, with_sizes
        self.offsets: list[int] = []
        self.counts: list[int] = []
        self.edges_a: list[np.ndarray] = []
        self.edges_b: list[np.ndarray] = []
        self.sizes: list[np.ndarray] = [np.zeros(1, np.int64)]
        self.next = 1                   # global label of the next slab's label 1
        self._bottom: np.ndarray | None = None  # global labels of the previous slab's last slice

    def add(self, labels: np.ndarray, count: int, first: bool, last: bool) -> tuple[np.ndarray, np.ndarray]:
        """Record slab ``labels`` (1..count); returns its local labels that touch the volume's border, and those
        on its top or bottom face that do not (still open: decided by other slabs)."""
        offset = self.next - 1
        self.offsets.append(offset)
        self.counts.append(count)
        self.next += count
        if self._bottom is not None:  # pairs of labels that touch across the boundary with the previous slab
            top = labels[0].ravel()
            both = (self._bottom > 0) & (top > 0)
            if both.any():
                # one key per (previous global label, this slab's local label): unique without sorting pairs
                keys = np.unique(self._bottom[both] * (count + 1) + top[both])
                self.edges_a.append(keys // (count + 1))
                self.edges_b.append(keys % (count + 1) + offset)
        self._bottom = _global(labels[-1], offset).ravel()
        touching = np.zeros(0, np.int64)
        if self.with_border:
            faces = [labels[:, 0, :], labels[:, -1, :], labels[:, :, 0], labels[:, :, -1]]
            faces += [labels[0]] if first else []
            faces += [labels[-1]] if last else []
            touching = _labels_present(faces, count)
            self.edges_a.append(np.full(touching.size, self.BORDER, np.int64))
            self.edges_b.append(touching + offset)
        if self.with_sizes:
            self.sizes.append(np.bincount(labels.ravel(), minlength=count + 1)[1:].astype(np.int64))
        faces = ([] if first else [labels[0]]) + ([] if last else [labels[-1]])
        return touching, np.setdiff1d(_labels_present(faces, count), touching, assume_unique=True)

    def roots(self) -> np.ndarray:
        a = np.concatenate(self.edges_a) if self.edges_a else np.zeros(0, np.int64)
        b = np.concatenate(self.edges_b) if self.edges_b else np.zeros(0, np.int64)
        return _join(self.next, a, b)

    def slab_lookup(self, index: int, selected: np.ndarray) -> np.ndarray:
        """Bool per local label of slab ``index`` (0 = background: False) from a bool per global label."""
        offset, count = self.offsets[index], self.counts[index]
        return np.concatenate([[False], selected[offset + 1:offset + count + 1]])


def _labels_present(faces, count: int) -> np.ndarray:
    """The labels 1..count found in ``faces`` (arrays of labels), ascending: a presence table, no sort."""
    present = np.zeros(count + 1, bool)
    for face in faces:
        present[face] = True
    present[0] = False
    return np.flatnonzero(present)


def compact(labels: np.ndarray, count: int, air: np.ndarray, open_labels: np.ndarray):
    """A slab's dark labels reduced to what the second pass needs, in 1 or 2 bytes a voxel instead of 4: code 1 =
    air already (touches the border), 2 + n = the n-th label still open, 0 = anything else (not dark, or dark and
    enclosed within the slab: never air). None when too many labels are open for 2 bytes."""
    if open_labels.size > np.iinfo(np.uint16).max - 2:
        return None
    dtype = np.uint8 if open_labels.size <= np.iinfo(np.uint8).max - 2 else np.uint16
    code = np.zeros(count + 1, dtype)
    code[air] = 1
    code[open_labels] = 2 + np.arange(open_labels.size)
    return lookup(code, labels), open_labels


LOOKUP_CHUNK = 2**16  # lookup's chunks: numpy's index conversion and gather stay in the cache


def lookup(table: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``table[index]`` (a label or code table, indices in range by construction), by chunks of LOOKUP_CHUNK
    voxels into one output: 2.5-3x faster than fancy indexing over the whole slab, which converts every index to
    intp in a slab-sized temporary before gathering (mode "clip": no bounds check, which costs a third)."""
    out = np.empty(index.shape, table.dtype)
    flat_out, flat_index = out.reshape(-1), index.reshape(-1)
    for start in range(0, flat_index.size, LOOKUP_CHUNK):
        stop = start + LOOKUP_CHUNK
        np.take(table, flat_index[start:stop], out=flat_out[start:stop], mode="clip")
    return out


def _global(labels: np.ndarray, offset: int) -> np.ndarray:
    out = labels.astype(np.int64)
    out[labels > 0] += offset
    return out
