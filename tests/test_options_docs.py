"""The option declarations (lkdn/options.py) are the one source of docs/options.md's key tables,
docs/options.schema.json and the defaults the loaded options carry."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import lkdn.options as schema
from lkdn.options import MAX_SCALE, SchemaError, Val, fill_defaults, parse_options, validate_options, with_defaults

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "options").rglob("*.yml"))


def test_generated_docs_are_up_to_date() -> None:
    stale = schema.outdated(ROOT / "docs")
    assert not stale, f"{', '.join(map(str, stale))} out of date: run python -m lkdn.options --write"


def test_out_of_date_docs_are_found_and_rewritten(tmp_path: Path) -> None:
    (tmp_path / "options.md").write_text((ROOT / "docs" / "options.md").read_text().replace("| `print_freq` | 100 |",
                                                                                            "| `print_freq` | 50 |"))
    assert schema.outdated(tmp_path) == [tmp_path / "options.md", tmp_path / "options.schema.json"]
    schema.write(tmp_path)
    assert schema.outdated(tmp_path) == []
    assert "| `print_freq` | 100 |" in (tmp_path / "options.md").read_text()


def test_the_check_command_names_the_command_that_fixes_it() -> None:
    result = subprocess.run([sys.executable, "-m", "lkdn.options", "--check"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_missing_marker_is_named() -> None:
    with pytest.raises(ValueError, match="docs/options.md: .*top level"):
        schema.render_markdown("# Options\n")


def test_every_declared_key_has_a_row_and_a_description() -> None:
    text = (ROOT / "docs" / "options.md").read_text()
    for name, model in schema.TABLES.items():
        for key, info in model.model_fields.items():
            assert info.description, f"{name}.{key} has no description"
            assert info.title, f"{name}.{key} has no title (its name in type errors)"
    for key in ("num_gpu", "dataset_enlarge_ratio", "pretrain_network_g", "ema_decay", "metrics.<name>.crop_border",
                "tile.pad", "wandb.mode", "dist_params.port", "io_backend.type"):
        assert f"| `{key}` |" in text


def test_the_json_schema_has_types_defaults_and_bounds() -> None:
    data = json.loads((ROOT / "docs" / "options.schema.json").read_text())
    train = data["$defs"]["Train"]["properties"]
    assert train["max_bad_steps"] == {**train["max_bad_steps"], "type": "integer", "default": 10, "exclusiveMinimum": 0}
    assert data["properties"]["scale"]["maximum"] == MAX_SCALE
    assert data["additionalProperties"] is False
    assert "shown" not in json.dumps(data)


@pytest.mark.parametrize("path", SHIPPED, ids=[str(p.relative_to(ROOT / "options")) for p in SHIPPED])
def test_shipped_files_fit_the_json_schema(path: Path) -> None:
    import jsonschema  # the dev extra (setup.py)
    jsonschema.validate(yaml.safe_load(path.read_text()), json.loads((ROOT / "docs" / "options.schema.json").read_text()))


def test_defaults_are_filled_and_absent_keys_without_one_stay_absent() -> None:
    opt = {"name": "x", "datasets": {"train": {"name": "d", "gt_size": 8}}, "train": {"optim_g": {"type": "Adam"}},
           "val": {"metrics": {"psnr": {"type": "calculate_psnr", "crop_border": 2}}}, "logger": None}
    filled = fill_defaults(opt)
    assert ("logger",) in filled and ("logger", "print_freq") in filled and ("val", "metrics", "psnr", "better") in filled
    assert opt["logger"] == {"print_freq": 100, "save_checkpoint_freq": 5000, "use_tb_logger": False, "save_format": "pth"}
    assert opt["train"]["warmup_iter"] == -1 and opt["train"]["ema_decay"] == 0 and opt["train"]["max_bad_steps"] == 10
    assert opt["datasets"]["train"]["dataset_enlarge_ratio"] == 1 and opt["datasets"]["train"]["filename_tmpl"] == "{}"
    assert opt["val"]["metrics"]["psnr"]["better"] == "higher" and opt["val"]["optimize"] is True
    assert opt["dist_params"] == {"port": 29500} and opt["path"] == {}
    for absent in ("holdout", "subset", "prefetch_mode", "use_hflip"):
        assert absent not in opt["datasets"]["train"]
    assert "tile" not in opt["val"] and "scheduler" not in opt["train"] and "manual_seed" not in opt


def test_an_absent_or_unfilled_section_reads_the_declared_defaults() -> None:
    """``val`` absent from a file, or a plain mapping: the readers get the declared defaults, and
    the mapping given is left as it was."""
    assert with_defaults(None, Val) == {"save_img": False, "pbar": False, "self_ensemble": False, "optimize": True}
    given = {"optimize": False, "metrics": {"psnr": {"type": "calculate_psnr", "crop_border": 4}}}
    filled = with_defaults(given, Val)
    assert filled["optimize"] is False and filled["self_ensemble"] is False
    assert filled["metrics"]["psnr"]["better"] == "higher" and "better" not in given["metrics"]["psnr"]


@pytest.mark.parametrize("path", [ROOT / "options/train/LKDN/train_LKDN_x4.yml", ROOT / "options/test/LKDN/test_LKDN_x4.yml"])
def test_parsed_options_carry_the_defaults_and_load_again(path: Path, tmp_path: Path) -> None:
    is_train = "train" in yaml.safe_load(path.read_text())
    opt = parse_options(path, is_train=is_train, overrides=["num_gpu=0"], root_path=tmp_path)
    assert opt["logger"]["save_format"] == "pth" and opt["val"]["optimize"] is True
    saved = tmp_path / "saved.yml"  # what a run writes back: it must load again, unchanged
    saved.write_text(yaml.safe_dump(json.loads(json.dumps(opt))))
    again = parse_options(saved, is_train=is_train, root_path=tmp_path)
    assert again == opt


def test_as_written_leaves_out_the_filled_defaults_and_keeps_the_derived_values(tmp_path: Path) -> None:
    path = ROOT / "options/test/LKDN/test_LKDN_x4.yml"
    written = yaml.safe_load(path.read_text())
    opt = parse_options(path, is_train=False, overrides=["num_gpu=0"], root_path=tmp_path)
    copy = opt.as_written()
    assert "logger" not in written and "logger" not in copy and "dist_params" not in copy
    assert copy["datasets"]["test_1"] == {**written["datasets"]["test_1"], "phase": "test", "scale": 4,
                                          "dataroot_gt": opt["datasets"]["test_1"]["dataroot_gt"],
                                          "dataroot_lq": opt["datasets"]["test_1"]["dataroot_lq"]}
    assert copy["path"]["results_root"] == str(tmp_path / "results" / opt.name)
    assert copy["val"] == written["val"]


def test_a_filled_default_never_breaks_validation() -> None:
    opt = {"datasets": {"val": {}}, "train": {}, "val": {"metrics": {"m": {"crop_border": 0}}}}
    fill_defaults(opt)
    validate_options(opt)
    with pytest.raises(SchemaError, match="logger.print_freq: must be positive, got 0"):
        validate_options({**opt, "logger": {**opt["logger"], "print_freq": 0}})
