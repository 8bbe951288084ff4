import gzip
import json
import tracemalloc
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import config, datasets

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


# --- files that cannot be read (issue 20) ---------------------------------------------------


def many_rows(n=3000) -> str:
    return HEADER + "\n" + "".join(f"10.{i:04d},56.1,{i},Torvet,,By,,,8000,{i},h{i}\n" for i in range(n))


def write_broken(path, kind):
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "empty gz":
        path.write_bytes(gzip.compress(b""))
    elif kind == "ragged":
        path.write_text(many_rows(5) + "10.3,56.3,1,Torvet,,By,,,8000,1,h1,surplus,fields\n")
    elif kind == "latin-1":
        path.write_bytes((many_rows(5) + "10.3,56.3,1,Søndergade,,By,,,8000,1,h1\n").encode("latin-1"))
    elif kind == "truncated gz":
        packed = gzip.compress(many_rows().encode())
        path.write_bytes(packed[: len(packed) // 2])
    elif kind == "not gz":
        path.write_bytes(b"this was never compressed\n")
    elif kind == "latin-1 geojson":
        feature = {"type": "Feature", "properties": {"street": "Søndergade"}, "geometry": {"type": "Point"}}
        feature["geometry"]["coordinates"] = [10.2, 56.1]
        path.write_bytes(("\n".join([json.dumps(feature, ensure_ascii=False)] * 4) + "\n").encode("latin-1"))
    elif kind == "truncated geojson gz":
        line = json.dumps(
            {"type": "Feature", "properties": {}, "geometry": {"type": "Point", "coordinates": [10.2, 56.1]}}
        )
        packed = gzip.compress(("\n".join([line] * 3000) + "\n").encode())
        path.write_bytes(packed[: len(packed) // 2])
    return path


BROKEN = {
    # kind: (file name, what the message must say)
    "empty": ("dk.csv", "the file is empty"),
    "empty gz": ("dk.csv.gz", "the file is empty"),
    "ragged": ("dk.csv", "line 7"),
    "latin-1": ("dk.csv", "line 7: not UTF-8"),
    "truncated gz": ("dk.csv.gz", "cut short or corrupt after line"),
    "not gz": ("dk.csv.gz", "cut short or corrupt after line 0"),
    "latin-1 geojson": ("dk.geojson", "line 1: not UTF-8"),
    "truncated geojson gz": ("dk.geojson.gz", "cut short or corrupt after line"),
}


@pytest.mark.parametrize("kind", list(BROKEN))
def test_an_unreadable_file_is_a_data_error_naming_the_file_and_line(tmp_path, kind):
    name, says = BROKEN[kind]
    path = write_broken(tmp_path / name, kind)
    with pytest.raises(datasets.DataError) as caught:
        datasets.read_openaddresses(path)
    assert str(path) in str(caught.value) and says in str(caught.value)
    assert caught.value.__context__ is None  # the message says it all; no raw pandas or gzip error


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
    assert sample.attrs["short_areas"] == {"A": 5}


def test_small_areas_are_listed_without_a_warning_when_the_caller_reports_them():
    points = table({("A", "a1"): 5, ("B", "b1"): 50, ("C", "c1"): 3})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        sample = datasets.sample_per_area(points, "area", 10, warn=False)
    assert sample.attrs["short_areas"] == {"A": 5, "C": 3}
    assert datasets.sample_per_area(points, "area", 2).attrs["short_areas"] == {}


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


# --- GeoJSON FeatureCollections, country-size files, flats --------------------------------


def feature(i, lat, lng, pc, **more):
    properties = {"number": str(i), "street": "Torvet", "postcode": pc, "hash": f"h{i}", **more}
    return {
        "type": "Feature",
        "properties": properties,
        "geometry": {"type": "Point", "coordinates": [lng, lat]},
    }


def write_collection(path, rows, indent=None, compress=False, **more):
    collection = {
        "type": "FeatureCollection",
        "name": "dk_addresses",
        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:OGC:1.3:CRS84"}},
        "features": [feature(i, lat, lng, pc, **more) for i, (lat, lng, pc) in enumerate(rows)],
        "bbox": [8.0, 54.5, 15.2, 57.8],
    }
    text = json.dumps(collection, indent=indent)
    if compress:
        with gzip.open(path, "wt") as handle:
            handle.write(text)
    else:
        path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("name", "indent", "compress"),
    [("dk.geojson", None, False), ("dk.geojson", 2, False), ("dk.json.gz", 1, True)],
)
def test_a_feature_collection_is_accepted(tmp_path, name, indent, compress):
    path = write_collection(tmp_path / name, PLACES, indent=indent, compress=compress)
    points = datasets.read_openaddresses(path)
    assert np.allclose(points[["lat", "lng"]], [p[:2] for p in PLACES])
    assert list(points["postcode"]) == ["8000", "5000", "9990"]
    assert points.attrs["openaddresses"] == {
        "rows": 3,
        "no_coordinates": 0,
        "outside": 0,
        "repeated": 0,
        "kept": 3,
    }


def test_a_collection_read_in_tiny_pieces_gives_the_same_points(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    rows = [(55 + rng.random() * 2, 9 + rng.random() * 3, str(1000 + i)) for i in range(200)]
    path = write_collection(tmp_path / "dk.geojson", rows, indent=1, note='æøå ✓ "quoted" ]} {[')
    whole = datasets.read_openaddresses(path)
    # every feature, key and number now crosses a piece boundary somewhere
    monkeypatch.setattr(datasets, "_PIECE_CHARS", 7)
    pieces = datasets.read_openaddresses(path, chunk_rows=13)
    assert len(whole) == 200
    assert pieces.drop(columns="geometry").equals(whole.drop(columns="geometry"))


def test_a_country_size_collection_is_read_in_bounded_memory(tmp_path):
    # 20,000 addresses of about 900 bytes in 40 buildings: the file is 18 MB; decoded whole,
    # as json.load would, it would take several times that
    rows = [(55.5 + (i % 40) * 0.01, 10.0 + (i % 40) * 0.01, "8000") for i in range(20_000)]
    path = write_collection(tmp_path / "dk.geojson", rows, note="x" * 700)
    size = path.stat().st_size
    tracemalloc.start()
    try:
        points = datasets.read_openaddresses(path, chunk_rows=1000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size > 15e6 and len(points) == 40
    assert peak < size / 2, f"peak {peak / 1e6:.1f} MB for a {size / 1e6:.1f} MB file"


def test_flats_in_one_building_are_one_address(tmp_path):
    flats = [(56.1527, 10.2039, "8000")] * 4 + [(56.15270001, 10.2039, "8000")]  # 1 mm apart: the same
    rows = [*flats, PLACES[1], PLACES[2], PLACES[1]]
    for chunk_rows in (100, 2):  # repeats within one chunk and across chunks
        points = datasets.read_openaddresses(write_csv(tmp_path / "dk.csv", rows), chunk_rows=chunk_rows)
        assert np.allclose(points[["lat", "lng"]], [p[:2] for p in PLACES])
        assert list(points["number"]) == ["0", "5", "6"]  # the first of each point is kept
        assert points.attrs["openaddresses"]["repeated"] == 5


def test_broken_collections_are_explained(tmp_path):
    good = write_collection(tmp_path / "good.geojson", PLACES).read_text()
    broken = tmp_path / "broken.geojson"
    broken.write_text(good.replace('"Torvet"', "Torvet", 2))
    with pytest.raises(datasets.DataError, match="feature 1 is not valid JSON"):
        datasets.read_openaddresses(broken)
    cut = tmp_path / "cut.geojson"
    cut.write_text(good[: good.index('"bbox"') - 30])
    with pytest.raises(datasets.DataError, match="not valid JSON|ends inside"):
        datasets.read_openaddresses(cut)
    lines = tmp_path / "lines.geojson"
    lines.write_text(json.dumps(feature(0, *PLACES[0])) + "\n{not json\n")
    with pytest.raises(datasets.DataError, match="line 2: not valid JSON"):
        datasets.read_openaddresses(lines)


def test_geojson_text_sequences_are_accepted(tmp_path):
    path = tmp_path / "dk.geojsonseq"
    path.write_text("".join("\x1e" + json.dumps(feature(i, *row)) + "\n" for i, row in enumerate(PLACES)))
    assert len(datasets.read_openaddresses(path)) == 3


# --- the profile setting -----------------------------------------------------------------


def test_the_profile_can_name_the_users_own_file(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBOOK_DATA_DIR", str(tmp_path))
    write_csv(tmp_path / "dk.csv", PLACES)
    profile = {**config.get_profile("smoke"), datasets.ADDRESSES_SETTING: "dk.csv"}  # relative: in data/
    assert datasets.addresses_path(profile) == tmp_path / "dk.csv"
    points = datasets.load_locations(profile)
    assert list(points["postcode"]) == ["8000", "5000", "9990"]
    absolute = {**profile, datasets.ADDRESSES_SETTING: str(tmp_path / "dk.csv")}
    assert len(datasets.load_locations(absolute)) == 3
    missing = {**profile, datasets.ADDRESSES_SETTING: "nowhere.csv"}
    with pytest.raises(datasets.DataError, match="addresses_file.*None"):
        datasets.load_locations(missing)


def test_without_the_setting_the_report_locations_are_used(data_files):
    assert datasets.addresses_path(config.get_profile("smoke")) is None
    assert len(datasets.load_locations("smoke")) == 42_570


def test_sampling_within_postcodes_of_the_users_file(tmp_path):
    rng = np.random.default_rng(1)
    rows = [(56.10 + rng.random() * 0.05, 10.10 + rng.random() * 0.05, "8000") for _ in range(600)]
    rows += [(56.20 + rng.random() * 0.05, 10.20 + rng.random() * 0.05, "8200") for _ in range(200)]
    points = datasets.read_openaddresses(write_csv(tmp_path / "dk.csv", rows)).assign(cell=0)
    sample = datasets.sample_per_area(points, "cell", 40, subarea="postcode", seed=0)
    assert sample["postcode"].value_counts().to_dict() == {"8000": 30, "8200": 10}  # 3:1 as in the file
