import numpy as np
import pytest

from helpers import config


def test_profiles_share_one_set_of_keys():
    keys = {name: set(profile) for name, profile in config.PROFILES.items()}
    assert list(keys) == ["smoke", "default", "rehearsal", "mapillary", "full"]
    assert all(k == keys["full"] for k in keys.values())


def test_profiles_grow_from_smoke_to_full():
    smoke, default, full = (config.get_profile(n) for n in ("smoke", "default", "full"))
    for key in ("images_per_cell", "image_size", "vit_layers", "vit_width", "epochs"):
        assert smoke[key] <= default[key] <= full[key], key
    assert full["pretrained"] == "hf://google/vit-base-patch16-224"
    assert full["image_size"] == 224 and full["images_per_cell"] == 330
    assert all(config.get_profile(n)["n_cells"] == 129 for n in config.PROFILES)


def test_real_image_profiles():
    rehearsal, mapillary, full = (config.get_profile(n) for n in ("rehearsal", "mapillary", "full"))
    assert rehearsal["image_source"] == full["image_source"] == "streetview"
    assert rehearsal["streetview_api"] == "standin" and full["streetview_api"] is None
    assert mapillary["image_source"] == "mapillary" and mapillary["pretrained"] == full["pretrained"]
    # the authors' notebook: 20 warm-up steps, weight decay 0.01, betas 0.85 / 0.95
    assert (full["warmup_steps"], full["weight_decay"], full["beta_1"], full["beta_2"]) == (
        20,
        0.01,
        0.85,
        0.95,
    )


def test_overrides_are_applied_and_recorded():
    profile = config.get_profile("default", epochs=20, randaugment_factor=0.4)
    assert profile["epochs"] == 20 and profile["randaugment_factor"] == 0.4
    assert profile["overrides"] == {"epochs": 20, "randaugment_factor": 0.4}
    again = config.get_profile(profile, seed=3)
    assert again["overrides"] == {"epochs": 20, "randaugment_factor": 0.4, "seed": 3}
    assert config.get_profile("default")["epochs"] == config.PROFILES["default"]["epochs"] != 20
    assert config.get_profile("default")["overrides"] == {}
    assert config.build_dir(again) == config.build_dir("default")
    with pytest.raises(ValueError, match="Unknown setting.*epoch_count"):
        config.get_profile("default", epoch_count=3)


def test_get_profile_returns_a_copy():
    profile = config.get_profile("smoke")
    profile["epochs"] = 999
    assert config.get_profile("smoke")["epochs"] != 999


def test_unknown_profile_names_the_choices():
    with pytest.raises(ValueError, match="smoke, default, rehearsal, mapillary, full"):
        config.get_profile("fast")


def test_build_dir_is_per_profile_and_movable(tmp_path, monkeypatch):
    assert config.build_dir("smoke").name == "smoke"
    monkeypatch.setenv("WORKBOOK_BUILD_DIR", str(tmp_path))
    figures = config.output_dir("default", "figures")
    assert figures == tmp_path / "default" / "figures" and figures.is_dir()
    assert not str(figures).startswith(str(config.REPO_ROOT / "notebooks"))


def test_atomic_target_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "table.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError), config.atomic_target(target) as temporary:
        temporary.write_text("half")
        raise RuntimeError("crash while writing")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]


def test_atomic_target_replaces_on_success(tmp_path):
    target = tmp_path / "sub" / "figure.png"
    with config.atomic_target(target) as temporary:
        assert temporary.parent == target.parent and temporary != target
        temporary.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert target.stat().st_mode & 0o044  # readable by others, unlike mkstemp's default


# --- every setting is checked (issue 20) ---------------------------------------------------

