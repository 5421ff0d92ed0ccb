"""OME-Zarr multiscales metadata (bigvolume.io.ome_zarr): levels written as NGFF scale/translation and read back
to the same LPS geometry, for both versions, any direction, anisotropic spacing and non-zero origins."""
import json

import numpy as np
import pytest

from bigvolume.core.geometry import Geometry
from bigvolume.io.ome_zarr import (OmeZarrError, PyramidLevel, level_geometry, multiscales_attributes,
                                   parse_multiscales, read_attributes)


def _rotation(seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    return q * np.sign(np.linalg.det(q))


def _levels(geometry, factor_steps):
    levels, factors = [PyramidLevel("0", geometry)], np.ones(3)
    for n, step in enumerate(factor_steps, start=1):
        factors = factors * np.asarray(step, float)
        levels.append(PyramidLevel(str(n), geometry.downsampled(tuple(factors)), tuple(factors), str(n - 1)))
    return levels


GEOMETRIES = [
    Geometry((64, 48, 20), (0.5, 0.5, 2.0), (-12.5, 30.25, 7.0)),
    Geometry((33, 17, 9), (0.1, 0.2, 0.3), (1.0, -2.0, 3.0), np.diag([-1.0, 1.0, -1.0])),
    Geometry((40, 40, 40), (1.0, 1.0, 1.0), (5.0, 6.0, -7.0), _rotation(1)),
    Geometry((25, 31, 12), (0.7, 0.9, 1.3), (0.0, 0.0, 0.0), _rotation(7)),
]


@pytest.mark.parametrize("version", ["0.5", "0.4"])
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: "x".join(map(str, g.dimensions)))
def test_levels_round_trip_to_the_same_lps_geometry(version, geometry):
    levels = _levels(geometry, [(2, 2, 1), (2, 2, 2), (3, 3, 3)])
    attributes = json.loads(json.dumps(multiscales_attributes(levels, version=version)))
    layout = parse_multiscales(attributes, "test")
    assert layout.version == version and layout.paths == ("0", "1", "2", "3")
    assert layout.sources == (None, "0", "1", "2")
    for n, level in enumerate(levels):
        back = level_geometry(layout, n, level.geometry.shape)
        assert back.isclose(level.geometry, rtol=1e-10, atol=1e-9), (n, back, level.geometry)
        assert layout.factors[n] == pytest.approx(level.factors)


