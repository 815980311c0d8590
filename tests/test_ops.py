"""``lkdn.archs.ops.conv_act``: a convolution and its activation as one oneDNN convolution in CPU inference."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lkdn.archs import ops
from lkdn.archs.bsconv import BSConvU, BSConvU_idt

pytestmark = pytest.mark.skipif(ops._POINTWISE is None, reason="this torch build has no oneDNN fused convolution")

ACTS = [nn.GELU(), nn.GELU(approximate="tanh"), nn.ReLU(), nn.SiLU(), nn.LeakyReLU(0.1)]
CONVS = [  # (in, out, kernel, stride, padding, dilation, groups, bias)
    (8, 6, 1, 1, 0, 1, 1, True), (8, 8, 3, 1, 1, 1, 8, True), (6, 6, 5, 2, 6, 3, 6, False), (4, 10, 3, 1, 1, 1, 2, True),
]


@pytest.fixture
def fused_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the calls of the fused oneDNN convolution."""
    calls: list[int] = []
    op = ops._POINTWISE

    def counted(*args):
        calls.append(1)
        return op(*args)

    monkeypatch.setattr(ops, "_POINTWISE", counted)
    return calls


def reference(conv: nn.Module, act: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.enable_grad():  # autograd on: the unfused, out-of-place ops
        return act(conv(x.clone().requires_grad_(True))).detach()


@pytest.mark.parametrize("act", ACTS, ids=lambda a: f"{type(a).__name__}{getattr(a, 'approximate', '')}")
@pytest.mark.parametrize("spec", CONVS, ids=str)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_fused_conv_act_equals_conv_then_act(act, spec, channels_last, fused_calls) -> None:
    c_in, c_out, k, stride, padding, dilation, groups, bias = spec
    torch.manual_seed(0)
    conv = nn.Conv2d(c_in, c_out, k, stride=stride, padding=padding, dilation=dilation, groups=groups, bias=bias).eval()
    x = torch.randn(2, c_in, 19, 23)
    if channels_last:
        conv, x = conv.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    expected = reference(conv, act, x)
    with torch.inference_mode():
        got = ops.conv_act(conv, act, x)
    assert fused_calls, "the fused convolution did not run"
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_fused_under_bf16_autocast_runs_in_bf16(fused_calls) -> None:
    torch.manual_seed(0)
    conv, act, x = nn.Conv2d(8, 8, 3, padding=1).eval(), nn.GELU(), torch.randn(1, 8, 16, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = reference(conv, act, x)
        with torch.inference_mode():
            got = ops.conv_act(conv, act, x)
    assert fused_calls and got.dtype == expected.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), expected.float(), atol=2e-2, rtol=2e-2)  # bf16: 8 bits of mantissa


def test_autograd_and_unsupported_cases_run_unfused(fused_calls) -> None:
    conv, x = nn.Conv2d(4, 4, 3, padding=1), torch.randn(1, 4, 8, 8, requires_grad=True)
    y = ops.conv_act(conv, nn.GELU(), x)  # autograd on
    y.sum().backward()
    assert x.grad is not None and conv.weight.grad is not None
    with torch.inference_mode():
        torch.testing.assert_close(ops.conv_act(conv, nn.Tanhshrink(), x), nn.Tanhshrink()(conv(x)))  # no post-op for it
        reflect = nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect")
        torch.testing.assert_close(ops.conv_act(reflect, nn.ReLU(), x), torch.relu(reflect(x)))
    assert not fused_calls


@pytest.mark.parametrize("cls", [BSConvU, BSConvU_idt])
def test_bsconv_fuses_only_what_it_computes(cls, fused_calls) -> None:
    """BSConvU fuses the activation into its depthwise conv; BSConvU_idt (a residual after it) must not."""
    torch.manual_seed(0)
    conv, act, x = cls(6, 6).eval(), nn.GELU(), torch.randn(1, 6, 12, 10)
    expected = reference(conv, act, x)
    with torch.inference_mode():
        got = ops.conv_act(conv, act, x)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert bool(fused_calls) == (cls is BSConvU)


@pytest.mark.parametrize("make", [lambda: nn.Conv2d(4, 4, 3, padding=1), lambda: BSConvU(4, 4)], ids=["conv", "bsconv"])
def test_a_module_with_a_forward_hook_runs_unfused(make, fused_calls) -> None:
    """Feature extraction with hooks under no_grad must still see the hooked module's output."""
    conv, seen = make().eval(), []
    conv.register_forward_hook(lambda module, args, out: seen.append(out.shape))
    with torch.inference_mode():
        ops.conv_act(conv, nn.GELU(), torch.randn(1, 4, 8, 8))
    assert seen == [torch.Size([1, 4, 8, 8])] and not fused_calls
