"""OME-Zarr (NGFF) multiscale metadata: a pyramid's levels as :class:`~bigvolume.core.geometry.Geometry` objects and
back, for OME-Zarr 0.5 (Zarr v3, ``attributes.ome``) and 0.4 (Zarr v2, ``.zattrs``).

The rules (docs/OME_ZARR.md says the same for users):
- Axes ``z y x``, all of type ``space``, in one unit (millimetre for NRRD/NIfTI, micrometre by default for stacks).
- Each level has one ``scale`` (the level's spacing) and one ``translation`` (the position of its first voxel
  centre). With the cumulative factor f of a level: scale = s0 * f, translation = t0 + s0 * (f - 1) / 2, the
  block-centred grid of :meth:`Geometry.downsampled`.
- Coordinates are LPS, the convention of ITK and SlicerOMEZarr: NGFF ``x`` is L, ``y`` is P, ``z`` is S when the
  direction matrix is the identity.
- A volume whose direction is not the identity keeps its direction in our own attribute ``bigvolume.direction``
  (NGFF 0.4/0.5 have no rotation). The NGFF scale/translation then describe the grid in the volume's own axes: the
  LPS position of index (i, j, k) of a level is ``origin0 + D @ ((translation - t0) + scale * (i, j, k))`` with
  vectors in x y z order and ``origin0 = t0`` (level 0's translation). A reader that ignores the attribute gets the
  right spacing and first voxel, in unrotated axes; ours gets the exact geometry back.

zarr itself is an optional dependency (``pip install 'bigvolume[zarr]'``), imported on first use by
:func:`import_zarr`; the metadata functions here need only the standard library and numpy.
"""
from __future__ import annotations

import json
import math
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..core.errors import BigVolumeError, VolumeFileError
from ..core.geometry import Geometry, orthonormal

OME_ZARR_VERSIONS = ("0.5", "0.4")
DEFAULT_OME_ZARR_VERSION = "0.5"
AXIS_NAMES = ("z", "y", "x")
# UDUNITS-2 names NGFF accepts for space axes, with their size in millimetres (our files' unit).
SPACE_UNITS = {
    "angstrom": 1e-7, "nanometer": 1e-6, "micrometer": 1e-3, "millimeter": 1.0, "centimeter": 10.0,
    "decimeter": 100.0, "meter": 1000.0, "kilometer": 1e6,
    # the rest of the NGFF list (UDUNITS-2 names of lengths)
    "yoctometer": 1e-21, "zeptometer": 1e-18, "attometer": 1e-15, "femtometer": 1e-12, "picometer": 1e-9,
    "hectometer": 1e5, "megameter": 1e9, "gigameter": 1e12, "terameter": 1e15, "petameter": 1e18,
    "exameter": 1e21, "zettameter": 1e24, "yottameter": 1e27, "inch": 25.4, "foot": 304.8, "yard": 914.4,
    "mile": 1609344.0, "parsec": 3.0856775814913673e19,
}
# The packages themselves, not our extra: inside another application's Python (Slicer's) there is no bigvolume
# distribution to take extras from.
ZARR_EXTRA = "pip install 'zarr>=3' 'dask[array]' distributed (Python 3.11 or newer)"


class OmeZarrError(VolumeFileError):
    """An OME-Zarr store whose metadata or chunks cannot be used."""


def import_zarr():
    """The zarr module (v3 API), or one line saying how to install it."""
    try:
        import zarr
    except ImportError:
        raise BigVolumeError(f"OME-Zarr needs the zarr package (version 3): {ZARR_EXTRA}") from None
    if int(zarr.__version__.split(".")[0]) < 3:
        raise BigVolumeError(f"OME-Zarr needs zarr 3 or newer, this Python has zarr {zarr.__version__}: "
                             f"{ZARR_EXTRA}")
    return zarr


