"""Names and checkpoints checked before use, a folder lock that cannot be fooled, bounded settings.

Issue 30, bullets 4-6. Each test is a probe that got through before: a run name that is a
path, a results row that names a folder outside the build, a checkpoint with one bit
changed, a lock file that is a link, another host's lock, settings of absurd size.
Checkpoint tests work on copies in tmp_path; ``pretrained/`` is only read.
"""

import errno
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from helpers import config, experiments, metrics, model, safe_paths

COMMITTED = model.PRETRAINED_DIR / "street-mae-vit"
DEFAULT = config.get_profile("default")


# --- run names stay inside runs/ -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["../../../outside/victim", "a/b", "..", ".", "", ".hidden", "/tmp/x", "ø"])
def test_a_run_name_that_is_not_a_plain_name_is_refused_before_anything_is_written(name, isolated_build):
    with pytest.raises(safe_paths.UnsafePathError, match="run name"):
        model.run_dir("smoke", name)
    assert not (isolated_build.parent / "outside").exists()
    assert model.run_dir("smoke", "baseline_seed1") == isolated_build / "smoke" / "runs" / "baseline_seed1"


def test_a_run_folder_that_links_out_of_runs_is_refused(isolated_build, tmp_path):
    runs = config.output_dir("smoke", "runs")
    (tmp_path / "elsewhere").mkdir()
    (runs / "linked").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(safe_paths.UnsafePathError, match="leads outside"):
        model.run_dir("smoke", "linked")


def test_load_model_loads_only_run_folders_of_the_build(isolated_build, tmp_path):
    tiny = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    inside = model.run_dir("smoke", "tiny")
    inside.mkdir()
    tiny.save(inside / "best.keras")
    assert model.load_model(inside).output_shape == (None, 1)  # a run of this build loads

    outside = tmp_path / "outside" / "evilrun"  # what "runs/../../../outside/evilrun" reaches
    outside.mkdir(parents=True)
    tiny.save(outside / "best.keras")
    runs = isolated_build / "smoke" / "runs"
    (runs / "evil-link").symlink_to(outside)
    for folder in (outside, runs / "../../../outside/evilrun", runs / "evil-link", tmp_path / "outside"):
        with pytest.raises(safe_paths.UnsafePathError, match="only the run folders of this workbook's build"):
            model.load_model(folder)
    (inside / "last.keras").symlink_to(outside / "best.keras")  # a run folder, but its file links out
    with pytest.raises(safe_paths.UnsafePathError, match="not a plain file"):
        model.load_model(inside, "last")


def test_best_run_leaves_out_a_results_row_that_names_a_path(isolated_build, tmp_path, caplog):
    label = experiments.data_label("smoke")
    evil = "../../../outside/evilrun"
    outside = tmp_path / "outside" / "evilrun"  # where run_dir's old join of that name led
    assert (isolated_build / "smoke" / "runs" / evil).resolve() == outside.resolve()
    outside.mkdir(parents=True)
    (outside / "best.keras").write_bytes(b"code that would run on load")
    model.run_dir("smoke", "baseline").mkdir()
    (model.run_dir("smoke", "baseline") / "best.keras").write_bytes(b"a checkpoint")
    metrics.record_result("smoke", "baseline", data=label, split="val", top1=0.3, mean_km=90.0)
    metrics.record_result("smoke", evil, data=label, split="val", top1=0.9, mean_km=10.0)
    metrics.record_result("smoke", "future: a method", data=label, split="val", top1=0.95, mean_km=5.0)
    caplog.set_level(logging.WARNING)
    assert experiments.best_run("smoke") == "baseline"
    assert evil in caplog.text and "future: a method" not in caplog.text


# --- the committed checkpoint is compared with its checksums before use -------------------------


@pytest.fixture
def pretrained_copy(tmp_path, monkeypatch):
    """A copy of pretrained/ in tmp_path, which ``workbook:`` names now find."""
    folder = tmp_path / "pretrained"
    shutil.copytree(COMMITTED, folder / COMMITTED.name)
    monkeypatch.setattr(model, "PRETRAINED_DIR", folder)
    return folder / COMMITTED.name