def test_identity_direction_gives_the_ngff_block_centred_rule():
    geometry = Geometry((100, 80, 30), (0.25, 0.3, 1.5), (10.0, -4.0, 2.5))
    levels = _levels(geometry, [(2, 2, 1), (2, 2, 2)])
    multiscale = multiscales_attributes(levels)["ome"]["multiscales"][0]
    assert [a["name"] for a in multiscale["axes"]] == ["z", "y", "x"]
    assert {a["type"] for a in multiscale["axes"]} == {"space"}
    t0 = np.array(geometry.origin[::-1])
    s0 = np.array(geometry.spacing[::-1])
    for level, dataset in zip(levels, multiscale["datasets"]):
        scale, translation = (t[t["type"]] for t in dataset["coordinateTransformations"])
        f = np.array(level.factors[::-1])
        np.testing.assert_allclose(scale, s0 * f, rtol=1e-12)
        np.testing.assert_allclose(translation, t0 + s0 * (f - 1) / 2, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("attributes, words", [
    ({}, "no OME-Zarr multiscales"),
    ({"ome": {"version": "0.5", "multiscales": []}}, "empty"),
    ({"multiscales": [{"axes": [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
                       "datasets": [{"path": "0"}]}]}, "2 space axes"),
    ({"multiscales": [{"axes": ["z", "y", "x"], "datasets": [{"path": "0", "coordinateTransformations": [
        {"type": "scale", "scale": [1, 0, 1]}]}]}]}, "not positive"),
    ({"multiscales": [{"axes": ["z", "y", "x"], "datasets": [{"path": "0", "coordinateTransformations": []}]}]},
     "no scale"),
    ({"multiscales": [{"axes": ["z", "y", "x"], "datasets": [{"path": "0", "coordinateTransformations": [
        {"type": "scale", "scale": [1, "a", 1]}]}]}]}, "not a list of numbers"),
])
def test_bad_metadata_is_one_line_naming_the_store(attributes, words):
    with pytest.raises(OmeZarrError) as caught:
        parse_multiscales(attributes, "/data/x.ome.zarr")
    message = str(caught.value)
    assert message.startswith("/data/x.ome.zarr: ") and words in message and "\n" not in message


def test_time_and_channel_axes_are_placed(tmp_path):
    attributes = {"multiscales": [{"version": "0.4", "axes": [
        {"name": "t", "type": "time"}, {"name": "c", "type": "channel"}, {"name": "z", "type": "space",
                                                                          "unit": "micrometer"},
        {"name": "y", "type": "space", "unit": "micrometer"}, {"name": "x", "type": "space", "unit": "micrometer"}],
        "datasets": [{"path": "s0", "coordinateTransformations": [
            {"type": "scale", "scale": [1, 1, 4.0, 0.5, 0.25]},
            {"type": "translation", "translation": [0, 0, 8.0, 1.0, 2.0]}]}]}]}
    (tmp_path / ".zattrs").write_text(json.dumps(attributes))
    layout = parse_multiscales(read_attributes(tmp_path), tmp_path)
    assert layout.spatial == (2, 3, 4) and layout.unit == "micrometer"
    geometry = level_geometry(layout, 0, (10, 20, 30))
    assert geometry.dimensions == (30, 20, 10) and geometry.spacing == (0.25, 0.5, 4.0)
    assert geometry.origin == (2.0, 1.0, 8.0)


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_transforms_for_all_levels_apply_after_each_level_s_own(version):
    """NGFF: the multiscale's own coordinateTransformations (scale, then translation) follow each dataset's; the
    translation for all levels was dropped (every origin silently moved to the levels' own)."""
    datasets = [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 1, 1]}]},
                {"path": "1", "coordinateTransformations": [{"type": "scale", "scale": [2, 2, 2]},
                                                            {"type": "translation", "translation": [0.5, 0.5, 0.5]}]}]
    multiscale = {"axes": [{"name": axis, "type": "space", "unit": "millimeter"} for axis in "zyx"],
                  "datasets": datasets, "coordinateTransformations": [
                      {"type": "scale", "scale": [2.0, 0.5, 0.25]}, {"type": "translation", "translation": [10, 20, 30]}]}
    attributes = ({"multiscales": [{"version": "0.4", **multiscale}]} if version == "0.4"
                  else {"ome": {"version": "0.5", "multiscales": [multiscale]}})
    layout = parse_multiscales(attributes, "store")
    first, second = level_geometry(layout, 0, (8, 10, 12)), level_geometry(layout, 1, (4, 5, 6))
    assert first.spacing == (0.25, 0.5, 2.0) and first.origin == (30.0, 20.0, 10.0)
    assert second.spacing == (0.5, 1.0, 4.0) and second.origin == pytest.approx((30.125, 20.25, 11.0), abs=1e-12)


@pytest.mark.parametrize("units", [("micrometer", "nanometer", "nanometer"), ("millimeter", "micrometer", "meter"),
                                   ("nanometer", "nanometer", "micrometer")])
def test_space_axes_in_different_units_are_each_converted(units):
    """z in micrometres and y, x in nanometres: each axis's numbers in its own unit, all converted to millimetres
    (they were all read as numbers without a unit: micrometres and nanometres taken for millimetres)."""
    from bigvolume.io.ome_zarr import SPACE_UNITS
    axes = [{"name": axis, "type": "space", "unit": unit} for axis, unit in zip("zyx", units)]
    datasets = [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [4.0, 0.5, 0.25]},
                                                            {"type": "translation", "translation": [8.0, 1.0, 2.0]}]},
                {"path": "1", "coordinateTransformations": [{"type": "scale", "scale": [8.0, 1.0, 0.5]},
                                                            {"type": "translation", "translation": [10.0, 1.25, 2.125]}]}]
    layout = parse_multiscales({"multiscales": [{"version": "0.4", "axes": axes, "datasets": datasets}]}, "s")
    to_mm = [SPACE_UNITS[unit] for unit in units[::-1]]  # x y z
    assert layout.unit == "millimeter"
    for level, (scale, translation) in enumerate([((4.0, 0.5, 0.25), (8.0, 1.0, 2.0)),
                                                  ((8.0, 1.0, 0.5), (10.0, 1.25, 2.125))]):
        geometry = level_geometry(layout, level, (5, 6, 7))
        np.testing.assert_allclose(geometry.spacing, np.multiply(scale[::-1], to_mm), rtol=1e-12)
        np.testing.assert_allclose(geometry.origin, np.multiply(translation[::-1], to_mm), rtol=1e-12)


@pytest.mark.parametrize("units, words", [
    (("micrometer", None, "micrometer"), "axis y has no unit beside z in micrometer, x in micrometer"),
    ((None, "nanometer", "micrometer"), "axis z has no unit"),
    (("micrometer", "micrometer", "pixel"), "unknown space unit 'pixel'"),
    (("furlong", None, None), "unknown space unit 'furlong'")])