def is_zarr_store(path) -> bool:
    """True for a folder that holds a Zarr group or array (v3 ``zarr.json`` or v2 ``.zgroup``/``.zarray``)."""
    path = Path(path)
    return path.is_dir() and any((path / name).is_file() for name in ("zarr.json", ".zgroup", ".zarray"))


@dataclass(frozen=True)
class PyramidLevel:
    """One level of a pyramid: its array's path inside the store and its grid. ``factors`` (I, J, K) are
    cumulative, relative to level 0; ``source`` is the level it was computed from (None for level 0)."""

    path: str
    geometry: Geometry
    factors: tuple[float, float, float] = (1.0, 1.0, 1.0)
    source: str | None = None


def _finite(values, what: str, store) -> list[float]:
    """A JSON list of numbers ("123" was read as [1, 2, 3], ["2", "3"] and booleans as numbers)."""
    if not isinstance(values, (list, tuple)) or any(isinstance(v, (bool, str)) for v in values):
        raise OmeZarrError(f"{store}: {what} {values!r} is not a list of numbers")
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError):
        raise OmeZarrError(f"{store}: {what} {values!r} is not a list of numbers") from None
    if not all(math.isfinite(v) for v in numbers):
        raise OmeZarrError(f"{store}: {what} {values!r} is not finite")
    return numbers


def _level_transform(geometry: Geometry, base: Geometry) -> tuple[list[float], list[float]]:
    """NGFF (scale, translation) of ``geometry`` in z y x order. The translation is level 0's origin plus the
    level's first-voxel offset in the volume's own axes (exactly t0 + s0 (f-1)/2 for an identity direction)."""
    offset = base.direction.T @ (np.asarray(geometry.origin) - np.asarray(base.origin))
    translation = np.asarray(base.origin) + offset
    # rounded like the translation: a rotated grid's spacing carries float noise (2.0000000000000004), and level 0
    # must not look coarser than a level 1 whose spacing came out exact along an axis that was not halved
    return [_round(s) for s in geometry.spacing[::-1]], [_round(t) for t in translation[::-1]]


def _round(value: float) -> float:
    return float(f"{value:.12g}")


def multiscales_attributes(levels: Sequence[PyramidLevel], *, version: str = DEFAULT_OME_ZARR_VERSION,
                           unit: str | None = "millimeter", name: str = "", method: str = "lanczos") -> dict:
    """The attributes of a pyramid's root group: NGFF ``multiscales`` (under ``ome`` for 0.5, top level for 0.4)
    and our ``bigvolume`` record (direction, factors, which level each was computed from, the method). ``unit``
    None: axes without a unit (a store that named none, copied as it was)."""
    if version not in OME_ZARR_VERSIONS:
        raise ValueError(f"OME-Zarr version {version!r}: choose one of {', '.join(OME_ZARR_VERSIONS)}")
    if unit is not None and unit not in SPACE_UNITS:
        raise ValueError(f"unit {unit!r}: choose one of {', '.join(SPACE_UNITS)}")
    base = levels[0].geometry
    datasets = []
    for level in levels:
        scale, translation = _level_transform(level.geometry, base)
        datasets.append({"path": level.path, "coordinateTransformations": [
            {"type": "scale", "scale": scale}, {"type": "translation", "translation": translation}]})
    multiscale = {"name": name, "axes": [{"name": axis, "type": "space", **({"unit": unit} if unit else {})}
                                         for axis in AXIS_NAMES],
                  "datasets": datasets, "type": method,
                  "metadata": {"description": f"{method} anti-aliased downsampling (bigvolume)"}}
    ours = {"coordinates": "LPS", "direction": [[float(v) for v in row] for row in base.direction],
            "method": method,
            "levels": [{"path": level.path, "factors": list(level.factors), "source": level.source}
                       for level in levels]}
    if version == "0.5":
        return {"ome": {"version": "0.5", "multiscales": [multiscale]}, "bigvolume": ours}
    return {"multiscales": [{"version": "0.4", **multiscale}], "bigvolume": ours}


