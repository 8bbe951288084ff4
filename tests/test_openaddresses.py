import gzip
import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import datasets

# Three real places: Aarhus Rådhus, Odense Rådhus, Skagen harbour (lat, lng in degrees).
PLACES = [(56.1527, 10.2039, "8000"), (55.3960, 10.3880, "5000"), (57.7190, 10.5910, "9990")]
HEADER = "LON,LAT,NUMBER,STREET,UNIT,CITY,DISTRICT,REGION,POSTCODE,ID,HASH"


def write_csv(path, rows):
    lines = [HEADER]
    lines += [f"{lng},{lat},{i},Torvet,,By,,,{pc},{i},h{i}" for i, (lat, lng, pc) in enumerate(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_geojsonl(path, rows, compress=False):
    features = [
        {
            "type": "Feature",
            "properties": {"number": str(i), "street": "Torvet", "postcode": pc, "hash": f"h{i}"},
            "geometry": {"type": "Point", "coordinates": [lng, lat]},
        }
        for i, (lat, lng, pc) in enumerate(rows)
    ]
    text = "\n".join(json.dumps(f) for f in features) + "\n"
    if compress:
        with gzip.open(path, "wt") as handle:
            handle.write(text)
    else:
        path.write_text(text)
    return path


@pytest.mark.parametrize("layout", ["csv", "geojson", "geojson.gz"])
def test_both_layouts_give_the_same_points(tmp_path, layout):
    if layout == "csv":
        path = write_csv(tmp_path / "dk.csv", PLACES)
    else:
        path = write_geojsonl(tmp_path / f"dk.{layout}", PLACES, compress=layout.endswith(".gz"))
    points = datasets.read_openaddresses(path)
    assert np.allclose(points[["lat", "lng"]], [p[:2] for p in PLACES])
    assert list(points["postcode"]) == ["8000", "5000", "9990"]
    assert points.crs.to_epsg() == 4326


def test_rows_without_coordinates_are_dropped_and_counted(tmp_path):
    path = write_csv(tmp_path / "dk.csv", PLACES)
    path.write_text(path.read_text() + ",,9,Gade,,By,,,8000,9,h9\nabc,56.1,10,Gade,,By,,,8000,10,h10\n")
    with pytest.warns(UserWarning, match="dropped 2 of 5 rows"):
        points = datasets.read_openaddresses(path)
    assert len(points) == 3


def test_swapped_coordinates_are_refused_with_advice(tmp_path):
    swapped = [(lng, lat, pc) for lat, lng, pc in PLACES]
    path = write_csv(tmp_path / "dk.csv", swapped)
    with pytest.raises(datasets.DataError, match="swapped") as caught:
        datasets.read_openaddresses(path)
    assert "swap_coordinates=True" in str(caught.value)
    fixed = datasets.read_openaddresses(path, swap_coordinates=True)
    assert np.allclose(fixed[["lat", "lng"]], [p[:2] for p in PLACES])


def test_points_abroad_are_dropped(tmp_path):
    berlin = (52.52, 13.40, "10115")
    path = write_csv(tmp_path / "dk.csv", [*PLACES, berlin])
    with pytest.warns(UserWarning, match="1 of 4 points outside Denmark"):
        points = datasets.read_openaddresses(path)
    assert len(points) == 3  # southern Sweden lies inside the rough box: geo.assign_municipality drops it


def test_missing_coordinate_columns(tmp_path):
    path = tmp_path / "dk.csv"
    path.write_text("X,Y,STREET\n10.2,56.1,Torvet\n")
    with pytest.raises(datasets.DataError, match="LON and LAT"):
        datasets.read_openaddresses(path)


def test_unknown_format_and_missing_file(tmp_path):
    with pytest.raises(datasets.DataError, match="No OpenAddresses file"):
        datasets.read_openaddresses(tmp_path / "nope.csv")
    (tmp_path / "dk.xlsx").write_bytes(b"")
    with pytest.raises(datasets.DataError, match=r"\.csv or \.geojson"):
        datasets.read_openaddresses(tmp_path / "dk.xlsx")


# --- sampling -----------------------------------------------------------------------------


def table(sizes: dict[tuple[str, str], int]) -> pd.DataFrame:
    rows = [(area, sub) for (area, sub), n in sizes.items() for _ in range(n)]
    return pd.DataFrame(rows, columns=["area", "sub"])


def test_sample_per_area_is_proportional_to_subareas():
    points = table({("A", "a1"): 600, ("A", "a2"): 300, ("A", "a3"): 100, ("B", "b1"): 50, ("B", "b2"): 50})
    sample = datasets.sample_per_area(points, "area", 20, subarea="sub", seed=1)
    counts = sample.groupby(["area", "sub"]).size()
    assert counts.to_dict() == {
        ("A", "a1"): 12,
        ("A", "a2"): 6,
        ("A", "a3"): 2,
        ("B", "b1"): 10,
        ("B", "b2"): 10,
    }
    assert sample.index.is_unique


def test_sample_per_area_is_deterministic_per_seed():
    points = table({("A", "a1"): 500, ("B", "b1"): 500})
    first = datasets.sample_per_area(points, "area", 30, seed=7)
    assert first.index.equals(datasets.sample_per_area(points, "area", 30, seed=7).index)
    assert not first.index.equals(datasets.sample_per_area(points, "area", 30, seed=8).index)


def test_small_areas_are_taken_whole_with_a_warning():
    points = table({("A", "a1"): 5, ("B", "b1"): 50})
    with pytest.warns(UserWarning, match=r"A \(5\)"):
        sample = datasets.sample_per_area(points, "area", 10)
    assert sample.groupby("area").size().to_dict() == {"A": 5, "B": 10}


def test_sample_per_area_rejects_bad_arguments():
    points = table({("A", "a1"): 5})
    with pytest.raises(ValueError, match="at least 1"):
        datasets.sample_per_area(points, "area", 0)
    with pytest.raises(KeyError, match="postcode"):
        datasets.sample_per_area(points, "area", 2, subarea="postcode")


@given(st.lists(st.integers(1, 1000), min_size=1, max_size=30), st.data())
def testlargest_remainder_quotas(counts, data):
    counts = np.array(counts)
    total = data.draw(st.integers(0, int(counts.sum())))
    quotas = datasets.largest_remainder(counts, total)
    exact = counts * total / counts.sum()
    assert quotas.sum() == total
    assert (quotas >= np.floor(exact)).all() and (quotas <= np.ceil(exact)).all()
    assert (quotas <= counts).all()
