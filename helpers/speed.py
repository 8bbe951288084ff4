"""How fast this machine trains: one number that scales the notebooks' measured times.

:func:`reference_rate` times a fixed workload (:data:`REFERENCE_WORKLOAD`: training steps of
the ``default`` profile's small ViT on random images) for a few seconds. The notebooks' times
were measured on a machine of a known rate (``helpers.notebooks.REFERENCE_RATE``), so the
runner scales them by the ratio before a build, and ``make bench`` prints the rate beside
its other speeds.

It builds and trains a model, so it lives here, above :mod:`helpers.model`, and not in
:mod:`helpers.device`, which the model imports.
"""

from __future__ import annotations

import time

import keras
import numpy as np

from helpers import config, losses, model

REFERENCE_WORKLOAD = "training steps of the default profile's ViT (2 layers, width 64, 64 px), batch 64"
# the ViT's output cells: the report's 129, so the head has the size the notebooks train
_CELLS = 129


def reference_rate(seconds: float = 2.0) -> float:
    """Images/s of a fixed workload on this machine: :data:`REFERENCE_WORKLOAD`, in float32.

    Measured for about ``seconds`` after one traced warm-up step (about 5 s in all on 2
    cores). The same number on two machines means the same notebook times; half the rate,
    about twice the time. ``make bench`` prints it too.
    """
    if not seconds > 0:
        raise ValueError(f"seconds is {seconds!r}: give how long to measure, more than 0 (2 is the default).")
    profile = config.get_profile("default")
    keras.utils.set_random_seed(0)
    size, batch = profile["image_size"], profile["batch_size"]
    classifier = model.build_classifier(_CELLS, profile)
    classifier.compile(optimizer="adamw", loss=losses.cross_entropy, jit_compile=False)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch, size, size, 3)).astype("float32")
    # the targets' layout for losses.cross_entropy: cell, then (lat, lng) unused by it
    cells = np.arange(batch) % _CELLS
    targets = np.stack([cells, np.zeros(batch), np.zeros(batch)], axis=1).astype("float32")
    classifier.train_on_batch(images, targets)  # traces the step
    steps, start = 0, time.perf_counter()
    while steps < 3 or time.perf_counter() - start < seconds:
        classifier.train_on_batch(images, targets)
        steps += 1
    rate = steps * batch / (time.perf_counter() - start)
    keras.backend.clear_session()
    return rate
