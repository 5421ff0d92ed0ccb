"""Volume geometry: the grid a voxel array lives on, and the grids of its downsamplings.

Conventions (the same as ITK and the files we read):
- ``dimensions``, ``spacing`` and ``origin`` are in IJK order (i fastest, the x of the numpy array's last
  spatial axis); a numpy array of the volume has shape ``(k, j, i)`` or ``(k, j, i, components)``.
- ``origin`` and ``direction`` are in LPS, the convention of NRRD/NIfTI/MetaImage through ITK.
  Slicer works in RAS: use :meth:`Geometry.ijk_to_ras` / :meth:`Geometry.from_ijk_to_ras`.
- ``direction`` is a 3x3 matrix whose *columns* are the unit vectors of the I, J and K axes.

Downsampling uses the block-centred grid: output voxel ``i`` along an axis with factor ``f`` is centred on input
index ``(f - 1) / 2 + f * i``, i.e. it covers input voxels ``f*i .. f*i + f - 1``. Therefore
``spacing_out = f * spacing_in`` exactly, ``origin_out = origin_in + (f - 1) / 2 * spacing_in`` along each axis
direction, and the number of output voxels is ``max(1, round(n / f))`` (halves round up), which keeps the physical
extent within half an output voxel.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .errors import VolumeFileError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
# Index distance below which a point counts as on a cell boundary (ROIs placed in RAS, converted with rounding).
ROUNDING = 1e-6


def _as_vector3(values, name: str) -> tuple[float, float, float]:
    values = tuple(float(v) for v in np.ravel(values))
    if len(values) == 1:
        values = values * 3
    if len(values) != 3:
        raise ValueError(f"{name} needs 1 or 3 values, got {len(values)}")
    return values  # type: ignore[return-value]


@dataclass(frozen=True)
class Geometry:
    dimensions: tuple[int, int, int]
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))

    def __post_init__(self):
        dims = tuple(int(d) for d in self.dimensions)
        if len(dims) != 3 or min(dims) < 1:
            raise ValueError(f"dimensions must be three positive integers, got {self.dimensions}")
        spacing = _as_vector3(self.spacing, "spacing")
        if not all(s > 0 and math.isfinite(s) for s in spacing):
            raise ValueError(f"spacing must be positive, got {spacing}")
        origin = _as_vector3(self.origin, "origin")
        if not all(math.isfinite(x) for x in origin):
            raise ValueError(f"origin must be a finite point, got {origin}")
        try:
            direction = np.array(self.direction, dtype=float).reshape(3, 3)
        except (TypeError, ValueError):
            raise ValueError(f"direction must be 3x3 numbers, got {self.direction!r}") from None
        # (writers dropped a NaN direction for the identity, or a NaN origin for 0 0 0, silently)
        if not np.isfinite(direction).all() or abs(np.linalg.det(direction)) < 1e-6:
            raise ValueError("direction must be three independent finite axis directions")
        direction.setflags(write=False)
        object.__setattr__(self, "dimensions", dims)
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "origin", origin)
        object.__setattr__(self, "direction", direction)

    def __eq__(self, other):
        return (isinstance(other, Geometry) and self.dimensions == other.dimensions
                and self.spacing == other.spacing and self.origin == other.origin
                and np.array_equal(self.direction, other.direction))

    def __hash__(self):
        return hash((self.dimensions, self.spacing, self.origin))

    def isclose(self, other: "Geometry", rtol: float = 1e-9, atol: float = 1e-9) -> bool:
        return (self.dimensions == other.dimensions
                and np.allclose(self.spacing, other.spacing, rtol=rtol, atol=atol)
                and np.allclose(self.origin, other.origin, rtol=rtol, atol=atol)
                and np.allclose(self.direction, other.direction, rtol=rtol, atol=atol))

    # --- derived quantities -------------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        """numpy shape (k, j, i) of a scalar array on this grid."""
        return self.dimensions[::-1]

    @property
    def voxel_count(self) -> int:
        return int(np.prod(self.dimensions, dtype=np.int64))

    @property
    def extent(self) -> tuple[float, float, float]:
        """Physical size along each IJK axis, voxel edges included (n * spacing)."""
        return tuple(n * s for n, s in zip(self.dimensions, self.spacing))  # type: ignore[return-value]

    def ijk_to_lps(self) -> np.ndarray:
        matrix = np.eye(4)
        matrix[:3, :3] = self.direction @ np.diag(self.spacing)
        matrix[:3, 3] = self.origin
        return matrix

    def ijk_to_ras(self) -> np.ndarray:
        matrix = self.ijk_to_lps()
        matrix[:3, :] = LPS_TO_RAS @ matrix[:3, :]
        return matrix

    def physical_point(self, ijk) -> np.ndarray:
        """LPS position of a (possibly fractional) IJK index."""
        return self.ijk_to_lps()[:3, :3] @ np.asarray(ijk, float) + np.asarray(self.origin)

    @classmethod
    def from_ijk_to_ras(cls, matrix, dimensions) -> "Geometry":
        """Build a geometry from a Slicer IJKToRAS 4x4 matrix (numpy or nested lists)."""
        matrix = np.asarray(matrix, dtype=float).reshape(4, 4)
        with np.errstate(invalid="ignore", divide="ignore"):  # (NaN or a zero column: refused by the constructor)
            lps = LPS_TO_RAS @ matrix[:3, :]
            spacing = np.linalg.norm(lps[:3, :3], axis=0)
            direction = lps[:3, :3] / spacing
        return cls(tuple(dimensions), tuple(spacing), tuple(lps[:3, 3]), direction)

    # --- regions ------------------------------------------------------------------------------------------------
    def index_box(self, points_lps, clip: bool = True) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
        """The voxel box ``((k0, k1), (j0, j1), (i0, i1))`` (numpy order, ends excluded) of every voxel whose cell
        holds part of the region spanned by ``points_lps`` (N x 3 LPS points, e.g. a ROI's 8 corners: a rotated
        ROI gets the box around it), clipped to the grid (``clip`` False: as far as the region reaches). Raises
        ValueError when the region misses the grid."""
        points = np.asarray(points_lps, float).reshape(-1, 3)
        ijk = np.linalg.solve(self.ijk_to_lps()[:3, :3], (points - np.asarray(self.origin)).T)
        # Voxel n's cell spans indices n - 1/2 .. n + 1/2. A face on a boundary between cells touches neither more
        # than the other (a 10-voxel ROI read 11: the cell above its top face), nor do rounding slivers (1e-6).
        low = np.floor(ijk.min(axis=1) + 0.5 + ROUNDING).astype(int)
        high = np.maximum(np.ceil(ijk.max(axis=1) + 0.5 - ROUNDING).astype(int), low + 1)
        if clip:
            low, high = np.maximum(low, 0), np.minimum(high, self.dimensions)
        if np.any(high <= low) or np.any(high <= 0) or np.any(low >= np.asarray(self.dimensions)):
            raise ValueError("the region lies outside the volume")
        return tuple((int(a), int(b)) for a, b in zip(low[::-1], high[::-1]))  # type: ignore[return-value]

    def cropped(self, box) -> "Geometry":
        """The grid of the voxels ``box`` (((k0, k1), (j0, j1), (i0, i1)), numpy order, ends excluded)."""
        (k0, k1), (j0, j1), (i0, i1) = ((int(a), int(b)) for a, b in box)
        if not (0 <= i0 < i1 <= self.dimensions[0] and 0 <= j0 < j1 <= self.dimensions[1]
                and 0 <= k0 < k1 <= self.dimensions[2]):
            raise ValueError(f"box {tuple(box)} is not inside the grid of {self.dimensions[::-1]} (k, j, i) voxels")
        origin = tuple(_tidy(x, min(self.spacing)) for x in self.physical_point((i0, j0, k0)))
        return Geometry((i1 - i0, j1 - j0, k1 - k0), self.spacing, origin, self.direction)

    # --- downsampling -------------------------------------------------------------------------------------------
    def downsampled(self, factors) -> "Geometry":
        """The block-centred grid of a downsampling by per-axis ``factors`` (each >= 1, fractional allowed), as
        given: ``resample`` and ``downsample_array`` first limit each factor to its axis's length
        (``bigvolume.choose_factors``), so with a factor above an axis's length their grid is this one's only when
        given the limited factors."""
        factors = validate_factors(factors)
        dims = tuple(output_size(n, f) for n, f in zip(self.dimensions, factors))
        spacing = tuple(_tidy(f * s) for f, s in zip(factors, self.spacing))
        shift = np.array([(f - 1.0) / 2.0 * s for f, s in zip(factors, self.spacing)])
        origin = tuple(_tidy(x, min(self.spacing)) for x in np.asarray(self.origin) + self.direction @ shift)
        return Geometry(dims, spacing, origin, self.direction)


def _tidy(value: float, scale: float | None = None) -> float:
    """Drop binary rounding noise (0.7 * 3 = 2.0999999999999996 -> 2.1): 12 significant digits of ``scale`` (a
    typical length: the spacing; default the value itself) are far below any scanner's precision and give users
    the numbers they expect. (12 digits of a position 12345678.12 mm from its origin moved it by 4e-5 mm.)"""
    scale = abs(value) if scale is None else abs(scale)
    if not scale or not math.isfinite(scale) or not math.isfinite(value):
        return float(value)
    decimals = min(30, max(0, 11 - math.floor(math.log10(scale))))
    return float(f"{value:.{decimals}f}")


def header_geometry(name, dimensions, spacing, origin, direction) -> Geometry:
    """The grid a file's header describes. A negative spacing (a NIfTI's negative pixdim, GDCM's frames in
    descending order) is a flipped axis: positive spacing, that direction column reversed, the voxels where they
    were, as ITK's ReadImage gives it (its header-only reading keeps the sign). Numbers no grid can have (a damaged
    or hand-written header) are refused in one line naming ``name``."""
    spacing = np.array(spacing, dtype=np.float64)
    direction = np.array(direction, dtype=np.float64).reshape(3, 3)
    flipped = spacing < 0
    spacing[flipped] *= -1.0
    direction[:, flipped] *= -1.0
    try:
        return Geometry(tuple(dimensions), tuple(float(s) for s in spacing), tuple(origin), direction)
    except ValueError as error:
        raise VolumeFileError(f"{name}: the header's grid is not valid ({error})") from None


def validate_factors(factors) -> tuple[float, float, float]:
    try:
        values = _as_vector3(factors, "factor")
    except (TypeError, ValueError) as error:
        raise ValueError(f"factor must be one number or three numbers: {error}") from None
    for f in values:
        if not math.isfinite(f) or f <= 0:
            raise ValueError(f"factor must be a positive number, got {f:g}")
        if f < 1:
            raise ValueError(f"factor {f:g} would upsample; factors must be >= 1 (this tool downsamples)")
    return values


def orthonormal(direction, atol: float = 1e-6) -> bool:
    """Whether the columns of ``direction`` are orthogonal unit vectors (a rotation or reflection, no shear)."""
    direction = np.asarray(direction, float)
    return bool(np.allclose(direction.T @ direction, np.eye(3), atol=atol))


def limited_factors(factors, dimensions) -> tuple[float, float, float]:
    """Each factor (I, J, K) at most its axis's length (``dimensions``, I, J, K): the one output voxel of an axis
    shorter than its factor covers the data and sits at its middle."""
    return tuple(min(float(f), float(n)) for f, n in zip(validate_factors(factors), dimensions))  # type: ignore


def output_size(n: int, factor: float) -> int:
    """Number of output voxels along an axis of ``n`` voxels: round(n / factor), halves up, at least 1."""
    return max(1, int(math.floor(n / factor + 0.5 + 1e-9)))


def block_centres(n_out: int, factor: float) -> np.ndarray:
    """Input-index coordinates of the output voxel centres along one axis (the block-centred grid)."""
    return (factor - 1.0) / 2.0 + factor * np.arange(n_out, dtype=float)


SPACING_EQUAL_RTOL = 1e-6  # a target spacing this close to an axis's is that spacing (float32 headers round it)


def factors_for_spacing(geometry: Geometry, spacing: Sequence[float]) -> tuple[float, float, float]:
    """Per-axis factors that give exactly ``spacing``."""
    target = _as_vector3(spacing, "spacing")
    if not all(s > 0 and math.isfinite(s) for s in target):
        raise ValueError(f"spacing must be positive, got {target}")
    factors = tuple(t / s for t, s in zip(target, geometry.spacing))
    for axis, (f, t, s) in enumerate(zip(factors, target, geometry.spacing)):
        if f < 1 - SPACING_EQUAL_RTOL:  # (float32 headers: 1.1 is read as 1.10000002)
            raise ValueError(f"spacing {t:.9g} along axis {'IJK'[axis]} is finer than the input's {s:.9g}: "
                             "this tool downsamples only")
    return tuple(max(1.0, f) for f in factors)  # type: ignore[return-value]


def isotropic_factors(geometry: Geometry, factor: float) -> tuple[float, float, float]:
    """Factors giving one spacing on every axis: ``factor`` x the finest input spacing, never finer than an axis
    already is (an axis is never upsampled)."""
    factor = validate_factors(factor)[0]
    target = factor * min(geometry.spacing)
    return tuple(max(1.0, target / s) for s in geometry.spacing)  # type: ignore[return-value]


def factors_for_size(geometry: Geometry, bytes_per_voxel: int, target_bytes: float) -> tuple[float, float, float]:
    """The smallest uniform factor whose output (uncompressed voxel data) fits in ``target_bytes``."""
    if target_bytes <= 0:
        raise ValueError(f"target size must be positive, got {target_bytes}")
    input_bytes = geometry.voxel_count * bytes_per_voxel
    if input_bytes <= target_bytes:
        return (1.0, 1.0, 1.0)
    if bytes_per_voxel > target_bytes:
        raise ValueError(f"the smallest output, one voxel, takes {bytes_per_voxel} bytes, more than the target size "
                         f"{target_bytes:g}")

    def fits(factor):
        return geometry.downsampled(factor).voxel_count * bytes_per_voxel <= target_bytes
    # The output's voxel count only falls as the factor grows, and at the longest axis's length every axis has one
    # voxel: bisection between the cube root of the ratio (every axis shrinking alike) and that. (Nudging up from the
    # cube root refused a 4096 x 1 x 1 line and a 20000 x 20000 x 1 image: their short axes cannot shrink.)
    low, high = 1.0, float(max(geometry.dimensions))
    start = (input_bytes / target_bytes) ** (1.0 / 3.0)
    if start < high and fits(start):
        high = start
    for _ in range(100):
        if high - low <= 1e-9 * high:
            break
        middle = (low + high) / 2
        low, high = (low, middle) if fits(middle) else (middle, high)
    return (high, high, high)


# Anatomical orientation codes: three letters, one per index axis (i, j, k), each naming the direction towards which
# that index increases, in the LPS patient frame of DICOM and ITK (the convention of nibabel's axis codes and of
# DICOM's "LPS"). "LPS" is the identity direction matrix.
_AXIS_LETTERS = {"L": (0, 1.0), "R": (0, -1.0), "P": (1, 1.0), "A": (1, -1.0), "S": (2, 1.0), "I": (2, -1.0)}


def orientation_direction(code: str) -> np.ndarray:
    """The direction matrix (columns: the I, J, K unit vectors in LPS) of an orientation code such as "LPS" or
    "RAI". Raises ValueError naming the code when its letters do not name three different body axes."""
    letters = str(code).strip().upper()
    if len(letters) != 3 or any(letter not in _AXIS_LETTERS for letter in letters) \
            or len({_AXIS_LETTERS[letter][0] for letter in letters}) != 3:
        raise ValueError(f"orientation {code!r}: give three letters, one of L/R, one of P/A and one of S/I "
                         "(the direction each of i, j, k increases towards), e.g. LPS or RAI")
    direction = np.zeros((3, 3))
    for column, letter in enumerate(letters):
        row, sign = _AXIS_LETTERS[letter]
        direction[row, column] = sign
    return direction


def orientation_code(direction) -> str:
    """The code of the closest orientation (the LPS axis nearest each column of ``direction``)."""
    direction = np.asarray(direction, dtype=float).reshape(3, 3)
    names = {(0, 1.0): "L", (0, -1.0): "R", (1, 1.0): "P", (1, -1.0): "A", (2, 1.0): "S", (2, -1.0): "I"}
    code = ""
    for column in direction.T:
        row = int(np.argmax(np.abs(column)))
        code += names[(row, float(np.sign(column[row])))]
    return code