def _multiscale_of(attributes: dict, store) -> tuple[str, dict]:
    ome = attributes.get("ome")
    if isinstance(ome, dict) and "multiscales" in ome:
        return str(ome.get("version", "0.5")), _first(ome["multiscales"], store)
    if "multiscales" in attributes:
        multiscale = _first(attributes["multiscales"], store)
        return str(multiscale.get("version", "0.4")), multiscale
    raise OmeZarrError(f"{store}: no OME-Zarr multiscales metadata (not an OME-Zarr image)")


def _first(multiscales, store) -> dict:
    if not isinstance(multiscales, list) or not multiscales or not isinstance(multiscales[0], dict):
        raise OmeZarrError(f"{store}: the multiscales metadata is empty or not a list")
    return multiscales[0]


def _transforms(transforms, rank: int, store, where: str) -> tuple[list[float] | None, list[float] | None]:
    """(scale, translation) of a list of coordinate transformations as NGFF 0.4/0.5 allow them: one scale, then
    at most one translation, each with a value per axis. Anything else is refused in one line: another order
    (translation first means another origin), a second scale (it was dropped), other types, values in a file."""
    if transforms is None:
        return None, None
    if not isinstance(transforms, list) or not all(isinstance(t, dict) for t in transforms):
        raise OmeZarrError(f"{store}: {where}'s coordinateTransformations are not a list of transformations")
    kinds = [t.get("type") for t in transforms]
    if kinds not in (["scale"], ["scale", "translation"], []):
        raise OmeZarrError(f"{store}: {where}'s coordinateTransformations are {kinds}; OME-Zarr allows one scale, "
                           "then at most one translation")
    found = []
    for transform, kind in zip(transforms, kinds):
        if kind not in transform:  # NGFF's other form: the values in a binary file at "path"
            raise OmeZarrError(f"{store}: {where}'s {kind} gives no values"
                               + (" (values stored in a file are not read)" if "path" in transform else ""))
        values = _finite(transform[kind], f"{where}'s {kind}", store)
        if len(values) != rank:
            raise OmeZarrError(f"{store}: {where}'s {kind} has {len(values)} values for {rank} axes")
        found.append(values)
    return found[0] if found else None, found[1] if len(found) > 1 else None


def dataset_path(path, store) -> str:
    """A level's path as zarr resolves it inside the store: "0/" and "/0" are "0" (they were compared as written,
    and a level given by its folder lost its geometry); a path leaving the store ("..") is refused (an absolute
    one was read from the file system, another array than zarr's)."""
    if not isinstance(path, str):
        raise OmeZarrError(f"{store}: a level's path {path!r} is not a text")
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise OmeZarrError(f"{store}: level path {path!r} leaves the store")
    return "/".join(parts)


@dataclass(frozen=True)
class MultiscaleLayout:
    """What a reader needs from the metadata: the spatial axes' positions among all axes, the unit, and per level
    the path, scale and translation of the three spatial axes (z y x)."""

    version: str
    axes: tuple[str, ...]
    spatial: tuple[int, int, int]
    unit: str
    paths: tuple[str, ...]
    scales: tuple[tuple[float, float, float], ...]
    translations: tuple[tuple[float, float, float], ...]
    direction: np.ndarray
    factors: tuple[tuple[float, float, float] | None, ...]
    sources: tuple[str | None, ...]
    # An OME-Zarr 0.1-0.3 store without scales (coordinateTransformations came with 0.4): :func:`with_legacy_scales`
    # fills them from the levels' shapes, on a unit grid
    scales_from_shapes: bool = False
    channel: int | None = None  # the axis of type channel (or, untyped, named c)


# Before 0.4 the metadata held no coordinate transformations, and before 0.3 no axes: the arrays were t c z y x.
LEGACY_VERSIONS = ("0.1", "0.2", "0.3")
LEGACY_AXES = ("t", "c", "z", "y", "x")


