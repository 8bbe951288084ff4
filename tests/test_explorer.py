"""The explorer (helpers/explorer.py): its data, its widget driven from Python, and its page in Chromium."""

import base64
import io
import json
import re
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from shapely.geometry import box

from helpers import config, explorer, geo

CHROMIUM = Path("/usr/bin/chromium")
LEAFLET = Path("/usr/share/javascript/leaflet")  # Debian's libjs-leaflet
JQUERY = Path("/usr/share/javascript/jquery/jquery.min.js")  # Debian's libjs-jquery


def three_cells():
    return gpd.GeoDataFrame(
        {
            "cell": [0, 1, 2],
            "name": ["Vest", "Midt", "Øst"],
            "lat": [56.0, 55.5, 55.5],
            "lng": [9.5, 10.5, 12.0],
        },
        geometry=[box(9.0, 55.5, 10.0, 56.5), box(10.0, 55.0, 11.0, 56.0), box(11.5, 55.0, 12.5, 56.0)],
        crs="EPSG:4326",
    )


@pytest.fixture
def test_photos(tmp_path):
    """Six test photos: cell 0 has three (two right, one sent to Øst), cell 1 two (one sent to
    Vest), cell 2 one (right). Each photo is one flat colour."""
    rows = pd.DataFrame(
        {
            "image_path": [f"p{i}.png" for i in range(6)],
            "cell": [0, 0, 0, 1, 1, 2],
            "lat": [56.1, 55.9, 56.0, 55.4, 55.6, 55.5],
            "lng": [9.4, 9.6, 9.5, 10.4, 10.6, 12.1],
        }
    )
    for i in range(6):
        Image.new("RGB", (32, 32), (40 * i, 200 - 30 * i, 90)).save(tmp_path / f"p{i}.png")
    probabilities = np.array(
        [
            [0.8, 0.1, 0.1],
            [0.6, 0.3, 0.1],
            [0.2, 0.1, 0.7],  # cell 0, wrong: Øst
            [0.5, 0.4, 0.1],  # cell 1, wrong: Vest
            [0.1, 0.8, 0.1],
            [0.1, 0.1, 0.8],
        ]
    )
    guesses = np.array([[56.1, 9.4], [56.0, 9.5], [55.5, 12.0], [56.0, 9.5], [55.5, 10.5], [55.6, 12.1]])
    return rows, probabilities, guesses, tmp_path


def bright_corner_grid():
    grid = np.full((2, 2), 0.05)
    grid[0, 0] = 1.0  # the class token draws on the top-left patch
    return grid


@pytest.fixture
def data(test_photos):
    rows, probabilities, guesses, root = test_photos
    grids = np.stack([bright_corner_grid()] * len(rows))
    return explorer.explorer_data(
        rows,
        probabilities,
        three_cells(),
        guesses,
        root,
        shown=np.arange(len(rows)),
        rollout_grids=grids,
        guess_label="weighted top-2",
    )


def decoded(uri):
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB"), float)


def test_cells_know_their_accuracy_and_where_their_errors_go(data):
    vest, midt, ost = data["cells"]
    assert (vest["tested"], vest["correct"], vest["accuracy"]) == (3, 2, pytest.approx(2 / 3, abs=1e-4))
    assert vest["errors_to"] == [[2, 1]] and midt["errors_to"] == [[0, 1]] and ost["errors_to"] == []
    assert vest["photos"] == [0, 1, 2] and ost["accuracy"] == 1.0
    assert explorer.accuracy_colour(1.0) != explorer.accuracy_colour(0.0) != explorer.NO_TEST_COLOUR
    assert ost["colour"] == explorer.accuracy_colour(1.0)
    assert "went to: Øst (1)" in explorer.cell_summary(data, 0)


def test_photos_carry_the_truth_the_guess_and_the_rollout(data):
    photo = data["photos"][2]
    assert photo["truth"] == [56.0, 9.5] and photo["predicted"] == 2 and not photo["correct"]
    assert photo["p_true"] == 0.2 and photo["top"][0] == [2, 0.7]
    assert photo["guess_km"] == pytest.approx(geo.haversine_km(56.0, 9.5, 55.5, 12.0), abs=0.01)
    assert len(photo["probabilities"]) == 3
    picture, rollout = decoded(photo["image"]), decoded(photo["rollout"])
    assert picture.shape == (explorer.PHOTO_SIDE, explorer.PHOTO_SIDE, 3)
    assert picture.reshape(-1, 3).mean(0) == pytest.approx([80, 140, 90], abs=6)  # the photo's own colour
    half = explorer.PHOTO_SIDE // 2
    assert rollout[:half, :half].mean() > rollout[half:, half:].mean() + 40  # bright where attention is
    summary = explorer.photo_summary(data, 2)
    assert "Weighted top-2: (55.5000, 12.0000)" in summary and f"{photo['guess_km']:.1f} km" in summary


def test_photos_shown_are_a_few_per_cell_and_bad_input_is_named(test_photos):
    rows, probabilities, guesses, root = test_photos
    shown = explorer.pick_photos(rows, per_cell=1)
    assert sorted(rows.loc[shown, "cell"]) == [0, 1, 2]
    data = explorer.explorer_data(rows, probabilities, three_cells(), guesses, root, shown=shown)
    assert len(data["photos"]) == 3 and all(photo["rollout"] is None for photo in data["photos"])
    assert data["cells"][0]["tested"] == 3  # accuracies count every photo, shown or not
    with pytest.raises(ValueError, match="one row of probabilities over the 3 cells"):
        explorer.explorer_data(rows, probabilities[:, :2], three_cells(), guesses, root)
    with pytest.raises(ValueError, match="one rollout grid per shown photo"):
        explorer.explorer_data(
            rows, probabilities, three_cells(), guesses, root, shown=shown, rollout_grids=[]
        )
    with pytest.raises(ValueError, match="outside 0-2"):
        explorer.explorer_data(rows.assign(cell=7), probabilities, three_cells(), guesses, root)
    with pytest.raises(ValueError, match="per_cell"):
        explorer.pick_photos(rows, per_cell=0)


