"""Profiles and paths: everything a notebook needs to know about *where* and *how big*.

A profile is a plain dictionary. Three are defined:

``smoke``
    For continuous integration: every notebook runs in seconds on a few images per cell.
``default``
    What ``make all`` runs on a laptop CPU: all 129 cells, small synthetic images and a
    small Vision Transformer trained from scratch.
``full``
    The report's setting: real Street View images at 224 px and the pretrained
    ``google/vit-base-patch16-224``, which needs a GPU.

Paths: inputs live in ``data/`` (downloaded, never committed); everything computed lives in
``build/<profile>/`` (executed notebooks, figures, tables, maps, models). Both can be moved
with the environment variables ``WORKBOOK_DATA_DIR`` and ``WORKBOOK_BUILD_DIR``.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

_COMMON = {
    "n_cells": 129,  # the report's number of geocells
    "seed": 0,
    "learning_rate": 6e-5,  # the report's learning rate (fine-tuning a pretrained ViT)
    "weight_decay": 0.1,
    "beta_1": 0.85,  # the report moved Adam's betas from 0.9/0.999 to 0.85/0.95
    "beta_2": 0.95,
    "warmup_fraction": 0.1,
    "randaugment_ops": 2,
    "randaugment_factor": 0.15,
    "session_leak": 0.5,  # synthetic images: how strongly a cell's images share one sky
}

PROFILES: dict[str, dict] = {
    "smoke": {
        **_COMMON,
        "description": "CI: seconds per notebook, a handful of tiny images per cell",
        "images_per_cell": 4,
        "image_source": "synthetic",
        "image_size": 32,
        "patch_size": 8,
        "vit_layers": 1,
        "vit_width": 32,
        "vit_heads": 2,
        "vit_mlp_width": 64,
        "pretrained": None,
        "epochs": 1,
        "batch_size": 32,
        "learning_rate": 1e-3,
        "map_max_points": 2_000,
    },
    "default": {
        **_COMMON,
        "description": "make all on a laptop CPU: 129 cells, 50 synthetic 64 px images each, a small ViT",
        "images_per_cell": 50,
        "image_source": "synthetic",
        "image_size": 64,
        "patch_size": 8,
        "vit_layers": 3,
        "vit_width": 64,
        "vit_heads": 4,
        "vit_mlp_width": 128,
        "pretrained": None,
        "epochs": 8,
        "batch_size": 64,
        "learning_rate": 1e-3,  # a ViT trained from scratch wants a larger step than fine-tuning
        "map_max_points": None,
    },
    "full": {
        **_COMMON,
        "description": "the report: 330 Street View images per cell, 224 px, pretrained ViT-B/16, GPU",
        "images_per_cell": 330,
        "image_source": "streetview",
        "image_size": 224,
        "patch_size": 16,
        "vit_layers": 12,
        "vit_width": 768,
        "vit_heads": 12,
        "vit_mlp_width": 3072,
        "pretrained": "hf://google/vit-base-patch16-224",
        "epochs": 20,
        "batch_size": 32,
        "map_max_points": None,
    },
}


def get_profile(name: str) -> dict:
    """Return a copy of the profile called ``name`` ("smoke", "default" or "full").

    A copy, so a notebook may change a value for an experiment without touching the others.
    """
    if name not in PROFILES:
        known = ", ".join(PROFILES)
        raise ValueError(
            f"Unknown profile {name!r}. Choose one of: {known} (for example `make all PROFILE=smoke`)."
        )
    return {"name": name, **PROFILES[name]}


def data_dir() -> Path:
    """Folder of the downloaded inputs (``data/`` unless ``WORKBOOK_DATA_DIR`` is set)."""
    return Path(os.environ.get("WORKBOOK_DATA_DIR", REPO_ROOT / "data"))


def build_dir(profile: str) -> Path:
    """Folder of everything computed for ``profile``: ``build/<profile>/``.

    ``WORKBOOK_BUILD_DIR`` moves the parent ``build/`` folder (the tests use a temporary one).
    """
    get_profile(profile)  # fail early on a typo
    root = Path(os.environ.get("WORKBOOK_BUILD_DIR", REPO_ROOT / "build"))
    return root / profile


def output_dir(profile: str, kind: str) -> Path:
    """Create and return ``build/<profile>/<kind>``, e.g. kind="figures", "maps", "tables"."""
    path = build_dir(profile) / kind
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def atomic_target(path: Path):
    """Yield a temporary path beside ``path``; rename it onto ``path`` when the block succeeds.

    Readers never see a half-written file, and a crash leaves the old file (if any) intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(handle)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)  # mkstemp makes it private; give it normal permissions
    try:
        yield Path(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
