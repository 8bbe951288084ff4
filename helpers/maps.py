"""Interactive maps with folium (Leaflet) that students can pan, zoom and click.

Every map is saved as one standalone HTML file in the build folder (open it in any browser)
and, returned as the last line of a notebook cell, is shown inline in JupyterLab.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import branca.colormap as cm
import folium
import geopandas as gpd
import numpy as np
from folium import plugins
from PIL import Image

from helpers import geo
from helpers.config import atomic_target

DENMARK_CENTRE = (56.0, 10.8)  # (lat, lng) degrees: roughly the middle of the Kattegat view
# Leaflet needs only a few hundred metres of detail at country scale; simplifying keeps the
# HTML small (tolerance in degrees, about 200 m).
BORDER_TOLERANCE_DEG = 0.002


def base_map(zoom_start: int = 7) -> folium.Map:
    """An OpenStreetMap base map centred on Denmark."""
    return folium.Map(
        location=DENMARK_CENTRE, zoom_start=zoom_start, tiles="OpenStreetMap", control_scale=True
    )


def add_borders(fmap: folium.Map, areas: gpd.GeoDataFrame, name: str, label: str = "name") -> folium.Map:
    """Draw the outlines of ``areas`` (e.g. municipalities) with ``label`` as hover tooltip."""
    simple = areas[[label, "geometry"]].copy()
    simple["geometry"] = simple.geometry.simplify(BORDER_TOLERANCE_DEG, preserve_topology=True)
    folium.GeoJson(
        simple,
        name=name,
        style_function=lambda _: {"color": "#444444", "weight": 1, "fillOpacity": 0.0},
        highlight_function=lambda _: {"weight": 3, "color": "#d62728"},
        tooltip=folium.GeoJsonTooltip(fields=[label], labels=False),
    ).add_to(fmap)
    return fmap


def locations_map(
    points: gpd.GeoDataFrame, borders: gpd.GeoDataFrame | None = None, border_label: str = "name"
) -> folium.Map:
    """A map of (lat, lng) points: a heat map layer and a clustered-marker layer, plus borders.

    ``points`` needs columns ``lat`` and ``lng`` in degrees. Clusters open up as you zoom in;
    the layer control (top right) turns each layer on and off.
    """
    fmap = base_map()
    latlng = points[["lat", "lng"]].round(5).to_numpy().tolist()
    plugins.HeatMap(latlng, name="density (heat map)", radius=9, blur=12, min_opacity=0.3).add_to(fmap)
    plugins.FastMarkerCluster(latlng, name="locations (clusters)", show=False).add_to(fmap)
    if borders is not None:
        add_borders(fmap, borders, "borders", border_label)
    folium.LayerControl(collapsed=False).add_to(fmap)
    return fmap


def cells_map(
    cells: gpd.GeoDataFrame, value: str, fields: list[str], aliases: list[str], caption: str
) -> folium.Map:
    """A choropleth of ``cells`` coloured by column ``value``, with a tooltip of ``fields``."""
    shown = cells[[*dict.fromkeys([*fields, value]), "geometry"]].copy()
    shown["geometry"] = shown.geometry.simplify(BORDER_TOLERANCE_DEG / 4, preserve_topology=True)
    colours = cm.linear.YlGnBu_09.scale(float(shown[value].min()), float(shown[value].max()))
    colours.caption = caption
    fmap = base_map()
    folium.GeoJson(
        shown,
        name=caption,
        style_function=lambda feature: {
            "fillColor": colours(feature["properties"][value]),
            "color": "#333333",
            "weight": 0.6,
            "fillOpacity": 0.7,
        },
        highlight_function=lambda _: {"weight": 3, "color": "#d62728"},
        tooltip=folium.GeoJsonTooltip(fields=fields, aliases=aliases, localize=True),
    ).add_to(fmap)
    colours.add_to(fmap)
    return fmap


def _thumbnail(path: Path, side: int = 128) -> str:
    """An ``<img>`` tag holding the image at ``path`` as a small embedded JPEG."""
    with Image.open(path) as image:
        buffer = io.BytesIO()
        image.convert("RGB").resize((side, side)).save(buffer, format="JPEG", quality=85)
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return f'<img src="data:image/jpeg;base64,{encoded}" width="{side}" height="{side}">'


def image_markers_map(table, folder: Path, borders: gpd.GeoDataFrame | None = None) -> folium.Map:
    """Markers at each image's (lat, lng); a click opens the image and its cell in a popup.

    The thumbnails are embedded in the HTML (base64 JPEG), so keep ``table`` to a few hundred rows.
    """
    fmap = base_map()
    if borders is not None:
        add_borders(fmap, borders, "borders")
    for row in table.itertuples():
        place = f"cell {row.cell} &middot; ({row.lat:.4f}, {row.lng:.4f})"
        html = f"{_thumbnail(Path(folder) / row.image_path)}<br>{place}"
        folium.CircleMarker(
            [row.lat, row.lng], radius=4, color="#d62728", fill=True, popup=folium.Popup(html, max_width=160)
        ).add_to(fmap)
    return fmap


def prediction_explorer(table, probabilities, cells, folder: Path, borders=None) -> folium.Map:
    """One marker per image at its true location; a click shows the image, the top-3 cells
    with their probabilities and the error in km; a line joins it to the predicted centroid.

    ``table`` has ``image_path``, ``lat``, ``lng``, ``cell``; ``probabilities`` its rows'
    predictions (n, n_cells). Thumbnails are embedded, so keep it to a few hundred images.
    """
    ordered = cells.sort_values("cell").reset_index(drop=True)
    fmap = base_map()
    if borders is not None:
        add_borders(fmap, borders, "borders")
    for row, p in zip(table.itertuples(), probabilities, strict=True):
        top = np.argsort(-p)[:3]
        guess = ordered.loc[top[0], ["lat", "lng"]].to_numpy(dtype=float)
        error = float(geo.haversine_km(row.lat, row.lng, *guess))
        lines = "".join(
            f"<li>{ordered.loc[c, 'name']}: {p[c]:.0%}{' &#10003;' if c == row.cell else ''}</li>"
            for c in top
        )
        html = (
            f"{_thumbnail(Path(folder) / row.image_path)}<br>true cell: {ordered.loc[row.cell, 'name']}"
            f"<ol>{lines}</ol>error {error:.0f} km"
        )
        colour = "#2ca02c" if top[0] == row.cell else "#d62728"
        folium.CircleMarker(
            [row.lat, row.lng], radius=4, color=colour, fill=True, popup=folium.Popup(html, max_width=220)
        ).add_to(fmap)
        folium.PolyLine([[row.lat, row.lng], guess.tolist()], color=colour, weight=1, opacity=0.6).add_to(
            fmap
        )
    return fmap


def save_map(fmap: folium.Map, path: Path) -> Path:
    """Write ``fmap`` as standalone HTML at ``path`` atomically (temporary file, then rename)."""
    with atomic_target(path) as temporary:
        fmap.save(str(temporary))
    return Path(path)