def test_the_widget_links_the_map_the_strip_and_the_panel(data):
    view = explorer.Explorer(data, three_cells())
    assert view.state()["cell"] is None and view.state()["fills"][2] == data["cells"][2]["colour"]
    view._clicked_cell(feature={"properties": {"cell": 0}})  # what a click on the map calls
    state = view.state()
    assert state["cell"] == 0 and state["mode"] == "accuracy"
    assert state["strip"] == ["p0.png", "p1.png", "p2.png"]
    assert state["lines"] == [[[56.0, 9.5], [55.5, 12.0]]]  # Vest's one error went to Øst
    assert "top-1 accuracy 67%" in state["text"] and "Øst (1)" in state["text"]
    assert state["fills"][0] == data["cells"][0]["colour"]  # coloured by accuracy
    view.strip.children[2].children[1].click()  # the third photo's button
    state = view.state()
    assert (state["cell"], state["photo"], state["mode"]) == (0, 2, "probability")
    assert state["fills"][2] == explorer.probability_colour(0.7, 0.7)  # its most probable cell: darkest
    assert state["fills"][1] == explorer.probability_colour(0.1, 0.7) != state["fills"][2]
    assert state["lines"] == [[[56.0, 9.5], [55.5, 12.0]]]  # from the true place to the guess
    assert (
        f"{data['photos'][2]['guess_km']:.1f} km" in state["text"] and "p(true cell) 20.0%" in state["text"]
    )
    assert data["photos"][2]["rollout"] in view.detail.value
    view.select_cell(2)
    assert view.state()["strip"] == ["p5.png"] and view.state()["lines"] == []
    with pytest.raises(ValueError, match="No cell 9"):
        view.select_cell(9)
    with pytest.raises(ValueError, match="No photo 6"):
        view.select_photo(6)


def test_the_page_is_written_with_its_data(data, isolated_build):
    path, fmap = explorer.write_explorer("smoke", data, three_cells())
    assert path == config.build_dir("smoke") / "maps" / "08_explorer.html"
    text = path.read_text(encoding="utf-8")
    found = re.search(r"data = (\{.*?\});\n", text, re.S)
    assert json.loads(found.group(1).replace("<\\/", "</")) == json.loads(json.dumps(data))
    assert fmap.get_name() in text and "ex-strip" in text


needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists() or not (LEAFLET / "leaflet.js").exists(),
    reason="needs Debian's chromium and libjs-leaflet (apt-get install -y chromium libjs-leaflet) to open "
    "the page with Leaflet served locally",
)


def blank_tile() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (256, 256), (235, 235, 230)).save(buffer, format="PNG")
    return buffer.getvalue()


def serve_locally(route):
    """Answer every request of the page from this machine: Leaflet and jQuery from Debian's
    packages, map tiles as a blank PNG, folium's other assets (Bootstrap, icons) empty."""
    url = route.request.url
    if url.startswith(("file:", "data:")):
        return route.continue_()
    name = url.split("?")[0].rsplit("/", 1)[-1]
    if name in ("leaflet.js", "leaflet.css"):
        return route.fulfill(path=str(LEAFLET / name))
    if name.startswith("jquery") and name.endswith(".js") and JQUERY.exists():
        return route.fulfill(path=str(JQUERY))
    if name.endswith(".png"):
        return route.fulfill(body=blank_tile(), content_type="image/png")
    kind = "text/css" if name.endswith(".css") else "application/javascript"
    return route.fulfill(body="", content_type=kind)


@needs_chromium
def test_the_page_runs_in_chromium_without_script_errors(data, isolated_build, tmp_path):
    playwright = pytest.importorskip(
        "playwright.sync_api", reason="pip install playwright (no browser download)"
    )
    path, _ = explorer.write_explorer("smoke", data, three_cells())
    errors = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            page.on("console", lambda message: message.type == "error" and errors.append(message.text))
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.route("**/*", serve_locally)
            page.goto(path.as_uri())
            page.wait_for_function("window.explorer !== undefined")
            # click the map where Vest's centroid is: the cell's own click handler answers
            x, y = page.evaluate(
                "() => { const p = explorer.map.latLngToContainerPoint([56.0, 9.5]);"
                " const box = explorer.map.getContainer().getBoundingClientRect();"
                " return [box.left + p.x, box.top + p.y]; }"
            )
            page.mouse.click(x, y)
            assert "Vest" in page.inner_text("#ex-detail") and "67 %" in page.inner_text("#ex-detail")
            assert page.locator("#ex-strip img").count() == 3
            page.locator("#ex-strip img").nth(2).click()
            detail = page.inner_text("#ex-detail")
            assert f"{data['photos'][2]['guess_km']:.1f} km" in detail and "wrong" in detail
            assert page.locator("#ex-views img").count() == 2  # the photo and its rollout
            page.screenshot(path=str(tmp_path / "explorer.png"))
            print(f"screenshot: {tmp_path / 'explorer.png'}")
        finally:
            browser.close()
    assert errors == []