def parse_multiscales(attributes: dict, store="OME-Zarr") -> MultiscaleLayout:
    """Read a root group's attributes. Raises OmeZarrError (naming ``store``) for metadata we cannot place in
    space: no multiscales, spatial axes other than three, scales missing or not positive."""
    version, multiscale = _multiscale_of(attributes, store)
    legacy = version in LEGACY_VERSIONS
    axes = multiscale.get("axes")
    if legacy and not axes:
        axes = list(LEGACY_AXES)
    if not isinstance(axes, list) or not axes:
        raise OmeZarrError(f"{store}: the multiscales metadata lists no axes")
    if any(isinstance(a, dict) and not isinstance(a.get("name"), str) or not isinstance(a, (dict, str))
           for a in axes):
        raise OmeZarrError(f"{store}: an axis of the multiscales metadata has no name")
    names = tuple(str(a.get("name") if isinstance(a, dict) else a) for a in axes)
    types = tuple(a.get("type") if isinstance(a, dict) else None for a in axes)
    spatial = [n for n, (name, kind) in enumerate(zip(names, types))
               if kind == "space" or (kind is None and name.lower() in AXIS_NAMES)]
    channel = next((n for n, (name, kind) in enumerate(zip(names, types))
                    if kind == "channel" or (kind is None and name.lower() == "c")), None)
    if len(spatial) != 3:
        among = f" among {', '.join(names)}" if len(names) != len(spatial) else ""
        raise OmeZarrError(f"{store}: {len(spatial)} space axes ({', '.join(names[n] for n in spatial) or 'none'})"
                           f"{among}; this tool reads 3D volumes")
    check_space_axis_order([names[n] for n in spatial], store)
    unit, to_unit = _spatial_unit(axes, spatial, store)
    datasets = multiscale.get("datasets")
    if not isinstance(datasets, list) or not datasets:
        raise OmeZarrError(f"{store}: the multiscales metadata lists no datasets (levels)")
    global_scale, global_translation = _transforms(multiscale.get("coordinateTransformations"), len(axes), store,
                                                   "the multiscales")
    paths, scales, translations = [], [], []
    scaled_by_shapes = False  # a legacy store without scales (some writers of 0.3 wrote 0.4's transforms: kept)
    for dataset in datasets:
        path = dataset_path(dataset.get("path", "") if isinstance(dataset, dict) else "", store)
        if not path:
            raise OmeZarrError(f"{store}: a level of the multiscales metadata has no path")
        scale, translation = _transforms(dataset.get("coordinateTransformations"), len(axes), store, f"level {path}")
        if scale is None and legacy:
            scale = [1.0] * len(axes)  # until with_legacy_scales knows the shapes
            scaled_by_shapes = True
        if scale is None:
            raise OmeZarrError(f"{store}: level {path} has no scale")
        translation = translation or [0.0] * len(axes)
        if global_scale is not None:  # the transforms for all levels apply after each level's own, scale first
            scale = [s * g for s, g in zip(scale, global_scale)]
            translation = [t * g for t, g in zip(translation, global_scale)]
        if global_translation is not None:
            translation = [t + g for t, g in zip(translation, global_translation)]
        spatial_scale = tuple(scale[n] * c for n, c in zip(spatial, to_unit))
        if not all(s > 0 for s in spatial_scale):
            raise OmeZarrError(f"{store}: level {path}'s scale {spatial_scale} is not positive")
        if scales and any(s < before for s, before in zip(spatial_scale, scales[-1])):
            raise OmeZarrError(f"{store}: level {path} is finer than level {paths[-1]} along an axis; OME-Zarr lists "
                               "the levels finest first")  # (the coarsest was read as level 0)
        if path in paths:
            raise OmeZarrError(f"{store}: level {path} is listed twice")
        paths.append(path)
        scales.append(spatial_scale)
        translations.append(tuple(translation[n] * c for n, c in zip(spatial, to_unit)))
    direction, factors, sources = _our_record(attributes, paths, store)
    return MultiscaleLayout(version, names, tuple(spatial), unit or "", tuple(paths), tuple(scales),
                            tuple(translations), direction, factors, sources, scaled_by_shapes, channel)