def flip_one_bit(path):
    data = bytearray(path.read_bytes())
    data[-100] ^= 0x01  # inside the last tensor: a valid file that loads, with one weight changed
    path.write_bytes(bytes(data))


def set_one_weight_to_nan(path):
    tensors = load_file(str(path))
    tensors["vit.layernorm.weight"][3] = np.nan
    save_file(tensors, str(path))


def test_the_committed_checksums_match_the_committed_files():
    listed = safe_paths.check_checksums(COMMITTED, required=model.HF_FILES)
    assert sorted(listed) == sorted(p.name for p in COMMITTED.iterdir() if p.name != "SHA256SUMS")
    assert model.resolve_preset(DEFAULT) == str(COMMITTED)


@pytest.mark.parametrize("damage", [flip_one_bit, set_one_weight_to_nan, lambda p: p.write_bytes(b"")])
def test_a_changed_checkpoint_file_is_refused_naming_both_hashes_and_how_to_restore_it(
    damage, pretrained_copy
):
    path = pretrained_copy / "model.safetensors"
    expected = safe_paths.file_sha256(path)
    assert model.resolve_preset(DEFAULT) == str(pretrained_copy)  # the undamaged copy passes
    damage(path)
    with pytest.raises(model.CheckpointError) as caught:
        model.build_classifier(129, DEFAULT)
    message = str(caught.value)
    assert "'workbook:street-mae-vit'" in message and str(path) in message
    assert expected in message and safe_paths.file_sha256(path) in message
    assert "git checkout -- pretrained/street-mae-vit" in message and "make pretrained" in message


def test_a_checkpoint_without_its_checksum_list_is_refused(pretrained_copy):
    (pretrained_copy / "SHA256SUMS").unlink()
    with pytest.raises(model.CheckpointError, match="SHA256SUMS.*make pretrained"):
        model.resolve_preset(DEFAULT)


def test_links_out_of_pretrained_are_refused(pretrained_copy, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    pretrained_copy.rename(elsewhere)
    pretrained_copy.symlink_to(elsewhere)  # pretrained/street-mae-vit -> a folder outside
    with pytest.raises(safe_paths.UnsafePathError, match="leads outside.*make pretrained"):
        model.resolve_preset(DEFAULT)
    pretrained_copy.unlink()
    elsewhere.rename(pretrained_copy)
    (pretrained_copy / "model.safetensors").rename(elsewhere)
    (pretrained_copy / "model.safetensors").symlink_to(elsewhere)  # the same bytes, behind a link
    with pytest.raises(model.CheckpointError, match="is a link"):
        model.resolve_preset(DEFAULT)


def rewrite_config(folder, **changes):
    hf = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**hf, **changes}))


def test_config_sizes_are_checked_before_any_tensor_is_allocated(pretrained_copy):
    rewrite_config(pretrained_copy, hidden_size=2**20)  # 2^40 weights per projection
    safe_paths.write_checksums(pretrained_copy, model.HF_FILES)  # consistent, so only the size is wrong
    import keras_hub  # noqa: F401 (imported before the clock starts: the import alone takes seconds)

    started = time.perf_counter()
    with pytest.raises(model.CheckpointError, match=r"hidden_size=1048576.*from 1 to 4096.*make pretrained"):
        model.build_backbone(DEFAULT)
    rewrite_config(pretrained_copy, hidden_size=64, num_hidden_layers=10**6)
    safe_paths.write_checksums(pretrained_copy, model.HF_FILES)
    with pytest.raises(model.CheckpointError, match=r"num_hidden_layers=1000000"):
        model.build_backbone(DEFAULT)
    assert time.perf_counter() - started < 5  # refused from config.json, nothing built


