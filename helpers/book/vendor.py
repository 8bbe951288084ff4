"""The book's own copies of the JavaScript and CSS its pages use, so that nothing comes from a CDN.

folium writes maps that load Leaflet, jQuery, Bootstrap, Font Awesome, the awesome-markers
and marker-cluster plugins, d3 (branca's colour scale) and a heat-map plugin from CDNs; Sphinx
loads MathJax from one. The book ships them instead:

* from the npm registry: the packages pinned in ``helpers/book/package.json`` and
  ``package-lock.json``, installed once with ``npm ci`` into a cache folder under the build
  folder (``<build>/.book-vendor/``, never into the repository) and installed again only when
  the lock file changes;
* from PyPI: folium's own heat-map plugin (``folium/templates/leaflet_heat.min.js``);
* written here: two small style sheets that folium loads from its GitHub repository and from
  an old Bootstrap CDN (icon rotation, and the Glyphicons rules cut out of Bootstrap 3).

:func:`localise` rewrites a page's CDN addresses to the copies under ``_static/vendor/``;
an address it does not know stops the build with its name, so a new folium version cannot
quietly bring a CDN back. Map tiles are the one thing still loaded from elsewhere
(:data:`TILE_HOSTS`).
"""

from __future__ import annotations

import hashlib
import html
import re
import shutil
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGE_FILES = ("package.json", "package-lock.json")
STAMP = ".installed-lock.sha256"  # the lock file's hash at the last `npm ci`

# Hosts of map tiles: the maps' background imagery, far too large to ship (OpenStreetMap's
# tile server). Without them the borders, cells and markers still draw on a blank map.
TILE_HOSTS = ("tile.openstreetmap.org",)

# CDN address -> path under _static/vendor/ (what folium 0.20 and branca 0.8 write).
CDN_COPIES = {
    "https://cdn.jsdelivr.net/npm/leaflet@1.9.3/dist/leaflet.js": "leaflet/leaflet.js",
    "https://cdn.jsdelivr.net/npm/leaflet@1.9.3/dist/leaflet.css": "leaflet/leaflet.css",
    "https://code.jquery.com/jquery-3.7.1.min.js": "jquery/jquery.min.js",
    "https://cdn.jsdelivr.net/npm/bootstrap@5.2.2/dist/js/bootstrap.bundle.min.js":
        "bootstrap/js/bootstrap.bundle.min.js",
    "https://cdn.jsdelivr.net/npm/bootstrap@5.2.2/dist/css/bootstrap.min.css":
        "bootstrap/css/bootstrap.min.css",
    "https://netdna.bootstrapcdn.com/bootstrap/3.0.0/css/bootstrap-glyphicons.css":
        "glyphicons/css/glyphicons.css",
    "https://cdn.jsdelivr.net/npm/@fortawesome/fontawesome-free@6.2.0/css/all.min.css":
        "fontawesome/css/all.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/Leaflet.awesome-markers/2.0.2/leaflet.awesome-markers.js":
        "awesome-markers/leaflet.awesome-markers.js",
    "https://cdnjs.cloudflare.com/ajax/libs/Leaflet.awesome-markers/2.0.2/leaflet.awesome-markers.css":
        "awesome-markers/leaflet.awesome-markers.css",
    "https://cdn.jsdelivr.net/gh/python-visualization/folium/folium/templates/leaflet.awesome.rotate.min.css":
        "awesome-markers/leaflet.awesome.rotate.css",
    "https://cdnjs.cloudflare.com/ajax/libs/leaflet.markercluster/1.1.0/leaflet.markercluster.js":
        "markercluster/leaflet.markercluster.js",
    "https://cdnjs.cloudflare.com/ajax/libs/leaflet.markercluster/1.1.0/MarkerCluster.css":
        "markercluster/MarkerCluster.css",
    "https://cdnjs.cloudflare.com/ajax/libs/leaflet.markercluster/1.1.0/MarkerCluster.Default.css":
        "markercluster/MarkerCluster.Default.css",
    "https://cdnjs.cloudflare.com/ajax/libs/d3/3.5.5/d3.min.js": "d3/d3.min.js",
    "https://cdn.jsdelivr.net/gh/python-visualization/folium@main/folium/templates/leaflet_heat.min.js":
        "leaflet-heat/leaflet_heat.min.js",
}  # fmt: skip