def test_space_units_that_cannot_be_placed_are_refused_in_one_line(units, words):
    axes = [{"name": axis, "type": "space", **({"unit": unit} if unit else {})} for axis, unit in zip("zyx", units)]
    datasets = [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0, 1.0, 1.0]}]}]
    with pytest.raises(OmeZarrError) as caught:
        parse_multiscales({"multiscales": [{"version": "0.4", "axes": axes, "datasets": datasets}]}, "/d/s.zarr")
    assert str(caught.value).startswith("/d/s.zarr: ") and words in str(caught.value), caught.value


@pytest.mark.parametrize("order", ["xyz", "zxy", "yzx", "XYZ", "XzY"])
def test_space_axes_named_in_another_order_are_refused(order):
    """x y z was read as z y x: a transposed, mirrored volume with its spacing on the wrong axes, silently (and X Y Z
    still so: names are compared without case)."""
    axes = [{"name": axis, "type": "space", "unit": "millimeter"} for axis in order]
    datasets = [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [3.0, 1.0, 0.5]}]}]
    with pytest.raises(OmeZarrError) as caught:
        parse_multiscales({"multiscales": [{"version": "0.4", "axes": axes, "datasets": datasets}]}, "/d/s.zarr")
    assert str(caught.value).startswith("/d/s.zarr: ") and f"order {', '.join(order)}" in str(caught.value)


@pytest.mark.parametrize("unit, millimetres", [("picometer", 1e-9), ("inch", 25.4), ("foot", 304.8)])
def test_every_ngff_length_unit_is_read(unit, millimetres):
    """NGFF's space units are UDUNITS-2's lengths: picometer, inch, foot were refused as unknown."""
    from bigvolume.io.ome_zarr import SPACE_UNITS
    axes = [{"name": axis, "type": "space", "unit": unit} for axis in "zyx"]
    datasets = [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [3.0, 1.0, 0.5]}]}]
    layout = parse_multiscales({"multiscales": [{"version": "0.4", "axes": axes, "datasets": datasets}]}, "s")
    assert layout.unit == unit and SPACE_UNITS[unit] == millimetres


def test_a_rotated_grid_s_levels_never_look_finer_than_the_level_below():
    """A rotated grid's spacing carries float noise (2.0000000000000004): level 0's scale kept it, level 1's (an axis
    not halved) came out 2.0, and ome-zarr-models refused the store (level 0 coarser than level 1)."""
    direction = _rotation(3)
    noisy = Geometry((40, 30, 20), (1.0000000000000002, 0.9999999999999999, 2.0000000000000004), (1.0, 2.0, 3.0),
                     direction)
    levels = _levels(noisy, [(2, 2, 1)])
    attributes = multiscales_attributes(levels, version="0.4")
    scales = [d["coordinateTransformations"][0]["scale"] for d in attributes["multiscales"][0]["datasets"]]
    assert scales[0] == [2.0, 1.0, 1.0] and all(b >= a for a, b in zip(scales[0], scales[1])), scales


@pytest.mark.parametrize("name, kind", [("c", "channel"), ("channel", "channel"), ("C", None), ("c", None)])
def test_the_channel_axis_is_found_by_its_type_or_its_name(name, kind):
    """An axis of type channel named otherwise than c was taken for a series (refused: '3 elements, not a series')."""
    axes = [{"name": name, **({"type": kind} if kind else {})}] + [{"name": a, "type": "space"} for a in "zyx"]
    datasets = [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0, 3.0, 1.0, 0.5]}]}]
    layout = parse_multiscales({"multiscales": [{"version": "0.4", "axes": axes, "datasets": datasets}]}, "s")
    assert layout.channel == 0 and layout.spatial == (1, 2, 3)


