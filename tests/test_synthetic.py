import numpy as np
import pandas as pd
import pytest
from sklearn.neighbors import KDTree

from helpers import geo, images, synthetic

SKAGEN, HERNING, COPENHAGEN = (57.7209, 10.5839), (56.1393, 8.9738), (55.6761, 12.5683)
AARHUS, LAESO = (56.1572, 10.2107), (57.2540, 11.0000)  # Aarhus C; Byrum, the island's main village


@pytest.fixture(scope="module")
def geography(report_locations, municipalities):
    return synthetic.build_geography(report_locations, municipalities)


def features_at(points, geography, **kwargs):
    lat, lng = zip(*points, strict=True)
    return synthetic.scene_features(list(lat), list(lng), geography, **kwargs)


def test_cues_follow_real_geography(geography):
    skagen, herning, copenhagen = features_at([SKAGEN, HERNING, COPENHAGEN], geography).to_dict("records")
    assert skagen["coast_km"] < 3 < 20 < herning["coast_km"]  # Skagen is on the tip; Herning inland
    assert skagen["wall_r"] != pytest.approx(copenhagen["wall_r"], abs=0.02)


def test_urbanity_orders_real_places(report_locations, geography):
    copenhagen, aarhus, herning, laeso = features_at([COPENHAGEN, AARHUS, HERNING, LAESO], geography)[
        "density"
    ]
    assert copenhagen > aarhus > herning > laeso
    assert (
        copenhagen > 0.9 and laeso < 0.5
    )  # the capital near the top; an island village well below the middle
    # the capital is not squashed against the ceiling: its locations keep a spread
    capital = report_locations[report_locations["report_municipality"] == "København"]
    urbanity = synthetic.urbanity(capital["lat"], capital["lng"], geography)
    assert (urbanity >= 0.99).mean() < 0.2 and np.percentile(urbanity, 10) < 0.9
    # a rank over the reference locations: spread over [0, 1]
    everyone = synthetic.urbanity(report_locations["lat"], report_locations["lng"], geography)
    assert np.median(everyone) == pytest.approx(0.5, abs=0.01) and everyone.min() >= 0 and everyone.max() <= 1


def count_rank(reference, point, radius_km=2.0):
    """The old cue: how many reference locations lie within 2 km, as a rank among them."""
    tree = KDTree(geo.metric_xy_km(reference["lat"], reference["lng"]))
    counts = tree.query_radius(
        geo.metric_xy_km(reference["lat"], reference["lng"]), r=radius_km, count_only=True
    )
    here = tree.query_radius(geo.metric_xy_km([point[0]], [point[1]]), r=radius_km, count_only=True)[0]
    return (counts < here).mean()


def test_urbanity_does_not_measure_the_sampling_rate(report_locations, municipalities, geography):
    # sample Herning municipality half as densely, as a cell twice the size would be
    herning = report_locations["report_municipality"] == "Herning"
    thinned = pd.concat([report_locations[~herning], report_locations[herning].iloc[::2]])
    rural_sampling = synthetic.build_geography(thinned, municipalities)
    before = synthetic.urbanity([HERNING[0]], [HERNING[1]], geography)[0]
    after = synthetic.urbanity([HERNING[0]], [HERNING[1]], rural_sampling)[0]
    # counting the report's locations makes the town look much emptier; weighting by postcode
    # cancels the sampling rate (up to the prior that damps postcodes with few locations)
    counted = count_rank(report_locations, HERNING) - count_rank(thinned, HERNING)
    assert counted > 0.1
    assert abs(after - before) < counted / 3


def test_cues_are_smooth_in_space(report_locations, geography):
    sample = report_locations.sample(300, random_state=0)
    moved = sample.assign(lat=sample["lat"] + 0.005)  # about 550 m north
    near = features_at(zip(sample["lat"], sample["lng"], strict=True), geography)
    shifted = features_at(zip(moved["lat"], moved["lng"], strict=True), geography)
    columns = ["wall_r", "wall_g", "wall_b", "hilliness", "conifer", "field_g"]
    far = near[columns].sample(frac=1, random_state=1).reset_index(drop=True)  # random pairs across Denmark
    step_near = (near[columns] - shifted[columns]).abs().mean().mean()
    step_far = (near[columns] - far).abs().mean().mean()
    assert step_near < step_far / 5


def test_a_cue_turned_off_is_constant(report_locations, geography):
    sample = report_locations.sample(200, random_state=0)
    table = synthetic.scene_features(sample["lat"], sample["lng"], geography, cues=("density", "coast"))
    assert table[["wall_r", "hilliness", "conifer"]].nunique().max() == 1
    assert table["density"].nunique() > 1
    with pytest.raises(ValueError, match="Unknown cues"):
        synthetic.scene_features(sample["lat"], sample["lng"], geography, cues=("sky",))


