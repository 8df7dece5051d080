import pytest

from utils.config import ConfigError, load_config, parse_override


def write(tmp_path, text, name="c.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_defaults_are_merged_under_user_values(tmp_path):
    p = write(tmp_path, "model:\n  learning_rate: 0.01\ntrain_iter: 5\n")
    cfg = load_config(p)
    assert cfg["model"]["learning_rate"] == 0.01 and cfg["train_iter"] == 5
    assert cfg["model"]["nms"] == 4  # untouched default


def test_unknown_key_names_key_and_file(tmp_path):
    p = write(tmp_path, "model:\n  learnin_rate: 0.01\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "model.learnin_rate" in str(e.value) and str(p) in str(e.value)


def test_wrong_type_names_key(tmp_path):
    p = write(tmp_path, "train_iter: fast\n")
    with pytest.raises(ConfigError, match="train_iter.*int"):
        load_config(p)
    p = write(tmp_path, "model:\n  subpixel: {enable: 3}\n")
    with pytest.raises(ConfigError, match="model.subpixel.enable.*bool"):
        load_config(p)


def test_int_accepted_for_float_and_lists_checked(tmp_path):
    cfg = load_config(write(tmp_path, "model:\n  learning_rate: 1\n"))
    assert isinstance(cfg["model"]["learning_rate"], float)
    with pytest.raises(ConfigError, match=r"strength_range\[1\]"):
        load_config(write(tmp_path, "data:\n  augmentation:\n    photometric:\n      params:\n"
                                    "        random_contrast: {strength_range: [0.5, high]}\n"))


def test_set_overrides_dotted_keys(tmp_path):
    cfg = load_config(None, ["train_iter=100", "data.root=/some/dir", "model.subpixel.enable=true"])
    assert cfg["train_iter"] == 100 and cfg["data"]["root"] == "/some/dir"
    assert cfg["model"]["subpixel"]["enable"] is True
    with pytest.raises(ConfigError, match="--set model.nope=1"):
        load_config(None, ["model.nope=1"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("train_iter")


def test_free_form_mapping_and_renamed_key_hint(tmp_path):
    cfg = load_config(write(tmp_path, "model:\n  params: {descriptor_dim: 128}\n"))
    assert cfg["model"]["params"] == {"descriptor_dim": 128}
    with pytest.raises(ConfigError, match="use 'pretrained"):
        load_config(write(tmp_path, "model:\n  pretrained: x.pth\n"))


def test_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "model: [\n"))
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_every_shipped_config_loads():
    from pathlib import Path
    for p in sorted(Path("configs").glob("*.yaml")):
        load_config(p)


def test_override_checks_types_against_defaults_not_the_file(tmp_path):
    # the file sets a string where the default is null ("any"); --set may reset it to null
    p = write(tmp_path, "pretrained: some/weights.pth\n")
    assert load_config(p, ["pretrained=null"])["pretrained"] is None
