"""Options are validated once, in ``parse_options``, for training and testing, overrides included."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from reliability_common import ROOT, make_images, options, train, write_yaml

from lkdn import test as test_entry
from lkdn.options import SchemaError, default_lookups, parse_options

ALL_OPTIONS = sorted((ROOT / "options").rglob("*.yml"))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_images(tmp_path_factory.mktemp("options_data"))


@pytest.mark.parametrize("path", ALL_OPTIONS, ids=[str(p.relative_to(ROOT / "options")) for p in ALL_OPTIONS])
def test_every_shipped_yaml_validates_with_the_lookups_of_its_pipeline(path: Path, tmp_path: Path) -> None:
    is_train = "train" in yaml.safe_load(path.read_text())
    opt = parse_options(path, is_train=is_train, overrides=["num_gpu=0"], root_path=tmp_path)
    assert opt["is_train"] is is_train


def test_training_lookups_are_the_registries_of_the_trainer() -> None:
    lookups = default_lookups(is_train=True)
    assert set(lookups) == {"network", "optim", "scheduler", "loss"}
    assert set(default_lookups(is_train=False)) == {"network"}


def _parse(tmp_path: Path, opt: dict, *overrides: str, is_train: bool = True) -> dict:
    return parse_options(write_yaml(tmp_path, opt), is_train=is_train, overrides=overrides, root_path=tmp_path)


@pytest.mark.parametrize(("change", "expected"), [
    ({"train__optim_g": {"type": "Adam", "lr": 1e-3, "betas": [0.9, 0.99], "weight_decy": 0}},
     "train.optim_g.weight_decy: unknown key; did you mean 'weight_decay'?"),
    ({"train__optim_g": {"type": "Adamm", "lr": 1e-3}}, "train.optim_g.type: unknown optimizer 'Adamm'; did you mean 'Adam'?"),
    ({"train__scheduler": {"type": "MultiStepLR", "milestone": [10]}}, "train.scheduler.milestone: unknown key; did you mean 'milestones'?"),
    ({"train__pixel_opt": {"type": "L1Loss", "los_weight": 1.0}}, "train.pixel_opt.los_weight: unknown key; did you mean 'loss_weight'?"),
    ({"train__compile": {"backend": "aot_eager", "mdoe": "default"}}, "train.compile.mdoe: unknown key; did you mean 'mode'?"),
    ({"train__compile": "yes"}, "train.compile: expected bool or dict"),
    ({"datasets__train__num_prefetch_queue": 0}, "datasets.train.num_prefetch_queue: must be positive"),
    ({"logger__save_format": "ckpt"}, "logger.save_format: expected pth or safetensors, got 'ckpt'"),
    ({"train__max_bad_steps": 0}, "train.max_bad_steps: must be positive, got 0"),
    ({"train__optim_g": {"type": ["Adam"], "lr": 1e-3}}, "train.optim_g.type: expected a registered name"),
])
def test_training_options_are_checked_against_the_trainer_registries(tmp_path: Path, data, change, expected) -> None:
    with pytest.raises(SchemaError) as err:
        _parse(tmp_path, options(*data, **change))
    assert expected in str(err.value)
    assert str(tmp_path / "tiny.yml") in str(err.value)


def test_keys_the_trainer_reads_are_accepted(tmp_path: Path, data) -> None:
    opt = options(*data, train__compile={"backend": "aot_eager", "dynamic": False}, train__max_bad_steps=3,
                  datasets__train__num_prefetch_queue=2, datasets__train__skip_bad_images=True,
                  logger__save_format="safetensors", root_path=str(tmp_path))
    parsed = _parse(tmp_path, opt)
    assert parsed["train"]["compile"] == {"backend": "aot_eager", "dynamic": False}


def test_overrides_are_validated_like_the_file(tmp_path: Path, data) -> None:
    with pytest.raises(SchemaError) as err:
        _parse(tmp_path, options(*data), "train:optim_g:lr=-0.001", "train:ema_decay=2")
    text = str(err.value)
    assert "train.optim_g.lr: must be positive, got -0.001" in text
    assert "train.ema_decay: must be below 1, got 2" in text
    assert "(after --force-yml train:optim_g:lr=-0.001 train:ema_decay=2)" in text
    with pytest.raises(SchemaError, match="train.total_itr: unknown key; did you mean 'total_iter'"):
        _parse(tmp_path, options(*data), "train:total_itr=5")


def test_numbers_yaml_reads_as_strings_are_named_with_the_fix(tmp_path: Path, data) -> None:
    text = write_yaml(tmp_path, options(*data)).read_text().replace("lr: 0.002", "lr: 2e-3")
    (tmp_path / "tiny.yml").write_text(text)
    with pytest.raises(SchemaError, match=r"tiny.yml:\d+: train.optim_g.lr: '2e-3' is a string \(YAML reads 2e-3 as a "
                                          r"string: write 0.002 or !!float 2e-3\)"):
        parse_options(tmp_path / "tiny.yml", is_train=True, root_path=tmp_path)


def test_an_unknown_key_stops_training_before_any_work(tmp_path: Path, data) -> None:
    opt = options(*data, name="typo")
    opt["train"]["ema_decya"] = 0.9
    with pytest.raises(SchemaError) as err:
        train(write_yaml(tmp_path, opt), tmp_path)
    assert f"{tmp_path / 'typo.yml'}:" in str(err.value) and "train.ema_decya: unknown key; did you mean 'ema_decay'?" in str(err.value)
    assert not (tmp_path / "experiments").exists()  # nothing created


def test_the_test_pipeline_validates_through_parse_options_only(tmp_path: Path, data) -> None:
    source = (ROOT / "lkdn" / "test.py").read_text()
    assert "validate_options" not in source  # one place: lkdn.options.parse_options
    hr, lr = data
    opt = {"name": "t", "scale": 2, "num_gpu": 0, "network_g": {"type": "LKDN", "num_feat": 8, "upscale": 2},
           "datasets": {"test_1": {"name": "x", "type": "PairedImageDataset", "dataroot_gt": str(hr),
                                   "dataroot_lq": str(lr)}},
           "path": {"pretrain_network_g": "missing.pth"}, "val": {"save_img": False, "metrcs": {}}}
    with pytest.raises(SchemaError, match="val.metrcs: unknown key; did you mean 'metrics'"):
        test_entry.score(["-opt", str(write_yaml(tmp_path, opt)), "--root", str(tmp_path)])
    assert not (tmp_path / "results").exists()


def test_a_number_as_dataset_name_is_not_a_crash(tmp_path: Path, data) -> None:
    """Found by tests/reliability/test_fuzz.py: ``datasets: {1: ...}`` crashed parse_options (int.split)."""
    opt = options(*data)
    opt["datasets"][1] = opt["datasets"].pop("train")
    assert _parse(tmp_path, opt)["datasets"][1]["phase"] == "1"
    with pytest.raises(ValueError, match="datasets.1: expected train, val or val_<n>"):
        train(tmp_path / "tiny.yml", tmp_path)


_OPENED: list[str] | None = None  # the audit hook below records opens while this is a list


def _record_opens(event: str, args: tuple) -> None:
    if _OPENED is not None and event == "open" and isinstance(args[0], str | Path):
        _OPENED.append(str(args[0]))


def test_the_option_file_is_read_once_and_training_saves_that_text(tmp_path: Path) -> None:
    global _OPENED  # noqa: PLW0603 (the audit hook cannot be removed, so it reads a switch)
    import sys

    from lkdn.training.pipeline import _write_options

    source = tmp_path / "train.yml"
    source.write_text(ROOT.joinpath("options/test/LKDN/test_LKDN_x4.yml").read_text(encoding="utf-8")
                      + "\n# a comment only the text has\n", encoding="utf-8")
    sys.addaudithook(_record_opens)
    _OPENED = []
    try:
        opt = parse_options(source, is_train=False, overrides=["val.save_img=false"])
        opened = [p for p in _OPENED if Path(p).resolve() == source.resolve()]
    finally:
        _OPENED = None
    assert len(opened) == 1, opened
    assert opt.text == source.read_text(encoding="utf-8")
    saved = tmp_path / "saved.yml"
    _write_options(opt.text, ["val.save_img=false"], saved, ["-opt", str(source)])
    assert yaml.safe_load(saved.read_text(encoding="utf-8"))["val"]["save_img"] is False