def render_place(geography, session, day=0, size=64, sky=False):
    place = pd.DataFrame({"lat": [56.1572], "lng": [10.2107]})
    features = features_at([(56.1572, 10.2107)], geography)
    result = synthetic.render_locations(place, features, [session], size, day=day, sky_masks=sky)
    return (result[0][0], result[1][0]) if sky else result[0]


def test_rendering_is_deterministic(geography):
    assert np.array_equal(render_place(geography, 5), render_place(geography, 5))
    assert render_place(geography, 5, size=224).shape == (224, 224, 3)


def test_a_new_session_changes_the_sky_more_than_the_street(geography):
    first, sky = render_place(geography, 3, day=0, sky=True)
    second = render_place(geography, 30, day=1)
    difference = np.abs(first.astype(int) - second.astype(int)).mean(axis=2)
    assert sky.any() and (~sky).any()
    assert (
        difference[sky].mean() > 1.5 * difference[~sky].mean()
    )  # light changes everywhere, clouds only above


def test_session_leak(geography):
    cells = np.repeat(np.arange(20), 30)
    shared = synthetic.assign_sessions(cells, day=0, leak=1.0)
    assert all(len(set(shared[cells == c])) == 1 for c in range(20))
    mixed = synthetic.assign_sessions(cells, day=0, leak=0.0)
    assert np.mean([len(set(mixed[cells == c])) for c in range(20)]) > 15
    other_day = synthetic.assign_sessions(cells, day=1, leak=1.0)
    assert (other_day != shared).mean() > 0.8
    with pytest.raises(ValueError, match="between 0 and 1"):
        synthetic.assign_sessions(cells, day=0, leak=1.5)


def test_render_synthetic_writes_a_manifest_and_resumes(tmp_path, report_locations, geography):
    sample = report_locations.sample(24, random_state=0).assign(cell=np.repeat([0, 1, 2], 8))
    manifest = images.render_synthetic(sample, tmp_path, geography, size=32, session_leak=0.5)
    assert len(manifest) == 24 and (tmp_path / "manifest.csv").exists()
    first = (tmp_path / manifest["image_path"][0]).stat().st_mtime_ns
    again = images.render_synthetic(sample, tmp_path, geography, size=32, session_leak=0.5)
    assert again.equals(manifest) and (tmp_path / manifest["image_path"][0]).stat().st_mtime_ns == first
    loaded, kept, skipped = images.load_images(images.read_image_set(tmp_path), tmp_path, 32)
    assert loaded.shape == (24, 32, 32, 3) and skipped == 0


def test_corrupt_images_are_skipped_and_counted(tmp_path, report_locations, geography):
    sample = report_locations.sample(6, random_state=0).assign(cell=0)
    manifest = images.render_synthetic(sample, tmp_path, geography, size=32, session_leak=0.5)
    broken = tmp_path / manifest["image_path"][1]
    broken.write_bytes(broken.read_bytes()[:40])  # truncated
    (tmp_path / manifest["image_path"][2]).unlink()  # missing
    loaded, kept, skipped = images.load_images(manifest, tmp_path, 32)
    assert skipped == 2 and len(loaded) == len(kept) == 4
    assert manifest["image_path"][1] not in set(kept["image_path"])


def test_split_is_stratified_and_deterministic():
    table = pd.DataFrame({"cell": np.repeat(np.arange(10), 20), "lat": 56.0, "lng": 10.0})
    split = images.split_dataset(table, seed=0)
    counts = split.groupby(["cell", "split"]).size().unstack()
    assert (counts["train"] == 14).all() and (counts["val"] == 3).all() and (counts["test"] == 3).all()
    assert split["split"].equals(images.split_dataset(table, seed=0)["split"])
    tiny = images.split_dataset(pd.DataFrame({"cell": np.repeat(np.arange(40), 4)}), seed=0)
    assert set(tiny["split"]) == {"train", "val", "test"}
    with pytest.raises(ValueError, match="add up to 1"):
        images.split_dataset(table, {"train": 0.9, "test": 0.2})


def test_blocked_split_keeps_each_block_in_one_split(report_locations):
    sample = report_locations.sample(3000, random_state=0).reset_index(drop=True)
    sample["cell"] = (sample["lat"] > 56).astype(int)
    split = images.split_dataset(sample, seed=0, block_km=5)
    xy = geo.points_from_latlng(sample["lat"], sample["lng"]).to_crs(geo.METRIC_CRS)
    block = (
        (xy.geometry.x // 5000).astype(int).astype(str)
        + "_"
        + (xy.geometry.y // 5000).astype(int).astype(str)
    )
    per_block = split.assign(block=block.to_numpy()).groupby(["cell", "block"])["split"].nunique()
    assert (per_block == 1).all()
    assert split["split"].value_counts(normalize=True)["train"] == pytest.approx(0.7, abs=0.1)