def _store(datasets=None, transforms=None, axes=None, ours=None):
    """0.4 attributes of z y x axes in micrometres, levels "0" and "1" by default."""
    if datasets is None:
        datasets = [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [2.0, 1.0, 1.0]}]},
                    {"path": "1", "coordinateTransformations": [{"type": "scale", "scale": [4.0, 2.0, 2.0]}]}]
    multiscale = {"version": "0.4", "datasets": datasets,
                  "axes": axes or [{"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"]}
    if transforms is not None:
        multiscale["coordinateTransformations"] = transforms
    attributes = {"multiscales": [multiscale]}
    if ours is not None:
        attributes["bigvolume"] = ours
    return attributes


def _one(transforms):
    return _store([{"path": "0", "coordinateTransformations": transforms}])


SCALE, TRANSLATION = {"type": "scale", "scale": [2, 3, 4]}, {"type": "translation", "translation": [1, 2, 3]}


@pytest.mark.parametrize("attributes, words", [
    (_one([TRANSLATION, SCALE]), "coordinateTransformations are ['translation', 'scale']; OME-Zarr allows one scale"),
    (_one([SCALE, {"type": "scale", "scale": [10, 10, 10]}]), "are ['scale', 'scale']"),
    (_one([SCALE, TRANSLATION, TRANSLATION]), "are ['scale', 'translation', 'translation']"),
    (_one([{"type": "affine", "affine": [1] * 12}]), "are ['affine']"),
    (_one([{"type": "identity"}]), "are ['identity']"),
    (_one([{"type": "scale", "path": "s.bin"}]), "gives no values (values stored in a file are not read)"),
    (_one([{"type": "scale", "scale": "123"}]), "scale '123' is not a list of numbers"),
    (_one([{"type": "scale", "scale": ["2", "3", "4"]}]), "is not a list of numbers"),
    (_one([{"type": "scale", "scale": [True, True, True]}]), "is not a list of numbers"),
    (_one({"type": "scale", "scale": [1, 1, 1]}), "are not a list of transformations"),
    (_store(transforms=[TRANSLATION, SCALE]), "the multiscales's coordinateTransformations are ['translation', "),
    (_store(axes=[{"type": "space", "unit": "micrometer"}] * 3), "an axis of the multiscales metadata has no name"),
    (_store(axes=[{"name": n, "type": "space", "unit": ["micrometer"]} for n in "zyx"]), "unknown space unit"),
    (_store(axes=[{"name": n, "type": "space", "unit": {"u": 1}} for n in "zyx"]), "unknown space unit"),
    (_store(list(reversed(_store()["multiscales"][0]["datasets"]))), "level 0 is finer than level 1 along an axis"),
    (_store([{"path": "0", "coordinateTransformations": [SCALE]}] * 2), "level 0 is listed twice"),
    (_store([{"path": "../0", "coordinateTransformations": [SCALE]}]), "level path '../0' leaves the store"),
    (_store([{"path": 0, "coordinateTransformations": [SCALE]}]), "a level's path 0 is not a text"),
    (_store(ours={"levels": 5}), "bigvolume.levels is not a list of records"),
    (_store(ours=[1, 2]), "the bigvolume attribute is not a record"),
    (_store(ours={"levels": [{"path": "0", "factors": 5}]}), "factors of level 0 5 is not a list of numbers"),
    (_store(ours={"levels": [{"path": "0", "factors": "abc"}]}), "is not a list of numbers"),
    (_store(ours={"levels": [{"path": "1", "factors": [0.5, 1, 1]}]}), "are not three factors >= 1"),
    (_store(ours={"direction": [1, 0, 0]}), "bigvolume.direction is not a 3 x 3 matrix"),
    (_store(ours={"direction": [[1, 0], [0, 1]]}), "bigvolume.direction is not a 3 x 3 matrix"),
    (_store(ours={"direction": [[1, 0, 0], [0, 1], [0, 0, 1]]}), "bigvolume.direction is not a 3 x 3 matrix"),
])
def test_metadata_ngff_does_not_allow_is_refused_not_read_another_way(attributes, words):
    """Found by a helper writing 577 stores: a translation before the scale was applied after it (another
    origin), a second scale dropped, unknown transformation types skipped, "123" read as [1, 2, 3], coarse-first
    levels read the coarsest as level 0; units and our own record of other JSON types were tracebacks."""
    with pytest.raises(OmeZarrError) as caught:
        parse_multiscales(attributes, "/data/x.ome.zarr")
    message = str(caught.value)
    assert message.startswith("/data/x.ome.zarr: ") and words in message and "\n" not in message


@pytest.mark.parametrize("written, read", [("0/", "0"), ("/0", "0"), ("./0", "0"), ("a//b/", "a/b"), ("s0", "s0")])
def test_level_paths_are_read_as_zarr_resolves_them(written, read):
    attributes = _store([{"path": written, "coordinateTransformations": [SCALE]}],
                        ours={"levels": [{"path": written, "factors": [1, 1, 1]}], "direction": [1, 0, 0, 0, 1, 0,
                                                                                                  0, 0, 1]})
    layout = parse_multiscales(attributes, "/data/x.ome.zarr")
    assert layout.paths == (read,) and layout.factors == ((1.0, 1.0, 1.0),)
    np.testing.assert_array_equal(layout.direction, np.eye(3))
