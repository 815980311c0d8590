"""Reading network options back from the tensor shapes of a state dict (for :class:`StateDictDetection`)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

IMAGE_CHANNELS = (3, 1, 4)
"""Candidate image channel counts, most likely first (spandrel's convention)."""


class ShapeError(ValueError):
    """A state dict has the keys of an architecture but its shapes make no network of it."""


def shape(state: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    """The shape of ``state[key]``; a :class:`ShapeError` names a missing key."""
    if key not in state:
        raise ShapeError(f"state dict has no {key!r}")
    return tuple(state[key].shape)


def count_blocks(state: Mapping[str, object], template: str) -> int:
    """How many consecutive ``template.format(1)``, ``template.format(2)``, ... keys ``state`` has."""
    count = 0
    while template.format(count + 1) in state:
        count += 1
    return count


def scale_and_channels(out_total: int, in_total: int) -> tuple[int, int, int]:
    """``(scale, image channels, input replication)`` of a PixelShuffle upsampler conv.

    ``out_total = channels * scale**2`` (the conv's output channels) and ``in_total = channels
    * replication`` (the first conv's input channels); the channel count is the first of
    :data:`IMAGE_CHANNELS` that fits both.
    """
    for channels in IMAGE_CHANNELS:
        if out_total % channels or in_total % channels:
            continue
        scale = math.isqrt(out_total // channels)
        if scale * scale * channels == out_total:
            return scale, channels, in_total // channels
    raise ShapeError(f"no image channel count in {IMAGE_CHANNELS} fits {in_total} input and {out_total} upsampler channels")
