"""The "guess where" game: GeoGuessr against the model, in JupyterLab or in any browser.

One standalone HTML page (folium/Leaflet) holds a few photos. For each: look at it, click
the map where you think it was taken, press *Reveal*. The page then shows the true place,
the model's refined guess, the model's probability of every cell, and both players' points
(GeoScore on the Denmark scale, ``helpers.beyond``), with a running total. The page needs no
Python once written: put it on a course page. Shown as the last line of a notebook cell,
the same map is interactive inline in JupyterLab.

Your own photo: :func:`guess_photo` resizes it to the model's input and makes a one-photo
page (give its true place to be scored). In JupyterLab, upload the photo with the file
browser and pass its path.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import folium
import numpy as np
import pandas as pd
import shapely
from branca.element import Element
from PIL import Image

from helpers import beyond, config, geo, maps

DISPLAY_SIDE = 256  # px of the photo shown on the page (upscaled from the model's input size)


def image_data_uri(image, side: int = DISPLAY_SIDE) -> str:
    """A ``data:`` URI (JPEG, base64) of ``image`` resized to ``side`` px: a path, bytes or PIL image."""
    picture = _open(image)
    buffer = io.BytesIO()
    picture.resize((side, side)).save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def _open(image) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, bytes | bytearray | memoryview):
        source = io.BytesIO(bytes(image))
    else:
        source = Path(image)
        if not source.exists():
            raise FileNotFoundError(f"No photo at {source}; give the path of a JPEG or PNG file.")
    try:
        with Image.open(source) as picture:
            return picture.convert("RGB")
    except OSError as error:
        raise ValueError(f"Could not read the photo ({error}); use a JPEG or PNG file.") from None


def photo_batch(image, size: int) -> np.ndarray:
    """One photo as the model's input: float32 (1, size, size, 3), RGB values 0-255.

    Resized to ``size`` px square as notebook 03 stores images (no crop), so a wide photo is
    squeezed.
    """
    picture = _open(image).resize((size, size), Image.BILINEAR)
    return np.asarray(picture, dtype="float32")[None]


def rounds_for(
    table: pd.DataFrame,
    probabilities,
    guesses_latlng,
    photos: list,
    scale_km: float,
    cells: pd.DataFrame,
) -> list[dict]:
    """The page's data: one round per photo.

    ``table`` has a ``name`` per photo and, when known, the true ``lat``/``lng`` (NaN when
    not); ``probabilities`` (n, n_cells) and ``guesses_latlng`` (n, 2) are the model's;
    ``photos`` are paths, bytes or PIL images. Each round holds the photo, the model's
    guess, its error (km) and points (``scale_km``, :func:`beyond.geoscore`) when the truth
    is known, the probabilities (4 decimals) and the model's top-3 cells by name.
    """
    probabilities = np.asarray(probabilities, dtype=float)
    guesses_latlng = np.asarray(guesses_latlng, dtype=float)
    if not (len(table) == len(probabilities) == len(guesses_latlng) == len(photos)):
        raise ValueError("table, probabilities, guesses_latlng and photos need one entry per photo.")
    names = cells.sort_values("cell")["name"].to_numpy()
    rounds = []
    for i, row in enumerate(table.itertuples()):
        truth = [float(row.lat), float(row.lng)] if np.isfinite([row.lat, row.lng]).all() else None
        guess = [float(v) for v in guesses_latlng[i]]
        error = float(geo.haversine_km(*truth, *guess)) if truth else None
        top = np.argsort(-probabilities[i])[:3]
        rounds.append(
            {
                "name": str(row.name),
                "image": image_data_uri(photos[i]),
                "truth": truth,
                "model": guess,
                "model_km": None if error is None else round(error, 2),
                "model_points": None if error is None else int(np.round(beyond.geoscore(error, scale_km))),
                "probabilities": [round(float(p), 4) for p in probabilities[i]],
                "top": [[str(names[c]), round(float(probabilities[i, c]), 3)] for c in top],
            }
        )
    return rounds


def cells_layer(fmap: folium.Map, cells, name: str, columns: tuple[str, ...] = ()) -> folium.GeoJson:
    """The geocells as one GeoJSON layer of ``fmap``, outlined and unfilled, ``name`` as tooltip.

    Borders are simplified to about 200 m and coordinates rounded to 1e-4 degrees (about
    10 m): a quarter of the bytes, the same look at country scale. ``columns`` are extra
    properties the page's script reads (``cell`` and ``name`` are always there). The page's
    script styles the cells; see :func:`add_page_script`.
    """
    shown = cells[["cell", "name", *columns, "geometry"]].copy()
    simple = shown.geometry.simplify(maps.BORDER_TOLERANCE_DEG, preserve_topology=True)
    shown["geometry"] = shapely.set_precision(simple.to_numpy(), 1e-4)
    return folium.GeoJson(
        shown,
        name=name,
        style_function=lambda _: {"color": "#777777", "weight": 0.4, "fillOpacity": 0.0},
        tooltip=folium.GeoJsonTooltip(fields=["name"], labels=False),
    ).add_to(fmap)


def add_page_script(fmap: folium.Map, panel: str, script: str, names: dict, data: dict) -> folium.Map:
    """Put a panel (HTML) and a plain Leaflet script on ``fmap``'s page.

    ``names`` replace placeholders such as ``{map}`` in ``script`` by text (the JavaScript
    names of folium objects, numbers); ``data`` replace placeholders by JSON. The data go in
    last, so no placeholder inside them is replaced, and "</" is escaped so that no string
    can end the ``<script>``. The script runs in the saved page and inside JupyterLab's output
    frame alike.
    """
    root = fmap.get_root()
    root.html.add_child(Element(panel))
    for placeholder, text in names.items():
        script = script.replace(placeholder, text)
    for placeholder, value in data.items():
        script = script.replace(placeholder, json.dumps(value).replace("</", "<\\/"))
    root.script.add_child(Element(script))
    return fmap


def guess_where_map(rounds: list[dict], cells, scale_km: float, title: str = "Guess where") -> folium.Map:
    """The game as a folium map: a panel with the photo, your click, *Reveal*, the points.

    ``rounds`` from :func:`rounds_for`; ``cells`` the geocells (GeoDataFrame with ``cell``
    and ``name``), drawn coloured by the model's probability after each reveal.
    """
    if not rounds:
        raise ValueError("No photos to play with: give at least one round.")
    fmap = maps.base_map()
    layer = cells_layer(fmap, cells, "model's probability per cell")
    add_page_script(
        fmap,
        _PANEL.replace("{title}", html.escape(title)),
        _SCRIPT,
        {
            "{map}": fmap.get_name(),
            "{cells}": layer.get_name(),
            "{scale}": f"{float(scale_km):.6g}",
            "{radius}": f"{geo.EARTH_RADIUS_KM}",
        },
        {"{rounds}": rounds},
    )
    return fmap


def write_guess_where(
    profile: str | dict,
    table: pd.DataFrame,
    probabilities,
    guesses_latlng,
    photos: list,
    cells,
    scale_km: float,
    name: str = "11_guess_where.html",
    title: str = "Guess where: you against the model",
) -> tuple[Path, folium.Map]:
    """Write the game for ``table``'s photos to ``build/<profile>/maps/<name>``; return (path, map).

    The headless way (``make all``, the report links the page); the returned map shows the
    same game inline in JupyterLab. Arguments as :func:`rounds_for`.
    """
    rounds = rounds_for(table, probabilities, guesses_latlng, photos, scale_km, cells)
    fmap = guess_where_map(rounds, cells, scale_km, title)
    path = maps.save_map(fmap, config.output_dir(profile, "maps") / name)
    return path, fmap


def guess_photo(photo, locate, size: int, cells, scale_km: float, true_latlng=None, name: str = "your photo"):
    """A one-photo game for your own ``photo`` (path, bytes or PIL image): the folium map.

    ``locate`` maps a batch of images to (probabilities, guesses (lat, lng)), e.g.
    ``beyond.locator(...)``; ``size`` is the model's input size (px). With
    ``true_latlng=(lat, lng)`` the page scores you and the model; without it, it shows the
    model's guess and how far yours is from it.
    """
    probabilities, guesses = locate(photo_batch(photo, size))
    truth = (np.nan, np.nan) if true_latlng is None else tuple(float(v) for v in true_latlng)
    table = pd.DataFrame({"name": [name], "lat": [truth[0]], "lng": [truth[1]]})
    rounds = rounds_for(table, probabilities, guesses, [photo], scale_km, cells)
    return guess_where_map(rounds, cells, scale_km, title=f"Guess where: {name}")


_PANEL = """
<div id="gw-panel" style="position:fixed;top:10px;left:50px;z-index:1000;width:280px;background:white;
 padding:8px;border-radius:6px;box-shadow:0 1px 6px rgba(0,0,0,.35);font:13px sans-serif">
 <b>{title}</b>
 <div id="gw-strip" style="margin:4px 0"></div>
 <img id="gw-photo" style="width:256px;height:256px;display:block;image-rendering:pixelated">
 <div id="gw-help" style="margin:4px 0">Click the map where you think this photo was taken.</div>
 <button id="gw-reveal" disabled>Reveal</button> <button id="gw-next">Next photo</button>
 <div id="gw-result" style="margin-top:4px"></div>
 <div id="gw-total" style="margin-top:4px;color:#444"></div>