def _our_record(attributes: dict, paths: Sequence[str], store):
    """(direction, factors per level, source per level) from our ``bigvolume`` attribute; a record that is not
    what we write is refused in one line (it was a TypeError, or a ValueError not naming the store)."""
    ours = attributes.get("bigvolume")
    if ours is None:
        ours = {}
    if not isinstance(ours, dict):
        raise OmeZarrError(f"{store}: the bigvolume attribute is not a record (a JSON object)")
    direction = np.eye(3)
    if "direction" in ours:
        values = ours["direction"]  # rows, as we write it (or the 9 numbers in a row)
        rows = isinstance(values, list) and len(values) == 3 and all(isinstance(r, list) and len(r) == 3
                                                                      for r in values)
        if not (rows or isinstance(values, list) and len(values) == 9):
            raise OmeZarrError(f"{store}: bigvolume.direction is not a 3 x 3 matrix")
        flat = [v for row in values for v in row] if rows else values
        direction = np.array(_finite(flat, "bigvolume.direction", store)).reshape(3, 3)
        if not orthonormal(direction):
            raise OmeZarrError(f"{store}: bigvolume.direction is not a rotation matrix")
    levels = ours.get("levels", [])
    if not isinstance(levels, list) or not all(isinstance(r, dict) for r in levels):
        raise OmeZarrError(f"{store}: bigvolume.levels is not a list of records")
    records = {dataset_path(str(r.get("path", "")), store): r for r in levels}
    factors = []
    for path in paths:
        record = records.get(path, {})
        if "factors" not in record:
            factors.append(None)
            continue
        values = _finite(record["factors"], f"bigvolume.levels' factors of level {path}", store)
        if len(values) != 3 or min(values) < 1:
            raise OmeZarrError(f"{store}: bigvolume.levels' factors of level {path} are not three factors >= 1")
        factors.append(tuple(values))
    sources = tuple(records[p].get("source") if p in records else None for p in paths)
    return direction, tuple(factors), sources


def other_image_paths(attributes: dict, store) -> list[str]:
    """The level paths of the images after the first in a multiscales list (this tool reads the first)."""
    ome = attributes.get("ome")  # (where _multiscale_of finds the list)
    multiscales = (ome["multiscales"] if isinstance(ome, dict) and "multiscales" in ome
                   else attributes.get("multiscales"))
    paths = []
    for multiscale in (multiscales[1:] if isinstance(multiscales, list) else []):
        for dataset in multiscale.get("datasets", []) if isinstance(multiscale, dict) else []:
            if isinstance(dataset, dict) and isinstance(dataset.get("path"), str):
                paths.append(dataset_path(dataset["path"], store))
    return paths


def check_space_axis_order(names: Sequence[str], store) -> None:
    """Space axes named z, y and x in another order (NGFF: they SHOULD be z y x) are refused in one line: they were
    read as z y x, a transposed volume with its spacing on the wrong axes. Names compare without case (X, Y, Z)."""
    names = [str(name) for name in names]
    if {name.lower() for name in names} == set(AXIS_NAMES) and tuple(n.lower() for n in names) != AXIS_NAMES:
        raise OmeZarrError(f"{store}: the space axes are in the order {', '.join(names)}; this tool reads them in the "
                           "order z, y, x (NGFF's order): transpose the arrays, or rewrite the store")