# node_modules path -> path under _static/vendor/ (folders are copied whole).
NPM_COPIES = {
    "leaflet/dist/leaflet.js": "leaflet/leaflet.js",
    "leaflet/dist/leaflet.css": "leaflet/leaflet.css",
    "leaflet/dist/images": "leaflet/images",
    "jquery/dist/jquery.min.js": "jquery/jquery.min.js",
    "bootstrap/dist/js/bootstrap.bundle.min.js": "bootstrap/js/bootstrap.bundle.min.js",
    "bootstrap/dist/css/bootstrap.min.css": "bootstrap/css/bootstrap.min.css",
    "bootstrap3/dist/fonts": "glyphicons/fonts",
    "@fortawesome/fontawesome-free/css/all.min.css": "fontawesome/css/all.min.css",
    "@fortawesome/fontawesome-free/webfonts": "fontawesome/webfonts",
    "leaflet.awesome-markers/dist/leaflet.awesome-markers.js": "awesome-markers/leaflet.awesome-markers.js",
    "leaflet.awesome-markers/dist/leaflet.awesome-markers.css": "awesome-markers/leaflet.awesome-markers.css",
    "leaflet.awesome-markers/dist/images": "awesome-markers/images",
    "leaflet.markercluster/dist/leaflet.markercluster.js": "markercluster/leaflet.markercluster.js",
    "leaflet.markercluster/dist/MarkerCluster.css": "markercluster/MarkerCluster.css",
    "leaflet.markercluster/dist/MarkerCluster.Default.css": "markercluster/MarkerCluster.Default.css",
    "d3/d3.min.js": "d3/d3.min.js",
    # MathJax 3 with its own fonts (MathJax 4, Sphinx's default, fetches fonts from a CDN);
    # the TeX extensions load on demand, the speech engine (sre, 4 MB) is left out.
    "mathjax/es5/tex-mml-chtml.js": "mathjax/tex-mml-chtml.js",
    "mathjax/es5/input": "mathjax/input",
    "mathjax/es5/output/chtml": "mathjax/output/chtml",
    "mathjax/es5/ui": "mathjax/ui",
    "mathjax/es5/a11y": "mathjax/a11y",
}
MATHJAX = "vendor/mathjax/tex-mml-chtml.js"  # relative to _static, for Sphinx's mathjax_path

# <script src="http..."> and <link ... href="http..."> in a page, escaped (inside an iframe's
# srcdoc, as notebooks hold folium maps) or not
_LOADED = re.compile(r"""<(?:script|link)\b[^>]*?\b(?:src|href)=["'](https?://[^"']+)["']""", re.IGNORECASE)


class VendorError(RuntimeError):
    """npm is missing or failed, or a page loads something from the web that the book has no copy of."""


def external_loads(page: str) -> list[str]:
    """The addresses outside the site that ``page`` (HTML, possibly holding escaped srcdoc
    documents) loads as a script or a style sheet, in order."""
    return _LOADED.findall(html.unescape(page))


def localise(page: str, vendor_prefix: str, where: str) -> str:
    """``page`` with every CDN address of :data:`CDN_COPIES` replaced by its copy.

    ``vendor_prefix`` is the relative address of ``_static/vendor/`` from the page, e.g.
    ``"../_static/vendor/"``. A script or style sheet from any other address raises
    :class:`VendorError` naming it and ``where`` (the page or output it came from).
    """
    for address, copy in CDN_COPIES.items():
        page = page.replace(address, vendor_prefix + copy)
    unknown = sorted(set(external_loads(page)))
    if unknown:
        raise VendorError(
            f"{where} loads {', '.join(unknown)} from the web, and the book ships no copy: add the "
            "package to helpers/book/package.json (then `npm install --package-lock-only` there) and "
            "the address to CDN_COPIES and NPM_COPIES in helpers/book/vendor.py."
        )
    return page


def lock_hash() -> str:
    """SHA-256 of the committed package-lock.json: the cache is reinstalled when it changes."""
    return hashlib.sha256((HERE / "package-lock.json").read_bytes()).hexdigest()


