"""Synthetic image sets can never be stale, and the input pipeline holds uint8 or streams."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers import images, model, synthetic


@pytest.fixture(scope="module")
def geography(report_locations, municipalities):
    return synthetic.build_geography(report_locations, municipalities)


PLACES = pd.DataFrame({"lat": [56.1572, 55.6761], "lng": [10.2107, 12.5683], "cell": [3, 7]})


def render(folder, geography, places=PLACES, **changes):
    settings = {"size": 32, "session_leak": 1.0, "day": 0, "seed": 0, **changes}
    manifest = images.render_synthetic(places, folder, geography, **settings)
    return manifest, np.stack([np.asarray(Image.open(folder / p)) for p in manifest["image_path"]])


def test_every_setting_that_sets_the_pixels_names_the_file(tmp_path, geography, monkeypatch):
    folder = tmp_path / "set"
    manifest, pixels = render(folder, geography)
    again, same = render(folder, geography)
    assert list(again["image_path"]) == list(manifest["image_path"]) and np.array_equal(same, pixels)
    moved = PLACES.assign(lat=PLACES["lat"] + 0.01)
    other_cell = PLACES.assign(cell=[5, 9])
    variants = {
        "location": render(folder, geography, places=moved),
        "cell": render(folder, geography, places=other_cell),
        "day": render(folder, geography, day=1),
        "size": render(folder, geography, size=48),
        "cues": render(folder, geography, cues=("coast", "architecture")),
        "seed": render(folder, geography, seed=1),
        "session": render(folder, geography, session_leak=0.0),
    }
    for name, (changed, changed_pixels) in variants.items():
        assert not set(changed["image_path"]) & set(manifest["image_path"]), name
        # a cell sets the pixels only through its capture session, which two cells may share
        if changed_pixels.shape == pixels.shape and name != "cell":
            assert not np.array_equal(changed_pixels, pixels), f"{name}: the old pixels came back"
    monkeypatch.setattr(synthetic, "RENDERER_VERSION", synthetic.RENDERER_VERSION + 1)
    bumped, _ = render(folder, geography)
    assert not set(bumped["image_path"]) & set(manifest["image_path"])  # a new renderer renders anew


def tiny_set(folder, n=12, size=24):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        path = folder / f"{i % 3}/{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
        rows.append({"image_path": f"{i % 3}/{i}.png", "cell": i % 3, "lat": 55 + i / 10, "lng": 10 - i / 10})
    return pd.DataFrame(rows)


def test_the_pipeline_gives_pixels_and_targets_cached_or_streamed(tmp_path):
    table = tiny_set(tmp_path)
    cached = list(model.image_dataset(table, tmp_path, 24, 5, cache_budget_gb=1.0))
    streamed = list(model.image_dataset(table, tmp_path, 24, 5, cache_budget_gb=0.0))
    assert [x.shape[0] for x, _ in cached] == [5, 5, 2]
    for (x1, y1), (x2, y2) in zip(cached, streamed, strict=True):
        assert x1.dtype.name == "float32" and np.array_equal(np.asarray(x1), np.asarray(x2))
        assert np.array_equal(np.asarray(y1), np.asarray(y2))
    pixels = np.concatenate([np.asarray(x) for x, _ in cached])
    assert np.array_equal(
        pixels[0], np.asarray(Image.open(tmp_path / table["image_path"][0])).astype("float32")
    )
    targets = np.concatenate([np.asarray(y) for _, y in cached])
    assert np.allclose(targets, table[["cell", "lat", "lng"]].to_numpy())  # [cell, lat, lng] per image
    assert model.cache_fits(29_799, 224, 8.0) and not model.cache_fits(42_570, 224, 4.0)
