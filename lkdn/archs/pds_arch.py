"""PDS (NTIRE 2026 efficient-SR challenge, 2nd place): SPANF with a 20-channel fusion output.

Reference: "The Eleventh NTIRE 2026 Efficient Super-Resolution Challenge Report", arXiv:2604.03198
(team 01, "PDS"); official code github.com/Amazingren/NTIRE2026_ESR ``models/team01_PDS.py``. The
checkpoint ``PDS_NTIRE2026`` is the submitted one (a bare state dict, 141,748 parameters), a deploy
form: every 3x3 conv is a folded :class:`~lkdn.archs.span_arch.Conv3XC` (``eval_conv`` keys).

The network is the layout of PKDSR (:class:`lkdn.archs.pkdsr_arch.SPANFTrunk`: a learnable
nearest-neighbour path ``conv_near`` beside five SPAN blocks, a 1x1 fusion of ``[near, block 5,
block 1]``, a 3x3 conv and a PixelShuffle) with a 20-channel fusion conv; only the key names of
the two tail convs differ (``conv_cat_1``, ``conv_2_1``). The input is used as it is, in [0, 1].
The training form has a :class:`~lkdn.archs.span_arch.Conv3XC` for every 3x3 conv but ``conv_near``
(the form the official ``Conv3XC(..., gain1=2)`` signature refers to; PDS's training code is not
published); ``deploy: true`` builds the folded form that loads the official checkpoint.
"""

from __future__ import annotations

from lkdn.archs.contract import conv_receptive_radius, register_architecture
from lkdn.archs.pkdsr_arch import SPANFTrunk, trunk_detection


class PDS(SPANFTrunk):
    """PDS (NTIRE 2026, 2nd place); see the module docstring.

    Args:
        num_in_ch: input image channels.
        num_out_ch: output image channels (official: the input's).
        feature_channels: channels of the five blocks (official: 32).
        tail_channels: output channels of ``conv_cat_1`` (official: 20, its ``ditill_upsample``).
        upscale: upscaling factor.
        deploy: build every :class:`~lkdn.archs.span_arch.Conv3XC` in its folded form (loads the
            official checkpoint).
    """

    fusion_key = "conv_cat_1"
    tail_key = "conv_2_1"

    def __init__(self, *, num_in_ch: int = 3, num_out_ch: int = 3, feature_channels: int = 32, tail_channels: int = 20,
                 upscale: int = 4, deploy: bool = False) -> None:
        super().__init__(num_in_ch=num_in_ch, num_out_ch=num_out_ch, feature_channels=feature_channels,
                         tail_channels=tail_channels, upscale=upscale, deploy=deploy)


register_architecture(
    PDS, test_options={"feature_channels": 8, "tail_channels": 5},
    test_variants=({"deploy": True}, {"upscale": 3}),
    receptive_radius=conv_receptive_radius,  # 3x3 and 1x1 convs, per-pixel attention: local
    deploy_options=lambda opt: opt | {"deploy": True},
    spandrel=trunk_detection(PDS, absent=("conv_cat.weight",)),
)