def install(cache: Path) -> Path:
    """``npm ci`` the pinned packages into ``cache`` (once per lock file); return its node_modules."""
    cache = Path(cache)
    modules = cache / "node_modules"
    stamp = cache / STAMP
    if modules.is_dir() and stamp.is_file() and stamp.read_text().strip() == lock_hash():
        return modules
    npm = shutil.which("npm")
    if npm is None:
        raise VendorError(
            "npm is needed once, to fetch the libraries the book ships (helpers/book/package.json): "
            "install Node.js 18 or later (it brings npm), then run the command again."
        )
    cache.mkdir(parents=True, exist_ok=True)
    for name in PACKAGE_FILES:
        shutil.copyfile(HERE / name, cache / name)
    stamp.unlink(missing_ok=True)
    # --ignore-scripts: the packages are only files to copy; nothing of theirs needs to run
    command = [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--prefer-offline"]
    done = subprocess.run(command, cwd=cache, capture_output=True, text=True)
    if done.returncode != 0:
        raise VendorError(
            f"`npm ci` in {cache} failed (exit {done.returncode}):\n{done.stderr.strip()[-2000:]}"
        )
    stamp.write_text(lock_hash() + "\n")
    return modules


def glyphicons_css(bootstrap3_css: str) -> str:
    """The Glyphicons part of Bootstrap 3's style sheet: the font and the ``.glyphicon`` rules.

    folium's markers may use Glyphicons; the rest of Bootstrap 3 would fight Bootstrap 5.
    """
    rules = re.findall(r"(@font-face|[^{}@]+)\{([^{}]*)\}", bootstrap3_css)
    kept = [
        f"{selector.strip()} {{{body}}}"
        for selector, body in rules
        if (selector.strip() == "@font-face" and "Glyphicons" in body)
        or all(part.strip().startswith(".glyphicon") for part in selector.split(","))
    ]
    if not kept:
        raise VendorError("No Glyphicons rules found in Bootstrap 3's style sheet: is it the right file?")
    return (
        "/* Glyphicons, cut out of Bootstrap 3.4.1 (npm) by helpers/book/vendor.py */\n"
        + "\n".join(kept)
        + "\n"
    )


def rotate_css() -> str:
    """Rotation classes for folium's markers (``Icon(angle=...)`` adds ``fa-rotate-<degrees>``)."""
    lines = [f".fa-rotate-{degrees} {{ transform: rotate({degrees}deg); }}" for degrees in range(360)]
    return (
        "/* folium's marker rotation classes, written by helpers/book/vendor.py */\n"
        + "\n".join(lines)
        + "\n"
    )


def copy_into(static: Path, cache: Path) -> Path:
    """Install (if needed) and copy every library the pages use into ``static/vendor/``; return it."""
    import folium

    modules = install(cache)
    target = Path(static) / "vendor"
    if target.exists():
        shutil.rmtree(target)
    for source, destination in NPM_COPIES.items():
        origin, place = modules / source, target / destination
        if not origin.exists():
            raise VendorError(f"{origin} is missing after `npm ci`: remove {cache} and build again.")
        place.parent.mkdir(parents=True, exist_ok=True)
        if origin.is_dir():
            shutil.copytree(origin, place)
        else:
            shutil.copyfile(origin, place)
    heat = Path(folium.__file__).parent / "templates" / "leaflet_heat.min.js"
    (target / "leaflet-heat").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(heat, target / "leaflet-heat" / "leaflet_heat.min.js")
    bootstrap3 = (modules / "bootstrap3/dist/css/bootstrap.css").read_text(encoding="utf-8")
    (target / "glyphicons/css").mkdir(parents=True, exist_ok=True)
    (target / "glyphicons/css/glyphicons.css").write_text(glyphicons_css(bootstrap3), encoding="utf-8")
    (target / "awesome-markers/leaflet.awesome.rotate.css").write_text(rotate_css(), encoding="utf-8")
    missing = [copy for copy in CDN_COPIES.values() if not (target / copy).is_file()]
    if missing:
        raise VendorError(f"No copy of {', '.join(missing)} in {target}: CDN_COPIES and NPM_COPIES disagree.")
    return target
