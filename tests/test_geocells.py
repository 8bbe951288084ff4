import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from helpers import datasets, geo


@pytest.fixture(scope="module")
def located(report_locations, municipalities):
    return geo.assign_municipality(report_locations, municipalities)


@pytest.fixture(scope="module")
def geocells(located, municipalities):
    return geo.make_geocells(located, municipalities, n_cells=129, seed=0)


def test_report_cells_are_rebuilt(geocells, located):
    labels, cells = geocells
    assert len(cells) == 129 and sorted(labels.unique()) == list(range(129))
    assert cells["municipality"].nunique() == 98
    assert cells["n_points"].sum() == len(located) == len(labels)
    ari = adjusted_rand_score(located.loc[labels.index, "report_cell"], labels)
    assert ari >= 0.8, ari


def test_centroids_are_the_mean_of_each_cells_points(geocells, located):
    labels, cells = geocells
    means = located.loc[labels.index, ["lat", "lng"]].groupby(labels).mean()
    assert np.allclose(cells.set_index("cell").loc[means.index, ["lat", "lng"]], means)


def test_cell_regions_contain_their_own_points_and_tile_denmark(geocells, located, municipalities):
    labels, cells = geocells
    again = geo.assign_area(located, cells, ["cell"])
    assert (again["cell"].astype(int) == labels.loc[again.index]).all()
    land_km2 = municipalities.to_crs(geo.METRIC_CRS).area.sum() / 1e6
    christianso = municipalities[municipalities["name"] == "Christiansø"].to_crs(geo.METRIC_CRS).area.sum()
    christianso /= 1e6
    assert cells["area_km2"].sum() == pytest.approx(land_km2 - christianso, rel=1e-5)


def test_splitting_only_divides_municipalities(geocells):
    _, cells = geocells
    split = cells[cells["name"] != cells["municipality"]]
    assert (split["name"].str.len() > split["municipality"].str.len()).all()
    assert cells.groupby("municipality").size().max() > 1  # Copenhagen and Aarhus were split


def test_same_seed_same_cells_and_a_new_seed_changes_little(geocells, located, municipalities):
    labels, _ = geocells
    again, _ = geo.make_geocells(located, municipalities, n_cells=129, seed=0)
    assert again.equals(labels)
    other, _ = geo.make_geocells(located, municipalities, n_cells=129, seed=1)
    assert adjusted_rand_score(labels, other) > 0.95


def test_the_starting_point_is_one_cell_per_municipality(located, municipalities):
    labels, cells = geo.make_geocells(located, municipalities, n_cells=98)
    assert (cells["name"] == cells["municipality"]).all()
    cell_municipality = labels.map(cells.set_index("cell")["municipality"])
    assert (cell_municipality == located.loc[labels.index, "municipality"]).all()


@pytest.mark.parametrize(("n_cells", "message"), [(60, "at least 98"), (50_000, "distinct locations")])
def test_impossible_numbers_of_cells(located, municipalities, n_cells, message):
    with pytest.raises(ValueError, match=message):
        geo.make_geocells(located, municipalities, n_cells=n_cells)


def test_swapped_coordinates_are_named(report_locations, municipalities):
    swapped = geo.points_from_latlng(report_locations["lng"], report_locations["lat"])
    with pytest.raises(ValueError, match="look swapped"):
        geo.make_geocells(swapped, municipalities)


def test_points_in_sweden_are_reported_and_dropped(report_locations, municipalities):
    sample = report_locations.sample(400, random_state=0)
    # Malmö, Helsingborg (4 km across the Øresund from Helsingør) and Lund
    sweden = geo.points_from_latlng([55.605, 56.05, 55.70], [13.003, 12.70, 13.19])
    mixed = pd.concat([sample, sweden], ignore_index=True)
    with pytest.warns(UserWarning, match="3 of 403 points"):
        labels, cells = geo.make_geocells(mixed, municipalities, n_cells=100)
    assert len(labels) == 400 and cells["n_points"].sum() == 400


def test_cell_polygons_are_clipped_to_the_land_they_tile(geocells, located, municipalities):
    labels, _ = geocells
    polygons = geo.cell_polygons(labels, located, municipalities)
    assert sorted(polygons["cell"]) == list(range(129))
    assert polygons.is_valid.all()
    metric = polygons.to_crs(geo.METRIC_CRS)
    land = municipalities.to_crs(geo.METRIC_CRS).union_all()
    # clipped: no cell reaches into the sea or abroad (1 m² of rounding per cell allowed);
    # unclipped Voronoi regions would cover thousands of km² of sea
    assert (metric.difference(land).area < 1.0).all()
    # and together the cells are the land: their areas add up to it, with no overlap
    assert metric.area.sum() == pytest.approx(land.area, rel=1e-6)
    assert metric.union_all().area == pytest.approx(land.area, rel=1e-6)
    assert (metric.area > 0).all()


def test_sample_per_cell(geocells, located):
    labels, _ = geocells
    sample = datasets.sample_per_cell(located, labels, per_cell=10, seed=3)
    assert (sample.groupby("cell").size() == 10).all() and len(sample) == 1290
    assert (sample["cell"] == labels.loc[sample.index]).all()


def test_write_and_read_geocells(tmp_path, geocells, located):
    labels, cells = geocells
    geo.write_geocells(tmp_path, labels, located, cells)
    points, cells_back = geo.read_geocells(tmp_path)
    assert len(points) == len(labels) and (points["cell"].to_numpy() == labels.to_numpy()).all()
    assert list(cells_back["cell"]) == list(range(129))
    assert np.allclose(cells_back["area_km2"], cells["area_km2"])
    with pytest.raises(FileNotFoundError, match="Run notebook 02 first"):
        geo.read_geocells(tmp_path / "nothing")


def test_cells_in_geographic_order(geocells):
    _, cells = geocells
    ordered = geo.order_cells_geographically(cells, datasets.load_regions())
    assert sorted(ordered["cell"]) == list(range(129))
    assert ordered["region"].nunique() == 5
    # each region is one contiguous block
    changes = (ordered["region"].to_numpy()[1:] != ordered["region"].to_numpy()[:-1]).sum()
    assert changes == 4