</div>
"""

# Plain Leaflet: runs in the saved page and inside JupyterLab's output frame alike.
_SCRIPT = """
document.addEventListener("DOMContentLoaded", function () {
  const map = {map}, cells = {cells}, rounds = {rounds}, SCALE = {scale}, R = {radius};
  const marks = L.layerGroup().addTo(map);
  const played = {}, total = {you: 0, model: 0, rounds: 0};
  let current = 0, yours = null, revealed = false;
  const $ = (id) => document.getElementById(id);
  function km(a, b) {
    const rad = Math.PI / 180, dlat = (b[0] - a[0]) * rad, dlng = (b[1] - a[1]) * rad;
    const h = Math.sin(dlat / 2) ** 2 + Math.cos(a[0] * rad) * Math.cos(b[0] * rad) * Math.sin(dlng / 2) ** 2;
    return 2 * R * Math.asin(Math.sqrt(Math.min(1, h)));
  }
  const points = (d) => Math.round(5000 * Math.exp(-d / SCALE));
  function dot(at, colour, label) {
    L.circleMarker(at, {radius: 7, color: colour, fillColor: colour, fillOpacity: 0.9})
      .bindTooltip(label, {permanent: true, direction: "right"}).addTo(marks);
  }
  function paint(probabilities) {
    const top = probabilities ? Math.max(...probabilities) : 1;
    cells.eachLayer(function (layer) {
      const p = probabilities ? probabilities[layer.feature.properties.cell] / top : 0;
      layer.setStyle({fillColor: "#d62728", fillOpacity: 0.75 * p});
    });
  }
  function show(i) {
    current = i; yours = null; revealed = false; marks.clearLayers(); paint(null);
    const round = rounds[i];
    $("gw-photo").src = round.image;
    $("gw-reveal").disabled = true;
    $("gw-result").innerHTML = "";
    $("gw-help").textContent = "Photo " + (i + 1) + " of " + rounds.length + " (" + round.name +
      "): click the map where you think it was taken.";
    document.querySelectorAll("#gw-strip img").forEach(function (im, j) {
      im.style.outline = j === i ? "2px solid #d62728" : "";
    });
  }
  rounds.forEach(function (round, i) {
    const im = document.createElement("img");
    im.src = round.image; im.width = 32; im.height = 32; im.style.margin = "1px"; im.style.cursor = "pointer";
    im.title = round.name; im.onclick = () => show(i);
    $("gw-strip").appendChild(im);
  });
  map.on("click", function (e) {
    if (revealed) return;
    yours = [e.latlng.lat, e.latlng.lng];
    marks.clearLayers(); dot(yours, "#ff7f0e", "you");
    $("gw-reveal").disabled = false;
  });
  cells.eachLayer((layer) => layer.on("click", (e) => map.fire("click", e)));
  $("gw-reveal").onclick = function () {
    if (!yours || revealed) return;
    revealed = true;
    const round = rounds[current];
    paint(round.probabilities);
    dot(round.model, "#1f77b4", "model");
    const top = round.top.map((t) => t[0] + " " + Math.round(100 * t[1]) + "%").join(", ");
    let text = "Model's top cells: " + top + ".<br>";
    if (round.truth) {
      dot(round.truth, "#2ca02c", "true place");
      L.polyline([yours, round.truth], {color: "#ff7f0e", weight: 2}).addTo(marks);
      L.polyline([round.model, round.truth], {color: "#1f77b4", weight: 2}).addTo(marks);
      const d = km(yours, round.truth), p = points(d);
      text += "You: " + d.toFixed(1) + " km, <b>" + p + "</b> points. Model: " + round.model_km.toFixed(1) +
        " km, <b>" + round.model_points + "</b> points.";
      if (!played[current]) {
        played[current] = true; total.you += p; total.model += round.model_points; total.rounds += 1;
      }
      $("gw-total").textContent = "Total after " + total.rounds + " photo(s): you " + total.you +
        ", model " + total.model + " (5000 a photo at most).";
    } else {
      L.polyline([yours, round.model], {color: "#1f77b4", weight: 2}).addTo(marks);
      text += "No true place given: you are " + km(yours, round.model).toFixed(1) + " km from the model.";
    }
    $("gw-result").innerHTML = text;
  };
  $("gw-next").onclick = () => show((current + 1) % rounds.length);
  show(0);
});
"""
