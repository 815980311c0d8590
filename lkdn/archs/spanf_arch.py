"""SPANF: SPAN with a nearest-neighbour skip and no upsampler conv (NTIRE 2025 efficient SR, 2nd place).

Reference: the NTIRE 2025 efficient super-resolution challenge report (team XiaomiMM, "SPANF");
official code github.com/Amazingren/NTIRE2025_ESR ``models/team24_SPANF.py`` (class ``SPANF``,
built by the harness with ``feature_channels=32``). The checkpoint ``SPANF_NTIRE2025`` is the
submitted one: a bare state dict of 148,288 parameters in deploy form (every 3x3 conv a folded
``eval_conv``).

SPANF is the network that PKDSR (NTIRE 2026, :mod:`lkdn.archs.pkdsr_arch`) prunes: ``conv_near``
(a depthwise 3x3 conv giving every input channel ``upscale**2`` copies) runs beside five SPAN
blocks on the [0, 1] input as it is; ``conv_cat`` fuses ``[near, block 5, block 1]`` into
``feature_channels`` channels and ``conv_2`` (3x3) gives the ``num_out_ch * upscale**2`` channels
of the PixelShuffle. It is :class:`~lkdn.archs.pkdsr_arch.PKDSR` with ``tail_channels ==
feature_channels``; :func:`SPANF` builds that, so a SPANF state dict is recognised (spandrel) as
PKDSR with that width, the same network and keys.

The training form has a :class:`~lkdn.archs.span_arch.Conv3XC` (gain 2, the official signature's
``gain1=2``) for every 3x3 conv but ``conv_near``; ``deploy: true`` is the folded form of the
official checkpoint. The official code publishes the deploy form only.
"""

from __future__ import annotations

from lkdn.archs.contract import conv_receptive_radius, register_architecture
from lkdn.archs.pkdsr_arch import PKDSR


def SPANF(  # noqa: N802 (registered name used in YAML)
    *, num_in_ch: int = 3, num_out_ch: int = 3, feature_channels: int = 32, upscale: int = 4, deploy: bool = False,
) -> PKDSR:
    """SPANF: :class:`~lkdn.archs.pkdsr_arch.PKDSR` with a fusion conv as wide as the blocks.

    Args:
        num_in_ch: input image channels.
        num_out_ch: output image channels (official: the input's).
        feature_channels: channels of the five blocks and of the fusion (official: 32).
        upscale: upscaling factor.
        deploy: build every :class:`~lkdn.archs.span_arch.Conv3XC` in its folded form (loads the
            official checkpoint).
    """
    return PKDSR(num_in_ch=num_in_ch, num_out_ch=num_out_ch, feature_channels=feature_channels,
                 tail_channels=feature_channels, upscale=upscale, deploy=deploy)


register_architecture(
    SPANF, test_options={"feature_channels": 8}, test_variants=({"deploy": True},),
    receptive_radius=conv_receptive_radius,  # 3x3 and 1x1 convs, per-pixel attention: local
    deploy_options=lambda opt: opt | {"deploy": True},
)