def truncate(folder):
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:5000])  # a copy cut short (a full disk, an interrupted pull)


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        (truncate, "could not be loaded"),
        (lambda f: rewrite_config(f, hidden_size=32, intermediate_size=64), "could not be loaded"),
        (lambda f: set_one_weight_to_nan(f / "model.safetensors"), "NaN or infinite"),
    ],
    ids=["truncated", "shapes-differ-from-config", "nan-weight"],
)
def test_a_damaged_local_checkpoint_names_itself_and_how_to_restore_it(damage, says, tmp_path):
    folder = tmp_path / "my-checkpoint"  # a local folder without SHA256SUMS: no hash to compare
    shutil.copytree(COMMITTED, folder, ignore=shutil.ignore_patterns("SHA256SUMS"))
    assert model.build_backbone(DEFAULT, preset=str(folder)).hidden_dim == 64
    damage(folder)
    with pytest.raises(model.CheckpointError, match=says) as caught:
        model.build_backbone(DEFAULT, preset=str(folder))
    assert str(folder) in str(caught.value) and "again" in str(caught.value)


# --- FolderLock: no links, no other host's lock, nothing unreadable ---------------------------------


def without_flock(monkeypatch):
    """The file system has no flock (some network mounts): flock fails with ENOLCK."""
    import fcntl

    def no_flock(*_):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)


@pytest.mark.parametrize("flock", [True, False], ids=["flock", "no-flock"])
def test_a_lock_file_that_is_a_link_is_refused_and_its_target_kept(flock, tmp_path, monkeypatch):
    if not flock:
        without_flock(monkeypatch)
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    folder = tmp_path / "downloads"
    folder.mkdir()
    (folder / safe_paths.LOCK_NAME).symlink_to(target)
    with pytest.raises(safe_paths.UnsafePathError, match="is a link, not a plain file.*Remove it"):
        safe_paths.FolderLock(folder).acquire()
    assert target.read_text() == "keep me"
    (folder / safe_paths.LOCK_NAME).unlink()
    (folder / safe_paths.LOCK_NAME).mkdir()
    with pytest.raises(safe_paths.UnsafePathError, match="not a plain file"):
        safe_paths.FolderLock(folder).acquire()


@pytest.mark.parametrize("flock", [True, False], ids=["flock", "no-flock"])
def test_another_hosts_lock_is_never_taken_over(flock, tmp_path, monkeypatch):
    if not flock:
        without_flock(monkeypatch)
    record = json.dumps({"pid": os.getpid(), "host": "other-host.example", "started": "2024-01-01T00:00:00"})
    (tmp_path / safe_paths.LOCK_NAME).write_text(record)
    with pytest.raises(safe_paths.FolderLocked) as caught:
        safe_paths.FolderLock(tmp_path, wait_s=0.3, poll_s=0.05).acquire()
    message = str(caught.value)
    assert "other-host.example" in message and f"process {os.getpid()}" in message
    assert f"delete {tmp_path / safe_paths.LOCK_NAME}" in message  # if it is stale
    assert (tmp_path / safe_paths.LOCK_NAME).read_text() == record


@pytest.mark.parametrize("flock", [True, False], ids=["flock", "no-flock"])
@pytest.mark.parametrize("content", [b"[]", b'{"pid": 1', b"\xff\xfe\x00", b'{"pid": "12", "host": 3}', b"7"])
def test_unreadable_lock_content_is_stale_and_said_so(flock, content, tmp_path, monkeypatch, caplog):
    if not flock:
        without_flock(monkeypatch)
    (tmp_path / safe_paths.LOCK_NAME).write_bytes(content)
    caplog.set_level(logging.WARNING)
    with safe_paths.FolderLock(tmp_path):
        held = json.loads((tmp_path / safe_paths.LOCK_NAME).read_text())
        assert held["pid"] == os.getpid() and held["host"] == socket.gethostname()
    assert "holds no readable record" in caplog.text and "stale" in caplog.text
    assert safe_paths.describe_holder([]).startswith("an unknown holder")
    assert sorted(p.name for p in tmp_path.iterdir()) in ([safe_paths.LOCK_NAME], [])  # no claim files left


RACER = textwrap.dedent("""
    import errno, fcntl, os, sys, time

    def no_flock(*_):
        raise OSError(errno.ENOLCK, "No locks available")

    fcntl.flock = no_flock  # this file system has no flock
    from helpers import safe_paths

    folder, rounds = sys.argv[1], int(sys.argv[2])
    overlaps = held = 0
    for _ in range(rounds):
        with safe_paths.FolderLock(folder, wait_s=30, poll_s=0.001):
            try:
                os.close(os.open(os.path.join(folder, "inside"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                overlaps += 1
                continue
            time.sleep(0.002)
            os.unlink(os.path.join(folder, "inside"))
            held += 1
    print(overlaps, held)
""")


