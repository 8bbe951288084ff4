"""A linked explorer of the model on the map: cells, their test photos, and what the model says.

The map shows the geocells coloured by their test top-1 accuracy. Click a cell: its test
photos appear in a strip, and a detail panel gives the cell's accuracy and the cells its
wrong answers go to (lines from the cell's centroid, thicker for more errors, and those
cells outlined). Click a photo: the panel gives its true place, the model's top cells and
its probability of the true one, the refined guess (for instance notebook 08's weighted
top-k or notebook 11's retrieval refinement) and its distance from the true place in km,
and the attention rollout over the photo; the map turns into the model's probability over
all cells, with the true place and the guess marked.

Two views of the same data (:func:`explorer_data`):

* :class:`Explorer`, Jupyter widgets (ipywidgets and ipyleaflet) for JupyterLab; its Python
  side can be driven without a browser (:meth:`Explorer.select_cell`,
  :meth:`Explorer.select_photo`, :meth:`Explorer.state`);
* :func:`write_explorer`, one standalone HTML page (folium/Leaflet and a plain script,
  built with the plumbing of the "guess where" page, ``helpers.guess``) for a course website.

Coordinates are (lat, lng) in degrees everywhere; distances in km (haversine).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from PIL import Image

from helpers import attention, config, geo, guess, maps

PHOTO_SIDE = 128  # px of a photo in the strip and the detail panel
NO_TEST_COLOUR = "#bbbbbb"  # a cell without test photos


def accuracy_colour(accuracy) -> str:
    """The fill colour of a cell with test top-1 ``accuracy`` (0-1): red (0) to green (1); grey if None."""
    if accuracy is None or not np.isfinite(accuracy):
        return NO_TEST_COLOUR
    return matplotlib.colors.to_hex(matplotlib.colormaps["RdYlGn"](float(np.clip(accuracy, 0, 1))))


def pick_photos(rows: pd.DataFrame, per_cell: int = 3, seed: int = 0) -> np.ndarray:
    """Positions (into ``rows``) of up to ``per_cell`` test photos of each cell, drawn at random.

    Every test photo counts in the accuracies; these are the ones shown (each is embedded in
    the page, twice with its rollout, so a few per cell keep the page small).
    """
    if per_cell < 1:
        raise ValueError(f"per_cell must be at least 1 (got {per_cell}).")
    order = np.random.default_rng(seed).permutation(len(rows))
    cells = rows["cell"].to_numpy()[order]
    taken = pd.Series(order).groupby(cells).head(per_cell)
    return np.sort(taken.to_numpy())


def rollouts(classifier, rows: pd.DataFrame, root, size: int, batch_size: int = 32) -> np.ndarray:
    """The attention rollout grid (rows, columns) of each photo of ``rows``, in order.

    ``classifier`` is a workbook ViT (``helpers.model``); the images are read from ``root``
    at the model's ``size`` px (``helpers.attention.rollout_batches``). Unreadable files
    raise, so that grids and rows stay aligned.
    """
    batches = list(attention.rollout_batches(classifier, rows, root, size, batch_size))
    if sum(len(part) for part, _, _ in batches) != len(rows):
        raise ValueError("Some photos could not be read; choose readable rows for the explorer.")
    return np.concatenate([grids for _, _, grids in batches]) if batches else np.zeros((0, 1, 1))


def photo_views(photo, grid=None) -> tuple[str, str | None]:
    """(the photo, the photo under its attention rollout ``grid``) as JPEG data URIs of
    :data:`PHOTO_SIDE` px; the second is None without a grid."""
    with Image.open(photo) as opened:
        picture = opened.convert("RGB")
    if grid is None:
        return guess.image_data_uri(picture, PHOTO_SIDE), None
    grid = np.asarray(grid, dtype=float)
    side = grid.shape[-1] * max(1, PHOTO_SIDE // grid.shape[-1])
    pixels = np.asarray(picture.resize((side, side), Image.BILINEAR))
    overlay = (attention.overlay(pixels, grid) * 255).round().astype("uint8")
    return guess.image_data_uri(picture, PHOTO_SIDE), guess.image_data_uri(
        Image.fromarray(overlay), PHOTO_SIDE
    )


def explorer_data(
    rows: pd.DataFrame,
    probabilities,
    cells,
    guesses_latlng,
    image_root,
    shown=None,
    rollout_grids=None,
    guess_label: str = "refined guess",
) -> dict:
    """Everything both views show, as plain (JSON-ready) Python.

    ``rows`` are the test photos (``image_path`` relative to ``image_root``, true ``cell``,
    ``lat``, ``lng``); ``probabilities`` (n, n_cells) the model's; ``guesses_latlng`` (n, 2)
    its refined guesses, named ``guess_label``; ``cells`` the geocells (``cell``, ``name``,
    centroid ``lat``/``lng``). Accuracies count every row; the photos shown are the rows at
    positions ``shown`` (default: :func:`pick_photos`), with ``rollout_grids`` (one per shown
    photo, or None) drawn over them.

    Returns ``{"cells": [...], "photos": [...], "guess_label": ...}``. A cell: ``cell``,
    ``name``, ``centroid``, ``tested`` (test photos), ``correct``, ``accuracy`` (None
    untested), ``colour``, ``errors_to`` ([[cell, count], ...], most first) and ``photos``
    (indices into ``photos``). A photo: ``name``, ``cell``, ``truth``, ``predicted``,
    ``correct``, ``p_true``, ``top`` ([[cell, p], ...] of the top 3), ``probabilities`` (4
    decimals, in cell order), ``guess``, ``guess_km``, ``image`` and ``rollout`` (data URIs).
    """
    rows = rows.reset_index(drop=True)
    probabilities = np.asarray(probabilities, dtype=float)
    guesses_latlng = np.asarray(guesses_latlng, dtype=float)
    ordered = cells.sort_values("cell").reset_index(drop=True)
    n_cells = len(ordered)
    if not (ordered["cell"].to_numpy() == np.arange(n_cells)).all():
        raise ValueError("The cells must be numbered 0 to n-1 (the model's outputs), each once.")
    if probabilities.shape != (len(rows), n_cells) or guesses_latlng.shape != (len(rows), 2):
        raise ValueError(
            f"Need one row of probabilities over the {n_cells} cells and one (lat, lng) guess per "
            f"photo: {len(rows)} photos, probabilities {probabilities.shape}, guesses {guesses_latlng.shape}."
        )
    truth = rows["cell"].to_numpy(dtype=int)
    if len(truth) and (truth.min() < 0 or truth.max() >= n_cells):
        raise ValueError(f"A photo's true cell is outside 0-{n_cells - 1}; were the cells recomputed?")
    predicted = probabilities.argmax(axis=1)
    shown = pick_photos(rows) if shown is None else np.asarray(shown, dtype=int)
    if rollout_grids is not None and len(rollout_grids) != len(shown):
        raise ValueError(
            f"Need one rollout grid per shown photo: {len(shown)} photos, {len(rollout_grids)} grids."
        )

    photos = []
    for k, i in enumerate(shown):
        row = rows.iloc[i]
        grid = None if rollout_grids is None else rollout_grids[k]
        image, rollout = photo_views(Path(image_root) / row["image_path"], grid)
        top = np.argsort(-probabilities[i])[:3]
        true_place = [float(row["lat"]), float(row["lng"])]
        photos.append(
            {
                "name": str(Path(row["image_path"]).name),
                "cell": int(truth[i]),
                "truth": true_place,
                "predicted": int(predicted[i]),
                "correct": bool(predicted[i] == truth[i]),
                "p_true": round(float(probabilities[i, truth[i]]), 4),
                "top": [[int(c), round(float(probabilities[i, c]), 4)] for c in top],
                "probabilities": [round(float(p), 4) for p in probabilities[i]],
                "guess": [float(v) for v in guesses_latlng[i]],
                "guess_km": round(float(geo.haversine_km(*true_place, *guesses_latlng[i])), 2),
                "image": image,
                "rollout": rollout,
            }
        )

    cell_list = []
    for record in ordered.itertuples():
        mine = truth == record.cell
        tested, correct = int(mine.sum()), int((predicted[mine] == record.cell).sum())
        wrong = predicted[mine & (predicted != truth)]
        destinations, counts = np.unique(wrong, return_counts=True)
        order = np.lexsort((destinations, -counts))
        accuracy = correct / tested if tested else None
        cell_list.append(
            {
                "cell": int(record.cell),
                "name": str(record.name),
                "centroid": [float(record.lat), float(record.lng)],
                "tested": tested,
                "correct": correct,
                "accuracy": None if accuracy is None else round(accuracy, 4),
                "colour": accuracy_colour(accuracy),
                "errors_to": [[int(destinations[j]), int(counts[j])] for j in order],
                "photos": [k for k, photo in enumerate(photos) if photo["cell"] == record.cell],
            }
        )
    return {"cells": cell_list, "photos": photos, "guess_label": guess_label}


# --- what the panels say: the same words in the widget and on the page -----------------------


def cell_summary(data: dict, cell: int) -> str:
    """One line on a cell: its test accuracy and where its errors go."""
    entry = data["cells"][cell]
    if not entry["tested"]:
        return f"{entry['name']}: no test photos."
    errors = entry["tested"] - entry["correct"]
    text = (
        f"{entry['name']}: top-1 accuracy {entry['accuracy']:.0%} ({entry['correct']} of {entry['tested']} "
        "test photos)."
    )
    if errors:
        going = ", ".join(f"{data['cells'][c]['name']} ({n})" for c, n in entry["errors_to"])
        text += f" Its {errors} wrong answer{'s' if errors > 1 else ''} went to: {going}."
    return text


def photo_summary(data: dict, index: int) -> str:
    """One line on a photo: true place, the model's answer and the refined guess's distance."""
    photo, cells = data["photos"][index], data["cells"]
    top = ", ".join(f"{cells[c]['name']} {p:.0%}" for c, p in photo["top"])
    verdict = "right" if photo["correct"] else "wrong"
    return (
        f"{photo['name']}: taken at ({photo['truth'][0]:.4f}, {photo['truth'][1]:.4f}) in "
        f"{cells[photo['cell']]['name']}. The model's top cells: {top} ({verdict}); "
        f"p(true cell) {photo['p_true']:.1%}. {data['guess_label'].capitalize()}: "
        f"({photo['guess'][0]:.4f}, {photo['guess'][1]:.4f}), {photo['guess_km']:.1f} km from the true place."
    )


def probability_colour(p: float, top: float) -> str:
    """A cell's fill under one photo: white (0) to dark red (the photo's most probable cell)."""
    share = 0.0 if top <= 0 else float(np.clip(p / top, 0, 1))
    return matplotlib.colors.to_hex(matplotlib.colormaps["Reds"](0.05 + 0.9 * share))


# --- the JupyterLab widget --------------------------------------------------------------------


class Explorer:
    """The explorer as Jupyter widgets: an ipyleaflet map, a photo strip and a detail panel.

    Show it as the last line of a cell (or ``display(explorer.widget)``). Clicks call
    :meth:`select_cell` and :meth:`select_photo`, which a test or a student can call too;
    :meth:`state` says what is shown.
    """

    def __init__(self, data: dict, cells):
        import ipyleaflet
        import ipywidgets as widgets

        self.data = data
        self.selected_cell: int | None = None
        self.selected_photo: int | None = None
        self.mode = "accuracy"
        shown = cells[["cell", "name", "geometry"]].copy()
        shown["geometry"] = shown.geometry.simplify(maps.BORDER_TOLERANCE_DEG, preserve_topology=True)
        self._geojson = json.loads(shown.to_json())  # plain JSON types, as the widget sends them
        self.cells_layer = ipyleaflet.GeoJSON(
            data=self._geojson,
            style={"color": "#555555", "weight": 0.5, "fillOpacity": 0.7},
            style_callback=self._cell_style,
            hover_style={"weight": 2.5, "color": "#222222"},
            name="cells",
        )
        self.cells_layer.on_click(self._clicked_cell)
        self.marks = ipyleaflet.LayerGroup(name="selection")
        self.map = ipyleaflet.Map(
            center=maps.DENMARK_CENTRE, zoom=7, scroll_wheel_zoom=True, layout=widgets.Layout(height="520px")
        )
        self.map.add(self.cells_layer)
        self.map.add(self.marks)
        self.detail = widgets.HTML(
            value="<i>Click a cell on the map.</i>", layout=widgets.Layout(width="340px", padding="0 8px")
        )
        self.strip = widgets.HBox(layout=widgets.Layout(flex_flow="row wrap"))
        self.widget = widgets.VBox(
            [
                widgets.HBox([widgets.Box([self.map], layout=widgets.Layout(flex="1")), self.detail]),
                self.strip,
            ]
        )

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    # styles: by accuracy, or by one photo's probabilities
    def _cell_style(self, feature) -> dict:
        cell = int(feature["properties"]["cell"])
        style = {"color": "#555555", "weight": 0.5, "fillOpacity": 0.7}
        if self.mode == "probability" and self.selected_photo is not None:
            probabilities = self.data["photos"][self.selected_photo]["probabilities"]
            style["fillColor"] = probability_colour(probabilities[cell], max(probabilities))
        else:
            style["fillColor"] = self.data["cells"][cell]["colour"]
        if cell == self.selected_cell:
            style.update(color="#000000", weight=3)
        elif self.selected_cell is not None and self.mode == "accuracy":
            going = dict(map(tuple, self.data["cells"][self.selected_cell]["errors_to"]))
            if cell in going:
                style.update(color="#ff7f0e", weight=1.5 + 3 * going[cell] / max(going.values()))
        return style

    def _restyle(self):
        # ipyleaflet applies style_callback to every feature whenever its data are set
        self.cells_layer.data = copy.deepcopy(self._geojson)

    def _clicked_cell(self, feature=None, **_):
        self.select_cell(int(feature["properties"]["cell"]))

    def select_cell(self, cell: int):
        """Show ``cell``: its photos in the strip, its accuracy and where its errors go."""
        import ipyleaflet
        import ipywidgets as widgets

        if not 0 <= int(cell) < len(self.data["cells"]):
            raise ValueError(f"No cell {cell}: the cells are numbered 0-{len(self.data['cells']) - 1}.")
        self.selected_cell, self.selected_photo, self.mode = int(cell), None, "accuracy"
        entry = self.data["cells"][self.selected_cell]
        self.marks.clear()
        for destination, count in entry["errors_to"]:
            target = self.data["cells"][destination]["centroid"]
            self.marks.add(
                ipyleaflet.Polyline(
                    locations=[entry["centroid"], target], color="#ff7f0e", weight=1 + 2 * count, fill=False
                )
            )
            self.marks.add(ipyleaflet.CircleMarker(location=target, radius=4, color="#ff7f0e"))
        thumbnails = []
        for index in entry["photos"]:
            photo = self.data["photos"][index]
            picture = widgets.Image(value=_data_uri_bytes(photo["image"]), format="jpeg", width=72, height=72)
            button = widgets.Button(
                description=f"{'✓' if photo['correct'] else '✗'} {len(thumbnails) + 1}",
                layout=widgets.Layout(width="72px"),
                tooltip=photo["name"],
            )
            button.on_click(lambda _, index=index: self.select_photo(index))
            thumbnails.append(widgets.VBox([picture, button]))
        self.strip.children = thumbnails
        self.detail.value = _panel_html(self.data, self.selected_cell, None)
        self._restyle()

    def select_photo(self, index: int):
        """Show photo ``index`` (of ``data["photos"]``): the map turns to its probabilities, with
        its true place and the refined guess; the panel gives both and the rollout."""
        import ipyleaflet

        if not 0 <= int(index) < len(self.data["photos"]):
            raise ValueError(f"No photo {index}: there are {len(self.data['photos'])} photos.")
        photo = self.data["photos"][int(index)]
        self.selected_photo, self.selected_cell, self.mode = int(index), photo["cell"], "probability"
        self.marks.clear()
        self.marks.add(
            ipyleaflet.CircleMarker(location=photo["truth"], radius=7, color="#2ca02c", fill_opacity=0.9)
        )
        self.marks.add(
            ipyleaflet.CircleMarker(location=photo["guess"], radius=7, color="#1f77b4", fill_opacity=0.9)
        )
        self.marks.add(
            ipyleaflet.Polyline(locations=[photo["truth"], photo["guess"]], color="#1f77b4", weight=2)
        )
        self.detail.value = _panel_html(self.data, photo["cell"], self.selected_photo)
        self._restyle()

    def state(self) -> dict:
        """What is shown: the selected cell and photo, the map's colouring, the strip, the lines
        drawn, each cell's fill colour, and the panel's text."""
        import html
        import re

        return {
            "cell": self.selected_cell,
            "photo": self.selected_photo,
            "mode": self.mode,
            "strip": [child.children[1].tooltip for child in self.strip.children],
            "lines": [
                [list(map(float, layer.locations[0])), list(map(float, layer.locations[1]))]
                for layer in self.marks.layers
                if type(layer).__name__ == "Polyline"
            ],
            "fills": {
                int(feature["properties"]["cell"]): feature["properties"]["style"]["fillColor"]
                for feature in self.cells_layer.data["features"]
            },
            "text": html.unescape(re.sub(r"<[^>]+>", " ", self.detail.value)),
        }


def _data_uri_bytes(uri: str) -> bytes:
    import base64

    return base64.b64decode(uri.split(",", 1)[1])


def _panel_html(data: dict, cell: int, photo: int | None) -> str:
    import html

    parts = [f"<p>{html.escape(cell_summary(data, cell))}</p>"]
    if photo is not None:
        entry = data["photos"][photo]
        parts.append(f"<p>{html.escape(photo_summary(data, photo))}</p>")
        parts.append(f"<img src='{entry['image']}' width='{PHOTO_SIDE}' title='the photo'> ")
        if entry["rollout"]:
            parts.append(f"<img src='{entry['rollout']}' width='{PHOTO_SIDE}' title='attention rollout'>")
        parts.append(
            "<p style='font-size:90%;color:#444'>Map: the model's probability of each cell for this photo "
            f"(dark red: its top cell); green: the true place; blue: the {html.escape(data['guess_label'])}."
            " Right: the attention rollout, brighter where the class token draws more.</p>"
        )
    return "".join(parts)


# --- the standalone page ------------------------------------------------------------------------


def explorer_map(data: dict, cells, title: str = "Explorer: the model on the map"):
    """The explorer as one folium map whose page needs no Python (see the module's docstring)."""
    import html

    if not data["photos"] and not any(c["tested"] for c in data["cells"]):
        raise ValueError("Nothing to explore: no test photos.")
    fmap = maps.base_map()
    layer = guess.cells_layer(fmap, cells, "cells")
    return guess.add_page_script(
        fmap,
        _PANEL.replace("{title}", html.escape(title)),
        _SCRIPT,
        {"{map}": fmap.get_name(), "{cells}": layer.get_name()},
        {"{data}": data},
    )


def write_explorer(
    profile: str | dict, data: dict, cells, name: str = "08_explorer.html", title: str | None = None
):
    """Write the explorer page to ``build/<profile>/maps/<name>``; return (path, folium map)."""
    fmap = explorer_map(data, cells, title or "Explorer: the model on the map")
    return maps.save_map(fmap, config.output_dir(profile, "maps") / name), fmap


_PANEL = """
<div id="ex-panel" style="position:fixed;top:10px;right:10px;z-index:1000;width:330px;max-height:94vh;
 overflow-y:auto;background:white;padding:8px;border-radius:6px;box-shadow:0 1px 6px rgba(0,0,0,.35);
 font:13px sans-serif">
 <b>{title}</b>
 <div id="ex-help" style="margin:4px 0;color:#444">Cells are coloured by test top-1 accuracy (red 0 %,
  green 100 %, grey untested). Click a cell, then one of its photos.</div>
 <div id="ex-detail"></div>
 <div id="ex-strip" style="margin-top:4px"></div>
 <div id="ex-views" style="margin-top:4px"></div>
</div>
"""

# Plain Leaflet, as the "guess where" page: runs in the saved page and in JupyterLab's output frame.
_SCRIPT = """
document.addEventListener("DOMContentLoaded", function () {
  const map = {map}, cells = {cells}, data = {data};
  const marks = L.layerGroup().addTo(map);
  const $ = (id) => document.getElementById(id);
  let selectedCell = null, selectedPhoto = null;
  const percent = (x, digits) => (100 * x).toFixed(digits || 0) + " %";
  const text = (s) => String(s).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;",
    '"': "&quot;", "'": "&#39;"})[c]);
  function reds(share) {  // white to dark red, as matplotlib's "Reds" roughly
    const t = Math.max(0, Math.min(1, share));
    const channel = (white, dark) => Math.round(white - (white - dark) * t);
    return "rgb(" + channel(255, 103) + "," + channel(245, 0) + "," + channel(240, 13) + ")";
  }
  function paint() {
    const photo = selectedPhoto === null ? null : data.photos[selectedPhoto];
    const top = photo ? Math.max.apply(null, photo.probabilities) : 1;
    const going = {};
    if (selectedCell !== null && !photo) {
      data.cells[selectedCell].errors_to.forEach((e) => { going[e[0]] = e[1]; });
    }
    const most = Math.max.apply(null, [1].concat(Object.values(going)));
    cells.eachLayer(function (layer) {
      const cell = layer.feature.properties.cell;
      const style = {fillOpacity: 0.7, color: "#555555", weight: 0.5,
        fillColor: photo ? reds(photo.probabilities[cell] / top) : data.cells[cell].colour};
      if (cell === selectedCell) { style.color = "#000000"; style.weight = 3; }
      else if (going[cell]) { style.color = "#ff7f0e"; style.weight = 1.5 + 3 * going[cell] / most; }
      layer.setStyle(style);
    });
  }
  function cellText(cell) {
    const c = data.cells[cell];
    if (!c.tested) return text(c.name) + ": no test photos.";
    const errors = c.tested - c.correct;
    let s = "<b>" + text(c.name) + "</b>: top-1 accuracy " + percent(c.accuracy) + " (" + c.correct + " of " +
      c.tested + " test photos).";
    if (errors) s += " Its " + errors + " wrong answer" + (errors > 1 ? "s" : "") + " went to: " +
      c.errors_to.map((e) => text(data.cells[e[0]].name) + " (" + e[1] + ")").join(", ") + ".";
    return s;
  }
  function selectCell(cell) {
    selectedCell = cell; selectedPhoto = null; marks.clearLayers();
    const c = data.cells[cell];
    c.errors_to.forEach(function (e) {
      const target = data.cells[e[0]].centroid;
      L.polyline([c.centroid, target], {color: "#ff7f0e", weight: 1 + 2 * e[1]}).addTo(marks);
      L.circleMarker(target, {radius: 4, color: "#ff7f0e"}).addTo(marks);
    });
    $("ex-detail").innerHTML = cellText(cell);
    $("ex-views").innerHTML = "";
    $("ex-strip").innerHTML = "";
    c.photos.forEach(function (index, k) {
      const photo = data.photos[index], im = document.createElement("img");
      im.src = photo.image; im.width = 56; im.height = 56;
      im.title = photo.name + (photo.correct ? " (right)" : " (wrong)");
      im.style.margin = "1px"; im.style.cursor = "pointer";
      im.style.border = "2px solid " + (photo.correct ? "#2ca02c" : "#d62728");
      im.dataset.photo = index; im.onclick = () => selectPhoto(index);
      $("ex-strip").appendChild(im);
    });
    if (!c.photos.length) $("ex-strip").textContent = "No photos of this cell on the page.";
    paint();
  }
  function selectPhoto(index) {
    const photo = data.photos[index];
    if (selectedCell !== photo.cell) selectCell(photo.cell);
    selectedPhoto = index; marks.clearLayers();
    L.circleMarker(photo.truth, {radius: 7, color: "#2ca02c", fillOpacity: 0.9})
      .bindTooltip("true place").addTo(marks);
    L.circleMarker(photo.guess, {radius: 7, color: "#1f77b4", fillOpacity: 0.9})
      .bindTooltip(data.guess_label).addTo(marks);
    L.polyline([photo.truth, photo.guess], {color: "#1f77b4", weight: 2}).addTo(marks);
    const top = photo.top.map((t) => text(data.cells[t[0]].name) + " " + percent(t[1])).join(", ");
    $("ex-detail").innerHTML = cellText(photo.cell) + "<p><b>" + text(photo.name) + "</b>: taken at (" +
      photo.truth[0].toFixed(4) + ", " + photo.truth[1].toFixed(4) + ") in " +
      text(data.cells[photo.cell].name) +
      ". The model's top cells: " + top + " (" + (photo.correct ? "right" : "wrong") + "); p(true cell) " +
      percent(photo.p_true, 1) + ". " + text(data.guess_label) + ": " + photo.guess_km.toFixed(1) +
      " km from the true place.</p><p style='color:#444'>Map: the model's probability of each cell " +
      "(dark red: its top cell); green: the true place; blue: the " + text(data.guess_label) + ".</p>";
    $("ex-views").innerHTML = "";
    [[photo.image, "the photo"], [photo.rollout, "attention rollout"]].forEach(function (view) {
      if (!view[0]) return;
      const im = document.createElement("img");
      im.src = view[0]; im.width = 150; im.height = 150; im.title = view[1]; im.style.marginRight = "4px";
      $("ex-views").appendChild(im);
    });
    paint();
  }
  cells.eachLayer((layer) => layer.on("click", () => selectCell(layer.feature.properties.cell)));
  window.explorer = {selectCell: selectCell, selectPhoto: selectPhoto, map: map, data: data};
  paint();
});
"""
