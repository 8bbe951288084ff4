import numpy as np
import pandas as pd
import pytest

from helpers import geo, metrics


def test_distance_summary_by_hand():
    summary = metrics.distance_summary([0.5, 10, 100, 1000])
    assert summary["mean_km"] == pytest.approx(277.625)
    assert summary["median_km"] == pytest.approx(55)
    assert summary["within_1km"] == 0.25 and summary["within_25km"] == 0.5
    assert summary["within_200km"] == 0.75 and summary["within_750km"] == 0.75


def test_random_cell_errors_are_distances_to_every_centroid():
    centroids = np.array([[56.0, 10.0], [55.0, 12.0]])
    errors = metrics.random_cell_errors_km([56.0], [10.0], centroids)
    assert errors.shape == (1, 2) and errors[0, 0] == 0
    assert errors[0, 1] == pytest.approx(geo.haversine_km(56.0, 10.0, 55.0, 12.0))


def test_best_single_point_beats_the_mean_and_sits_on_a_majority():
    # five points on one spot and one far away: the median stays at the cluster, the mean moves
    lat = np.array([56.0] * 5 + [55.0])
    lng = np.array([10.0] * 5 + [12.0])
    best = metrics.best_single_point(lat, lng)
    assert geo.haversine_km(56.0, 10.0, *best) < 0.1
    mean_error = geo.haversine_km(lat, lng, lat.mean(), lng.mean()).mean()
    assert geo.haversine_km(lat, lng, *best).mean() < mean_error


def test_results_table_replaces_rows_of_a_rerun(isolated_build):
    metrics.record_result("smoke", "random cell", data="d", split="all", mean_km=136.0)
    metrics.record_result("smoke", "oracle", data="d", split="all", mean_km=5.0)
    table = metrics.record_result("smoke", "random cell", data="d", split="all", mean_km=135.0)
    assert list(table["experiment"]) == ["oracle", "random cell"]
    on_disk = metrics.load_results("smoke")
    assert on_disk.loc[on_disk["experiment"] == "random cell", "mean_km"].item() == 135.0
    assert list(on_disk.columns) == metrics.RESULT_COLUMNS


def test_results_table_refuses_unknown_columns(isolated_build):
    with pytest.raises(KeyError, match="accuracy"):
        metrics.record_result("smoke", "x", data="d", split="all", accuracy=0.3)
    assert isinstance(metrics.load_results("smoke"), pd.DataFrame)


def test_results_table_refuses_text_in_a_number_column_and_keeps_what_it_had(isolated_build):
    metrics.record_result("smoke", "oracle", data="d", split="all", mean_km=5.0)
    with pytest.raises(TypeError, match="'top1' takes a number"):
        metrics.record_result("smoke", "x", data="d", split="all", top1="0.3")
    with pytest.raises(TypeError, match="'split' takes a text"):
        metrics.record_result("smoke", "x", data="d", split=None, top1=0.3)
    assert list(metrics.load_results("smoke")["experiment"]) == ["oracle"]


def test_weighted_top_k():
    centroids = np.array([[56.0, 10.0], [55.0, 10.0], [57.0, 12.0]])
    probabilities = np.array([[0.5, 0.4, 0.1], [0.1, 0.2, 0.7]])
    assert np.allclose(metrics.weighted_top_k(probabilities, centroids, 1), centroids[[0, 2]])
    even = metrics.weighted_top_k(np.array([[0.5, 0.5, 0.0]]), centroids, 2)
    assert np.allclose(even, [[55.5, 10.0]])  # half-way along the meridian
    pulled = metrics.weighted_top_k(probabilities[:1], centroids, 2)[0]
    assert 55.5 < pulled[0] < 56.0  # closer to the more probable cell


def test_top_k_errors_table():
    centroids = np.array([[56.0, 10.0], [55.0, 10.0]])
    table = metrics.top_k_errors(np.array([[0.6, 0.4]]), [55.5], [10.0], centroids, ks=[1, 2])
    assert list(table["k"]) == [1, 2]
    assert table["mean_km"].iloc[1] < table["mean_km"].iloc[0]


def test_neighbour_error_share_by_hand():
    adjacency = np.array([[0, 1, 0, 0], [1, 0, 1, 0], [0, 1, 0, 1], [0, 0, 1, 0]], dtype=bool)  # a chain
    share = metrics.neighbour_error_share([0, 0, 1, 3], [1, 2, 1, 2], adjacency)
    assert share["errors"] == 3
    assert share["to_neighbours"] == pytest.approx(2 / 3)  # 0->1 and 3->2 are neighbours, 0->2 is not
    assert share["chance"] == pytest.approx((1 / 3 + 1 / 3 + 1 / 3) / 3)
    assert share["ratio"] == pytest.approx(2.0)
    # pairs (0, 1), (1, 0), (1, 2), (3, 2): cell 0 sends 1 image to neighbour 1 against 0.5 per
    # non-neighbour; cell 3 sends 1 to cell 2 against none elsewhere; cell 1 confuses nobody
    assert share["neighbour_pairs"] == 4 and share["neighbour_pairs_higher"] == 2


def test_cell_adjacency(report_locations, municipalities):
    labels, cells = geo.make_geocells(report_locations, municipalities, n_cells=100)
    adjacency = geo.cell_adjacency(cells)
    assert (
        adjacency.shape == (100, 100) and (adjacency == adjacency.T).all() and not adjacency.diagonal().any()
    )
    by_name = dict(zip(cells["name"], cells["cell"], strict=True))
    assert not adjacency[by_name["Bornholm"]].any()  # an island far out in the Baltic
    assert adjacency[by_name["Frederiksberg"]].sum() >= 2  # surrounded by Copenhagen cells