BAD_SETTINGS = [
    ("epochs", "20", "whole number"),
    ("epochs", -1, "from 1 to 320"),
    ("epochs", 2.5, "whole number"),
    ("epochs", True, "whole number"),
    ("batch_size", 0, "from 1 to 1024"),
    ("learning_rate", "fast", "number in (0, 1]"),
    ("learning_rate", float("nan"), "number in (0, 1]"),
    ("learning_rate", 0, "number in (0, 1]"),
    ("beta_2", 1.0, "[0, 1)"),
    ("warmup_steps", -5, "or None"),
    ("streetview_api", "standn", "None, 'standin'"),
    ("streetview_api", "google", "None, 'standin'"),
    ("image_source", "flickr", "'synthetic', 'streetview', 'mapillary'"),
    ("jit_compile", "yes", "True, False, 'auto'"),
    ("pretrained", "standin:", "standin:<plain name>"),
    ("pretrained", "standin:../../../x", "standin:<plain name>"),
    ("pretrained", "standin:/some/dir", "standin:<plain name>"),
    ("pretrained", "hf://", "hf://<owner>/<name>"),
    ("pretrained", "/no/such/checkpoint/folder", "existing checkpoint folder"),
    ("download_size", 4000, "from 16 to 640"),
    ("map_max_points", 0, "or None"),
    ("addresses_file", "", "non-empty text"),
    ("devices", "all", "'auto', 'cpu', a whole number from 1 to 64"),
    ("devices", 0, "a whole number from 1 to 64"),
    ("devices", True, "a whole number from 1 to 64"),
    ("devices", ["GPU:0", "gpu 1"], "a list of device names"),
    ("devices", [], "a list of device names"),
]


@pytest.mark.parametrize(("setting", "value", "allowed"), BAD_SETTINGS)
def test_a_wrong_setting_is_refused_with_its_name_value_and_what_is_allowed(setting, value, allowed):
    with pytest.raises(config.SettingError) as caught:
        config.get_profile("smoke", **{setting: value})
    message = str(caught.value)
    assert f"{setting}={value!r}" in message and allowed in message


def test_patch_size_must_divide_image_size():
    with pytest.raises(config.SettingError, match=r"image_size=30, patch_size=8 .*patch_size must divide"):
        config.get_profile("smoke", image_size=30)
    assert config.get_profile("smoke", image_size=40)["image_size"] == 40  # 40 = 5 patches of 8
    with pytest.raises(config.SettingError, match="vit_heads must divide vit_width"):
        config.get_profile("smoke", vit_heads=3)


def test_allowed_settings_pass(tmp_path):
    assert config.get_profile("smoke", pretrained="hf://google/vit-base-patch16-224")["pretrained"]
    for name in ("config.json", "model.safetensors"):  # a local checkpoint folder (only its files count here)
        (tmp_path / name).write_text("{}")
    assert config.get_profile("smoke", pretrained=str(tmp_path))["pretrained"] == str(tmp_path)
    assert config.get_profile("smoke", warmup_steps=None, streetview_api="standin", jit_compile=False)
    assert config.get_profile("smoke", learning_rate=1, epochs=np.int64(3))["epochs"] == 3


def test_every_profile_passes_its_own_checks():
    for name in config.PROFILES:
        assert config.check_settings(config.get_profile(name))


def test_a_new_setting_needs_one_line_in_the_table(monkeypatch):
    monkeypatch.setitem(config.PROFILES, "smoke", {**config.PROFILES["smoke"], "map_tiles": "dark"})
    with pytest.raises(config.SettingError, match="'map_tiles' has no rule in helpers.config.SETTING_RULES"):
        config.get_profile("smoke")
    monkeypatch.setitem(config.SETTING_RULES, "map_tiles", config._one_of("light", "dark"))
    assert config.get_profile("smoke")["map_tiles"] == "dark"
    with pytest.raises(config.SettingError, match="map_tiles='sepia'"):
        config.get_profile("smoke", map_tiles="sepia")


def test_devices_is_auto_on_the_gpu_profiles_and_one_on_the_cpu_profiles():
    assert all(config.get_profile(n)["devices"] == "auto" for n in ("mapillary", "full"))
    assert all(config.get_profile(n)["devices"] == 1 for n in ("smoke", "default", "rehearsal"))
    assert config.get_profile("full", devices=["GPU:0", "/device:GPU:1"])["devices"][1] == "/device:GPU:1"
    assert config.get_profile("full", devices="cpu")["devices"] == "cpu"


def test_the_global_batch_must_divide_by_a_stated_number_of_devices():
    assert config.get_profile("full", devices=8)["batch_size"] == 32  # 4 per TPU core, final runs 2
    with pytest.raises(config.SettingError, match="batch_size=32, final_batch_size=16, devices=3 do not fit"):
        config.get_profile("full", devices=3)
    with pytest.raises(config.SettingError, match="each must divide by the number of devices"):
        config.get_profile("full", devices=["GPU:0", "GPU:1", "GPU:2"])
    # "auto" depends on the machine: helpers.distribute checks it when training starts
    assert config.get_profile("full", batch_size=30, devices="auto")["batch_size"] == 30
