import hashlib

import numpy as np
import pandas as pd
import pytest
import shapely

from helpers import datasets, geo
from tests.loopback import closed_port_url, serve

NAME = "dagi_regioner.geojson"


@pytest.fixture
def good_bytes(data_files):
    return data_files[NAME].read_bytes()


def test_present_file_with_right_hash_is_not_downloaded(tmp_path, good_bytes):
    (tmp_path / NAME).write_bytes(good_bytes)
    # a URL where nothing listens: any download attempt would fail
    assert datasets.fetch(NAME, tmp_path, url=closed_port_url() + "/x") == tmp_path / NAME


def test_download_from_a_server_then_reuse(tmp_path, good_bytes):
    with serve({"/regioner.geojson": (200, {}, good_bytes)}) as server:
        path = datasets.fetch(NAME, tmp_path, url=server.url + "/regioner.geojson")
        again = datasets.fetch(NAME, tmp_path, url=server.url + "/regioner.geojson")
    assert path == again == tmp_path / NAME
    assert hashlib.sha256(path.read_bytes()).hexdigest() == datasets.DATA_FILES[NAME]["sha256"]
    assert server.requests == ["/regioner.geojson"]  # the second call found the file


def test_download_with_wrong_content_is_discarded(tmp_path, good_bytes):
    tampered = good_bytes[:-100]
    with (
        serve({"/f": (200, {}, tampered)}) as server,
        pytest.raises(datasets.DataError, match="did not match its SHA-256"),
    ):
        datasets.fetch(NAME, tmp_path, url=server.url + "/f")
    assert list(tmp_path.iterdir()) == []  # nothing half-written is left behind


def test_offline_error_names_file_url_and_destination(tmp_path):
    url = closed_port_url() + "/regioner.geojson"
    with pytest.raises(datasets.DataError) as caught:
        datasets.fetch(NAME, tmp_path, url=url)
    message = str(caught.value)
    assert NAME in message and url in message and str(tmp_path / NAME) in message
    assert "offline" in message


def test_http_error_is_reported(tmp_path):
    with serve({}) as server, pytest.raises(datasets.DataError, match="404"):
        datasets.fetch(NAME, tmp_path, url=server.url + "/missing")


def test_corrupt_local_file_is_refused_and_kept(tmp_path, good_bytes):
    bad = good_bytes.replace(b"Region", b"Regxon", 1)
    (tmp_path / NAME).write_bytes(bad)
    with pytest.raises(datasets.DataError, match="was not used") as caught:
        datasets.fetch(NAME, tmp_path, url=closed_port_url())
    assert hashlib.sha256(bad).hexdigest() in str(caught.value)
    assert (tmp_path / NAME).read_bytes() == bad  # the user's file is left for them to inspect


def test_unknown_input_lists_the_known_ones():
    with pytest.raises(datasets.DataError, match="dagi_kommuner"):
        datasets.fetch("kommuner.shp")


def test_report_locations(report_locations):
    assert len(report_locations) == 42_570
    assert report_locations["report_cell"].nunique() == 129
    assert (report_locations.groupby("report_cell").size() == 330).all()
    assert geo.in_denmark_box(report_locations["lat"], report_locations["lng"]).all()
    assert report_locations.crs.to_epsg() == 4326
    # geometry is (x=lng, y=lat)
    assert np.allclose(report_locations.geometry.x, report_locations["lng"])
    assert np.allclose(report_locations.geometry.y, report_locations["lat"])


def test_report_centroids_are_the_means_of_the_report_locations(report_locations, data_files):
    centroids = datasets.load_report_centroids().set_index("report_cell")
    means = report_locations.groupby("report_cell")[["lat", "lng"]].mean()
    assert len(centroids) == 129
    assert np.allclose(centroids.loc[means.index, ["lat", "lng"]], means, atol=1e-9)


def test_report_municipalities_are_dagi_names(report_locations, municipalities):
    names = set(report_locations["report_municipality"])
    assert names <= set(municipalities["name"])
    assert len(names) == 97  # Herlev has no cell of its own in the report
    assert (
        datasets.report_municipality(
            report_locations["report_cell"].iloc[[0]].str.replace("Aabenraa", "Københavns")
        ).iloc[0]
        == "København"
    )


@pytest.mark.parametrize(
    ("loader", "rows", "columns"),
    [
        (datasets.load_municipalities, 99, ["code", "name", "geometry"]),
        (datasets.load_regions, 5, ["code", "name", "geometry"]),
        (datasets.load_postcodes, 592, ["postcode", "name", "geometry"]),
    ],
)
def test_boundaries_are_tidy(data_files, loader, rows, columns):
    table = loader()
    assert list(table.columns) == columns
    assert len(table) == rows and table.iloc[:, 0].is_unique
    assert table.crs.to_epsg() == 4326
    assert not shapely.has_z(table.geometry.values).any()
    minx, miny, maxx, maxy = table.total_bounds
    assert minx > 7.9 and maxx < 15.3 and miny > 54.4 and maxy < 57.9


def test_municipalities_are_the_98_plus_christianso(municipalities):
    assert "Christiansø" in set(municipalities["name"])
    assert municipalities["name"].nunique() == 99


def test_sample_per_cell_draws_from_each_cell_and_takes_a_short_cell_whole():
    rng = np.random.default_rng(0)
    points = pd.DataFrame({"lat": rng.uniform(54.6, 57.7, 60), "lng": rng.uniform(8.1, 15.2, 60)})
    points["postcode"] = np.where(np.arange(60) % 3 == 0, 8000, 5000)
    # cells 0 and 1 hold 25 points each, cell 2 only 4; 6 points have no cell and are never drawn
    labels = pd.Series([0] * 25 + [1] * 25 + [2] * 4, index=rng.permutation(60)[:54])
    sample = datasets.sample_per_cell(points, labels, per_cell=9, seed=5, subarea="postcode", warn=False)
    assert sample.groupby("cell").size().to_dict() == {0: 9, 1: 9, 2: 4}
    assert (sample["cell"] == labels.loc[sample.index]).all() and set(sample.index) <= set(labels.index)
    assert sample.attrs["short_areas"] == {2: 4}
    again = datasets.sample_per_cell(points, labels, per_cell=9, seed=5, subarea="postcode", warn=False)
    assert again.index.equals(sample.index)
    with pytest.warns(UserWarning, match="fewer than 9 rows"):
        datasets.sample_per_cell(points, labels, per_cell=9, seed=5)
