"""basicsr 1.4.2 imports on current torchvision through lkdn's one alias."""

import importlib
import sys

import torchvision


def test_basicsr_degradations_import_after_lkdn() -> None:
    import lkdn  # noqa: F401

    module = importlib.import_module("basicsr.data.degradations")
    assert hasattr(module, "random_add_gaussian_noise_pt")
    alias = sys.modules["torchvision.transforms.functional_tensor"]
    assert alias.rgb_to_grayscale is torchvision.transforms.functional.rgb_to_grayscale
