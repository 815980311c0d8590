"""Fuzzing (hypothesis, bounded): the option loader and the image readers raise only our clear errors."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from reliability_common import TINY, make_images

from lkdn.data.safe_dataset import DataError, build_checked_dataset, decode_image
from lkdn.images import read_image
from lkdn.options import TOP, OptionsError, SchemaError, parse_options

FUZZ = settings(max_examples=150)  # no deadline, derandomized: the suite-wide profile (conftest.py)

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["auto", "1e-3", "~", "LKDN", "Adan", "L1Loss", "disk", "lmdb"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=12)
# key paths of the options (known keys mostly, some typos), to mutate a valid file deeply
KNOWN = sorted(TOP) + ["train", "optim_g", "lr", "type", "datasets", "gt_size", "upscale", "num_feat", "metrics",
                       "io_backend", "scheduler", "milestones", "pixel_opt", "compile", "save_format", "tile"]
key_paths = st.lists(st.one_of(st.sampled_from(KNOWN), st.text(min_size=1, max_size=6), st.integers(-3, 3),
                               st.booleans(), st.none()), min_size=1, max_size=4)


def _base() -> dict[str, Any]:
    opt = copy.deepcopy(TINY)
    opt["datasets"]["train"].update(dataroot_gt="/nonexistent/hr", dataroot_lq="/nonexistent/lr")
    opt["val"] = {"val_freq": 10, "metrics": {"psnr": {"type": "calculate_psnr", "crop_border": 2}}}
    return opt


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _parse(work: Path, text: str | bytes, *, is_train: bool, overrides: list[str] = ()) -> None:
    path = work / "fuzz.yml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    try:
        parse_options(path, is_train=is_train, overrides=overrides, root_path=work)
    except (OptionsError, SchemaError) as err:
        assert str(path) in str(err) or "--force-yml" in str(err), str(err)


@FUZZ
@given(text=st.one_of(st.text(max_size=300), st.binary(max_size=200)), is_train=st.booleans())
def test_random_text_is_an_option_error_or_options(work: Path, text: str | bytes, is_train: bool) -> None:
    _parse(work, text, is_train=is_train)


@FUZZ
@given(mutations=st.lists(st.tuples(key_paths, st.one_of(values, st.just("__delete__"))), max_size=4),
       is_train=st.booleans())
def test_mutated_option_files_are_validated_not_crashed(work: Path, mutations: list[tuple[list[Any], Any]],
                                                        is_train: bool) -> None:
    opt: Any = _base()
    for path, value in mutations:
        node = opt
        for key in path[:-1]:
            if not isinstance(node, dict):
                break
            node = node.setdefault(key, {}) if not isinstance(node.get(key), (dict, list)) or key not in node else node[key]
        if isinstance(node, dict):
            if value == "__delete__":
                node.pop(path[-1], None)
            else:
                node[path[-1]] = value
    _parse(work, yaml.safe_dump(opt, allow_unicode=True), is_train=is_train)


@FUZZ
@given(entries=st.lists(st.one_of(st.text(max_size=30), st.builds("{}={}".format, st.sampled_from(
    ["train:optim_g:lr", "scale", "datasets:train:gt_size", "network_g", "val.metrics", "name", "a:b:c", ":", "train:"]),
    st.text(max_size=15))), max_size=3))
def test_random_overrides_are_option_errors(work: Path, entries: list[str]) -> None:
    _parse(work, yaml.safe_dump(_base()), is_train=True, overrides=entries)


# ------------------------------------------------------------------------------------------ images

def _png(seed: int, size: tuple[int, int]) -> bytes:
    image = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    return cv2.imencode(".png", image)[1].tobytes()


def _jpeg(seed: int, size: tuple[int, int]) -> bytes:
    image = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    return cv2.imencode(".jpg", image)[1].tobytes()


images = st.one_of(
    st.binary(max_size=600),
    st.builds(lambda data, cut: data[:cut], st.builds(_png, st.integers(0, 9), st.tuples(st.integers(1, 12), st.integers(1, 12))),
              st.integers(0, 2000)),
    st.builds(lambda data, cut: data[:cut], st.builds(_jpeg, st.integers(0, 9), st.tuples(st.integers(1, 12), st.integers(1, 12))),
              st.integers(0, 2000)),
    st.builds(lambda data, at, byte: data[:at] + bytes([byte]) + data[at + 1:],
              st.builds(_png, st.integers(0, 9), st.just((8, 8))), st.integers(0, 300), st.integers(0, 255)),
)


@FUZZ
@given(data=images)
def test_read_image_returns_an_image_or_names_the_file(work: Path, data: bytes) -> None:
    path = work / "image.png"
    path.write_bytes(data)
    try:
        image = read_image(path)
    except DataError as err:
        assert str(path) in str(err)
    else:
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    try:
        decode_image(data, "bytes")
    except DataError as err:
        assert str(err).startswith("bytes: ")


@pytest.fixture(scope="module")
def dataset_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_images(tmp_path_factory.mktemp("fuzz_data"))


@settings(FUZZ, max_examples=100)
@given(data=images, target=st.sampled_from(["HR", "LRx2"]), phase=st.sampled_from(["train", "val"]))
def test_dataset_loading_returns_a_sample_or_names_the_file(dataset_folder, data: bytes, target: str,
                                                            phase: str) -> None:
    hr, lr = dataset_folder
    victim = (hr if target == "HR" else lr) / "a.png"
    original = victim.read_bytes()
    opt = {"name": "fuzz", "type": "PairedImageDataset", "dataroot_gt": str(hr), "dataroot_lq": str(lr), "scale": 2,
           "phase": phase, "gt_size": 8, "use_hflip": True, "use_rot": True, "io_backend": {"type": "disk"}}
    try:
        victim.write_bytes(data)
        dataset = build_checked_dataset(opt, where=f"datasets.{phase}")
        index = [Path(p["gt_path"]).name for p in dataset.paths].index("a.png")
        try:
            sample = dataset[index]
        except DataError as err:
            assert str(victim) in str(err) and f"datasets.{phase}: sample {index}" in str(err)
        else:
            assert sample["gt"].shape[-1] == 2 * sample["lq"].shape[-1]
    finally:
        victim.write_bytes(original)
