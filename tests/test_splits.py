"""Leak-free splits: no spatial block and no capture group is in two splits, across cell borders too."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import geo, images

FRACTIONS = {"train": 0.70, "val": 0.15, "test": 0.15}


def block_of(table, block_km):
    xy = np.floor(geo.metric_xy_km(table["lat"], table["lng"]) / block_km).astype(int)
    return pd.Series([f"{x}_{y}" for x, y in xy], index=table.index)


@pytest.fixture(scope="module")
def downloaded(report_locations):
    """6,000 of the report's places as a Street View download: cells from the report, and one
    capture month per district of about 5 x 5 km, as cars cover a district at a time."""
    table = report_locations.sample(6000, random_state=0).reset_index(drop=True)
    table = pd.DataFrame(
        {"lat": table["lat"], "lng": table["lng"], "cell": pd.factorize(table["report_cell"])[0]}
    )
    district = (
        (table["lat"] // 0.05).astype(int).astype(str) + "_" + (table["lng"] // 0.08).astype(int).astype(str)
    )
    rng = np.random.default_rng(0)
    month = {d: f"{rng.integers(2009, 2024)}-{rng.integers(1, 13):02d}" for d in sorted(district.unique())}
    return table.assign(source="streetview", date=district.map(month))


@pytest.mark.parametrize("block_km", [1.0, 5.0])
def test_no_block_and_no_group_is_in_two_splits_across_cell_borders(downloaded, block_km):
    table = downloaded.assign(capture_group=images.capture_groups(downloaded))
    split = images.split_dataset(table, seed=0, block_km=block_km, groups="capture_group")
    blocks = block_of(table, block_km)
    # the case a per-cell split gets wrong: squares that straddle a cell border
    straddling = table.groupby(blocks)["cell"].nunique()
    assert (straddling > 1).sum() >= 10
    assert (split.groupby(blocks)["split"].nunique() == 1).all()
    assert (split.groupby("capture_group")["split"].nunique() == 1).all()
    shares = split["split"].value_counts(normalize=True)
    for name, fraction in FRACTIONS.items():
        assert shares[name] == pytest.approx(fraction, abs=0.05)
    assert split.groupby("cell")["split"].apply(lambda s: (s == "train").any()).all()
    assert split.drop(columns="split").equals(table)  # rows unchanged, in order


def test_groups_alone_keep_captures_together(downloaded):
    table = downloaded.assign(capture_group=images.capture_groups(downloaded, radius_m=200))
    assert table["capture_group"].value_counts().max() > 5  # there are groups worth keeping together
    split = images.split_dataset(table, seed=1, groups="capture_group")
    assert (split.groupby("capture_group")["split"].nunique() == 1).all()
    assert split["split"].value_counts(normalize=True)["train"] == pytest.approx(0.7, abs=0.03)


def test_the_blocked_split_is_deterministic_per_seed(downloaded):
    first = images.split_dataset(downloaded, seed=3, block_km=2)["split"]
    assert first.equals(images.split_dataset(downloaded, seed=3, block_km=2)["split"])
    assert not first.equals(images.split_dataset(downloaded, seed=4, block_km=2)["split"])


def test_a_cell_left_without_training_images_gets_some():
    # cell "B" has one image, in a unit it shares with 59 images of "A", decided after a
    # larger unit of "A" has filled A's training share: the greedy choice puts it in val
    table = pd.DataFrame(
        {
            "cell": ["A"] * 199 + ["B"],
            "capture_group": ["x"] * 140 + ["y"] * 60,
            "lat": 56.0,
            "lng": 10.0,
        }
    )
    split = images.split_dataset(table, seed=0, groups="capture_group")
    assert (split.groupby("capture_group")["split"].nunique() == 1).all()
    assert split.loc[table["cell"] == "B", "split"].item() == "train"


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 7), st.integers(0, 25)), min_size=1, max_size=120),
    st.integers(0, 3),
)
def test_units_are_never_split_and_every_cell_trains(rows, seed):
    table = pd.DataFrame(rows, columns=["cell", "group"]).assign(group=lambda t: "g" + t["group"].astype(str))
    split = images.split_dataset(table, seed=seed, groups="group")
    assert (split.groupby("group")["split"].nunique() == 1).all()
    assert split.groupby("cell")["split"].apply(lambda s: (s == "train").any()).all()
    assert set(split["split"]) <= set(FRACTIONS)


def test_empty_groups_stand_alone():
    table = pd.DataFrame({"cell": [0] * 40, "group": [""] * 20 + [None] * 20, "lat": 56.0, "lng": 10.0})
    split = images.split_dataset(table, seed=0, groups="group")
    assert set(split["split"]) == set(FRACTIONS)  # 40 images of their own, not one group


def test_bad_arguments_are_explained(downloaded):
    with pytest.raises(KeyError, match="capture_groups"):
        images.split_dataset(downloaded, groups="capture_group")
    with pytest.raises(ValueError, match="block_km"):
        images.split_dataset(downloaded, block_km=-1)
    with pytest.raises(ValueError, match="add up to 1"):
        images.split_dataset(downloaded, {"train": 0.9, "test": 0.2}, block_km=1)


# --- capture groups ----------------------------------------------------------------------


def metres_north(lat, lng, metres):
    return lat + metres / 111_195.0, lng


def test_street_view_groups_are_nearby_panoramas_of_one_month():
    lat, lng = 56.0, 10.0
    chain = [metres_north(lat, lng, m) for m in (0, 40, 80)]  # 40 m apart: one drive
    rows = [(*p, "2021-06") for p in chain]
    rows.append((*metres_north(lat, lng, 20), "2016-04"))  # same street, another year
    rows.append((*metres_north(lat, lng, 300), "2021-06"))  # same month, 220 m on
    rows.append((*metres_north(lat, lng, 330), ""))  # unknown month, 30 m from the last
    table = pd.DataFrame(rows, columns=["lat", "lng", "date"]).assign(source="streetview")
    groups = images.capture_groups(table, radius_m=50)
    assert groups.iloc[0] == groups.iloc[1] == groups.iloc[2]  # chained through the middle one
    assert groups.iloc[3] != groups.iloc[0]
    assert groups.iloc[4] != groups.iloc[0] and groups.iloc[4] == groups.iloc[5]
    assert images.capture_groups(table, radius_m=10).nunique() == 6  # nothing within 10 m


def test_mapillary_groups_are_sequences_and_synthetic_ones_sessions():
    table = pd.DataFrame(
        {
            "source": ["mapillary"] * 4 + ["synthetic"] * 4 + ["somewhere"],
            "sequence": ["s1", "s1", "s2", None, None, None, None, None, None],
            "cell": [0, 0, 0, 0, 3, 3, 4, 3, 0],
            "day": [None] * 4 + [0, 0, 0, 1, None],
            "session": [None] * 4 + [7, 7, 7, 7, None],
            "lat": 56.0,
            "lng": 10.0,
        }
    )
    groups = images.capture_groups(table).tolist()
    assert groups[0] == groups[1] != groups[2]
    assert groups[3] not in groups[:3]  # no sequence: an image of its own
    assert groups[4] == groups[5]  # same cell, day and session
    assert groups[6] != groups[4] and groups[7] != groups[4]  # another cell; another day
    assert len(set(groups)) == 7


def test_synthetic_manifests_without_source_are_grouped_by_session():
    table = pd.DataFrame(
        {"cell": [1, 1, 2], "session": [5, 5, 5], "day": [0, 0, 0], "lat": 56.0, "lng": 10.0}
    )
    groups = images.capture_groups(table)
    assert groups.iloc[0] == groups.iloc[1] != groups.iloc[2]