def _spatial_unit(axes: list, spatial: Sequence[int], store) -> tuple[str, tuple[float, float, float]]:
    """The unit of the space axes, and what multiplies each axis's numbers to put them in it. One unit on all
    three: that unit, numbers as written (none: ""). Units that differ (z in micrometres, y and x in nanometres):
    millimetres, each axis converted, never one axis's numbers read in another's unit. Some axes without a unit
    beside named ones, or a unit we do not know: refused in one line."""
    units = [axes[n].get("unit") or None if isinstance(axes[n], dict) else None for n in spatial]
    names = [str(axes[n].get("name") if isinstance(axes[n], dict) else axes[n]) for n in spatial]
    for unit in units:
        if unit is not None and (not isinstance(unit, str) or unit not in SPACE_UNITS):
            raise OmeZarrError(f"{store}: unknown space unit {unit!r}")
    if len(set(units)) == 1:
        return units[0] or "", (1.0, 1.0, 1.0)
    if None in units:
        missing = ", ".join(name for name, unit in zip(names, units) if unit is None)
        given = ", ".join(f"{name} in {unit}" for name, unit in zip(names, units) if unit is not None)
        raise OmeZarrError(f"{store}: axis {missing} has no unit beside {given}; give every space axis its unit")
    return "millimeter", tuple(SPACE_UNITS[unit] for unit in units)  # type: ignore[return-value]


def with_legacy_scales(layout: MultiscaleLayout, shapes_zyx: Sequence[Sequence[int]]) -> MultiscaleLayout:
    """An OME-Zarr 0.1-0.3 layout with each level's scale from its shape: level 0 on a unit grid, level k's
    spacing level 0's size over its own along each axis, its first voxel where level 0's is (those writers
    decimated: every n-th voxel). Other layouts as they are."""
    if not layout.scales_from_shapes:
        return layout

    def factor(n0: int, n: int) -> float:
        whole = max(1, round(n0 / max(1, n)))  # an integer factor whose decimated or binned size is n
        return float(whole) if n in (n0 // whole, -(-n0 // whole)) else n0 / max(1, n)

    scales = tuple(tuple(factor(n0, n) for n0, n in zip(shapes_zyx[0], shape)) for shape in shapes_zyx)
    return dataclasses.replace(layout, scales=scales, translations=((0.0, 0.0, 0.0),) * len(scales))


def scaled_geometry(geometry: Geometry, factor: float) -> Geometry:
    """``geometry`` with its lengths (spacing, origin) multiplied by ``factor``: a change of unit, e.g.
    SPACE_UNITS["micrometer"] from micrometres to millimetres."""
    if factor == 1.0:
        return geometry
    return Geometry(geometry.dimensions, tuple(float(v) * factor for v in geometry.spacing),
                    tuple(float(v) * factor for v in geometry.origin), geometry.direction)


def level_geometry(layout: MultiscaleLayout, level: int, shape_zyx: Sequence[int]) -> Geometry:
    """The LPS geometry of level ``level`` whose spatial array shape is ``shape_zyx``. Spacing and origin are in
    the metadata's unit (the numbers as written; io/zarr_input converts them to millimetres for volumes)."""
    scale, translation = layout.scales[level], layout.translations[level]
    t0 = np.asarray(layout.translations[0][::-1])
    offset = np.asarray(translation[::-1]) - t0
    origin = t0 + layout.direction @ offset
    return Geometry(tuple(int(n) for n in shape_zyx[::-1]), tuple(scale[::-1]),
                    tuple(_round(v) for v in origin), layout.direction)


def read_attributes(store: Path) -> dict:
    """The root attributes of a local Zarr store, v3 (``zarr.json``) or v2 (``.zattrs``), without zarr itself."""
    for name, key in (("zarr.json", "attributes"), (".zattrs", None)):
        file = store / name
        if file.is_file():
            try:
                document = json.loads(file.read_text(encoding="utf-8"))
            except (OSError, ValueError) as error:
                raise OmeZarrError(f"{file}: unreadable metadata ({error})") from None
            if not isinstance(document, dict):
                raise OmeZarrError(f"{file}: the metadata is not a JSON object")
            return document.get(key, {}) if key else document
    raise OmeZarrError(f"{store}: not a Zarr store (no zarr.json or .zattrs)")