def test_without_flock_racing_processes_take_over_a_stale_lock_one_at_a_time(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = {"pid": int(dead.stdout), "host": socket.gethostname(), "started": "2024-01-01T00:00:00"}
    (tmp_path / safe_paths.LOCK_NAME).write_text(json.dumps(stale))  # left by a run killed on this host
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(tmp_path), "40"],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(config.REPO_ROOT)},
        )
        for _ in range(4)
    ]
    counts = [tuple(map(int, racer.communicate(timeout=120)[0].split())) for racer in racers]
    assert all(racer.returncode == 0 for racer in racers)
    assert counts == [(0, 40)] * 4  # never two holders at once, and every round held the lock
    assert list(tmp_path.iterdir()) == []  # released, and no claim or break file left behind


# --- every size setting has an upper bound ---------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("image_size", 100_000),
        ("epochs", 10**9),
        ("vit_width", 2**20),
        ("batch_size", 10**12),
        ("seed", 2**70),
        ("seed", 2**32),
        ("images_per_cell", 10**7),
        ("n_cells", 10**6),
        ("cache_budget_gb", 1e6),
        ("warmup_steps", 10**9),
    ],
)
def test_a_size_setting_past_its_bound_is_refused(setting, value):
    with pytest.raises(config.SettingError, match=rf"{setting}={value!r} is not allowed: it must be"):
        config.get_profile("smoke", **{setting: value})


def test_every_whole_number_setting_has_an_upper_bound():
    rules = config.SETTING_RULES.items()
    unbounded = [name for name, (allowed, _) in rules if "at least" in allowed or "inf" in allowed]
    assert unbounded == []
    assert config.get_profile("smoke", seed=2**32 - 1)["seed"] == 2**32 - 1
    for name in config.PROFILES:  # every profile, the largest (full, ViT-B/16 at 224 px) included
        assert config.check_settings(config.get_profile(name))


def test_settings_that_fit_alone_but_not_together_are_refused():
    with pytest.raises(config.SettingError, match="patches must be at most 1,600"):
        config.get_profile("smoke", image_size=640, patch_size=8)  # 6,400 patches
    with pytest.raises(config.SettingError, match="at most 1,000,000,000 weights"):
        config.get_profile("smoke", vit_layers=48, vit_width=4096, vit_heads=64, vit_mlp_width=16384)


@pytest.mark.parametrize(
    "value",
    [
        "hf://goоgle/vit-base-patch16-224",  # a Cyrillic "о"
        "hf://../..",
        "hf://google/../../x",
        "hf://google/vit/extra",
        "hf://.hidden/vit",
        "kaggle://../keras",
        "/",
    ],
)
def test_a_pretrained_value_that_is_no_plain_name_or_checkpoint_folder_is_refused(value, isolated_build):
    with pytest.raises(config.SettingError, match="pretrained="):
        config.get_profile("smoke", pretrained=value)
    with pytest.raises(safe_paths.UnsafePathError):  # a hand-made profile skips get_profile's check
        model.resolve_preset({**config.get_profile("smoke"), "pretrained": value})
    assert not isolated_build.exists()


def test_a_checkpoint_folder_must_be_a_real_folder(tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(COMMITTED, copy)
    assert config.get_profile("smoke", pretrained=str(copy))["pretrained"] == str(copy)
    (tmp_path / "link").symlink_to(copy)
    with pytest.raises(config.SettingError, match="existing checkpoint folder"):
        config.get_profile("smoke", pretrained=str(tmp_path / "link"))


@pytest.mark.parametrize("profile", [{"name": "../x"}, {"name": None}, {}, {"name": ["smoke"]}])
def test_a_profile_dictionary_with_an_unknown_name_lists_the_profiles(profile):
    with pytest.raises(ValueError, match="smoke, default, rehearsal, mapillary, full"):
        config.get_profile(profile)
