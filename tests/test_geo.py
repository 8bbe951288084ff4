import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyproj import Geod

from helpers import geo

COPENHAGEN = (55.6761, 12.5683)  # City Hall Square, (lat, lng) degrees
AARHUS = (56.1572, 10.2107)

lats = st.floats(54.0, 58.0)
lngs = st.floats(7.5, 15.5)
points = st.tuples(lats, lngs)


def test_copenhagen_to_aarhus_matches_the_ellipsoid_within_half_a_percent():
    km = geo.haversine_km(*COPENHAGEN, *AARHUS)
    _, _, metres = Geod(ellps="WGS84").inv(COPENHAGEN[1], COPENHAGEN[0], AARHUS[1], AARHUS[0])
    assert 150 < km < 160
    assert abs(km - metres / 1000) / (metres / 1000) < 0.005


def test_known_arcs():
    # a quarter of a meridian, and one degree of longitude on the equator
    assert geo.haversine_km(0, 0, 90, 0) == pytest.approx(np.pi / 2 * geo.EARTH_RADIUS_KM)
    assert geo.haversine_km(0, 0, 0, 1) == pytest.approx(2 * np.pi * geo.EARTH_RADIUS_KM / 360)


def test_broadcasting_one_against_many():
    distances = geo.haversine_km(*COPENHAGEN, np.array([55.6761, 56.1572]), np.array([12.5683, 10.2107]))
    assert distances.shape == (2,) and distances[0] == 0


@given(points, points)
def test_symmetric_and_non_negative(a, b):
    assert geo.haversine_km(*a, *b) == pytest.approx(geo.haversine_km(*b, *a), abs=1e-9)
    assert geo.haversine_km(*a, *b) >= 0


@given(points, points, points)
def test_triangle_inequality(a, b, c):
    assert geo.haversine_km(*a, *c) <= geo.haversine_km(*a, *b) + geo.haversine_km(*b, *c) + 1e-9


@given(st.lists(points, min_size=1, max_size=12))
def test_pairwise_matrix(point_list):
    matrix = geo.pairwise_haversine_km(point_list)
    assert matrix.shape == (len(point_list), len(point_list))
    assert np.allclose(np.diag(matrix), 0)
    assert np.allclose(matrix, matrix.T)


def test_points_from_latlng_refuses_missing_coordinates():
    with pytest.raises(ValueError, match="1 of 2 points have a missing"):
        geo.points_from_latlng([56.1, np.nan], [10.2, 10.3])


def test_assign_municipality_inside_coast_and_abroad(municipalities):
    pts = geo.points_from_latlng(
        [56.1572, 55.6761, 56.1400, 55.6050],
        [10.2107, 12.5683, 10.2400, 13.0030],  # Aarhus, Copenhagen, Aarhus Bay just off the beach, Malmö
    )
    with pytest.warns(UserWarning, match=r"1 of 4 points .* \(55.6050, 13.0030\)"):
        assigned = geo.assign_municipality(pts, municipalities)
    assert list(assigned["municipality"]) == ["Aarhus", "København", "Aarhus"]
    assert assigned.attrs["assignment"] == {"inside": 2, "nearest": 1, "dropped": 1}
    assert 0 < assigned["offshore_km"].iloc[2] < 5
    assert 3 not in assigned.index  # Malmö is dropped, the others keep their index


def test_report_locations_all_land_in_a_municipality(report_locations, municipalities):
    assigned = geo.assign_municipality(report_locations, municipalities)
    counts = assigned.attrs["assignment"]
    assert counts["dropped"] == 0 and len(assigned) == 42_570
    assert counts["nearest"] / len(assigned) < 0.005  # the data README: about 0.2 %
    assert assigned["municipality"].nunique() == 98
