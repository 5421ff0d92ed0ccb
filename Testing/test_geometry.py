"""The block-centred grid: exact spacing, origin, dimensions, LPS/RAS, and the ways of choosing factors."""
import math

import numpy as np
import pytest

from bigvolume.core.geometry import (Geometry, block_centres, factors_for_size, factors_for_spacing, isotropic_factors,
                                output_size, validate_factors)


def rotation(degrees, flip=False):
    a = math.radians(degrees)
    r = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1.0]])
    return r @ np.diag([1, 1, -1.0]) if flip else r


@pytest.mark.parametrize("factors", [(4, 4, 4), (2, 3, 1), (2.5, 1.5, 3.2), (1.0, 1.0, 7.0)])
def test_spacing_and_origin_are_block_centred(factors):
    geometry = Geometry((101, 64, 37), (0.7, 0.31, 2.5), (-12.5, 40.0, 3.25), rotation(30, flip=True))
    out = geometry.downsampled(factors)
    for axis in range(3):
        assert out.spacing[axis] == pytest.approx(factors[axis] * geometry.spacing[axis], rel=1e-12)
        assert out.dimensions[axis] == max(1, math.floor(geometry.dimensions[axis] / factors[axis] + 0.5))
    # Output voxel 0 sits at the centre of input voxels 0 .. f-1: index (f-1)/2 in the input's IJK frame.
    expected_origin = geometry.physical_point([(f - 1) / 2 for f in factors])
    np.testing.assert_allclose(out.origin, expected_origin, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(out.direction, geometry.direction)
    # Output voxel i covers input f*i .. f*i+f-1: its centre in the input frame is (f-1)/2 + f*i.
    last = [d - 1 for d in out.dimensions]
    np.testing.assert_allclose(out.physical_point(last),
                               geometry.physical_point([(f - 1) / 2 + f * i for f, i in zip(factors, last)]),
                               atol=1e-9)


def test_physical_extent_is_kept_within_half_an_output_voxel():
    geometry = Geometry((513, 100, 31), (0.5, 1.0, 3.0))
    for factor in (2, 3, 4, 2.5, 7.3):
        out = geometry.downsampled(factor)
        for e_in, e_out, s_out in zip(geometry.extent, out.extent, out.spacing):
            assert abs(e_in - e_out) <= s_out / 2 + 1e-9


def test_familiar_numbers_are_exact():
    out = Geometry((300, 300, 300), (0.7, 0.7, 0.7)).downsampled(3)
    assert out.spacing == (2.1, 2.1, 2.1)
    assert Geometry((512,) * 3, (1.0,) * 3).downsampled(4).spacing == (4.0, 4.0, 4.0)
    assert Geometry((512,) * 3, (1.0,) * 3).downsampled(4).origin == (1.5, 1.5, 1.5)
    assert Geometry((512,) * 3).downsampled(4).dimensions == (128, 128, 128)


def test_block_centres_and_output_size():
    np.testing.assert_allclose(block_centres(3, 4), [1.5, 5.5, 9.5])
    assert output_size(10, 4) == 3  # 2.5 rounds up
    assert output_size(9, 4) == 2
    assert output_size(3, 8) == 1


def test_ras_round_trip_and_lps_sign():
    geometry = Geometry((10, 20, 30), (0.5, 0.6, 1.2), (1.0, 2.0, 3.0), rotation(45, flip=True))
    matrix = geometry.ijk_to_ras()
    np.testing.assert_allclose(matrix[:3, 3], [-1.0, -2.0, 3.0])
    np.testing.assert_allclose(matrix[:3, :3], np.diag([-1, -1, 1.0]) @ geometry.direction @ np.diag(geometry.spacing))
    back = Geometry.from_ijk_to_ras(matrix, geometry.dimensions)
    assert back.isclose(geometry)


@pytest.mark.parametrize("bad", [0, -1, float("nan"), 0.5, (2, 2), (1, 0, 1)])
def test_bad_factors_are_refused(bad):
    with pytest.raises(ValueError):
        validate_factors(bad)


def test_factors_from_spacing_isotropic_and_size():
    geometry = Geometry((200, 200, 50), (0.5, 0.5, 2.0))
    assert factors_for_spacing(geometry, (1.0, 1.5, 4.0)) == (2.0, 3.0, 2.0)
    with pytest.raises(ValueError, match="finer"):
        factors_for_spacing(geometry, (0.25, 1, 4))
    assert isotropic_factors(geometry, 2) == (2.0, 2.0, 1.0)  # 1 mm everywhere would upsample z: z kept at 2 mm
    iso = geometry.downsampled(isotropic_factors(geometry, 8))
    assert iso.spacing == (4.0, 4.0, 4.0)
    target = 20_000
    factors = factors_for_size(geometry, 2, target)
    out = geometry.downsampled(factors)
    assert out.voxel_count * 2 <= target
    assert geometry.downsampled([f * 0.95 for f in factors]).voxel_count * 2 > target  # not needlessly small


@pytest.mark.parametrize("origin", [(12345678.123456789, -9876543.987654321, 5555555.555555555),
                                    (-4e6 + 0.1, 2.5e5 + 0.03, 1e7 + 0.7), (0.1, 0.2, 0.3)])
@pytest.mark.parametrize("factor", [1, 2, 3.5])
def test_far_origins_keep_their_digits(origin, factor):
    """Origins were rounded to 12 significant digits: 12345678.1234 mm moved by 4.3e-5 mm at factor 1 (a helper,
    both doors). Rounding is now to 12 digits of the spacing: noise goes, positions stay."""
    geometry = Geometry((20, 20, 20), (0.7, 0.3, 1.1), origin)
    grid = geometry.downsampled(factor)
    expected = np.add(origin, np.multiply((factor - 1) / 2, (0.7, 0.3, 1.1)))
    np.testing.assert_allclose(grid.origin, expected, rtol=0, atol=1e-9)
    cropped = geometry.cropped(((3, 9), (2, 8), (1, 7)))
    np.testing.assert_allclose(cropped.origin, np.add(origin, (0.7, 0.6, 3.3)), rtol=0, atol=1e-9)
    assert Geometry((9, 9, 9), (0.7, 0.7, 0.7)).downsampled(3).spacing == (2.1, 2.1, 2.1)  # noise still goes
