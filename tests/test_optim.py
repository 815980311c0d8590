"""Optimizers (Adan against the paper's Algorithm 1), schedulers, EMA and BatchNorm population mode."""

from __future__ import annotations

import inspect

import pytest
import torch
from basicsr.models.lr_scheduler import CosineAnnealingRestartLR, MultiStepRestartLR
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

import lkdn  # noqa: F401 (registers)
from lkdn.archs.contract import register_architecture
from lkdn.models.sr_model import SRModel, set_train_mode
from lkdn.training.ema import WeightEMA
from lkdn.training.optim import (
    build_optimizer,
    build_scheduler,
    get_optimizer_class,
    get_scheduler_class,
    optimizer_names,
)
from lkdn.training.state import DistInfo

BETAS = (0.98, 0.92, 0.99)  # as written in the official configs


def small_problem() -> tuple[list[torch.Tensor], callable]:
    """Two float64 parameter tensors and a smooth non-quadratic loss of them."""
    gen = torch.Generator().manual_seed(1)
    weight = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    bias = torch.randn(3, generator=gen, dtype=torch.float64)
    x = torch.randn(16, 4, generator=gen, dtype=torch.float64)
    y = torch.randn(16, 3, generator=gen, dtype=torch.float64)

    def loss(w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return ((torch.tanh(x @ w.T + b) - y) ** 2).mean() + 0.1 * (w ** 4).sum()

    return [weight, bias], loss


def adan_algorithm_1(
    theta: list[torch.Tensor], loss, *, steps: int, lr: float, betas: tuple[float, float, float], eps: float,
    weight_decay: float,
) -> list[torch.Tensor]:
    """Adan, Algorithm 1 of Xie et al. (arXiv 2208.06677), written out.

    The paper's momentum coefficients are ``beta_paper = 1 - beta`` of the configs (its
    ViT setting beta_paper = (0.02, 0.08, 0.01) is betas = (0.98, 0.92, 0.99)). For k = 1, 2, ...:

        g_k = grad f(theta_k),  with g_0 = g_1 (the gradient difference of the first step is zero)
        m_k = (1 - b1) m_{k-1} + b1 g_k
        v_k = (1 - b2) v_{k-1} + b2 (g_k - g_{k-1})
        n_k = (1 - b3) n_{k-1} + b3 [g_k + (1 - b2)(g_k - g_{k-1})]^2
        eta_k = eta / (sqrt(n_k) + eps)
        theta_{k+1} = (1 + lambda eta)^-1 [theta_k - eta_k o (m_k + (1 - b2) v_k)]      (no_prox false)

    The moments start from zero and are bias-corrected, m_k / (1 - (1 - b1)^k) and likewise v_k
    and n_k: the authors' implementation's way of starting the recursion, which makes the first
    step theta_2 = (theta_1 - eta g_1 / (|g_1| + eps)) / (1 + lambda eta), as the paper's start
    m = g, n = g^2 does.
    """
    b1, b2, b3 = (1.0 - b for b in betas)
    theta = [t.clone() for t in theta]
    m = [torch.zeros_like(t) for t in theta]
    v = [torch.zeros_like(t) for t in theta]
    n = [torch.zeros_like(t) for t in theta]
    previous = None
    for k in range(1, steps + 1):
        params = [t.clone().requires_grad_(True) for t in theta]
        grads = torch.autograd.grad(loss(*params), params)
        previous = grads if previous is None else previous
        new_theta = []
        for i, (t, g, g_prev) in enumerate(zip(theta, grads, previous, strict=True)):
            m[i] = (1 - b1) * m[i] + b1 * g
            v[i] = (1 - b2) * v[i] + b2 * (g - g_prev)
            n[i] = (1 - b3) * n[i] + b3 * (g + (1 - b2) * (g - g_prev)) ** 2
            m_hat = m[i] / (1 - (1 - b1) ** k)
            v_hat = v[i] / (1 - (1 - b2) ** k)
            n_hat = n[i] / (1 - (1 - b3) ** k)
            eta_k = lr / (n_hat.sqrt() + eps)
            new_theta.append((t - eta_k * (m_hat + (1 - b2) * v_hat)) / (1 + weight_decay * lr))
        theta, previous = new_theta, grads
    return theta


def run_registered(opt: dict, steps: int) -> list[torch.Tensor]:
    params, loss = small_problem()
    params = [p.clone().requires_grad_(True) for p in params]
    optimizer = build_optimizer(params, opt)
    for _ in range(steps):
        optimizer.zero_grad()
        loss(*params).backward()
        optimizer.step()
    return [p.detach() for p in params]


@pytest.mark.parametrize("weight_decay", [0.0, 0.02])
@pytest.mark.parametrize("foreach", [True, False])
def test_adan_is_algorithm_1_of_the_paper(weight_decay: float, foreach: bool) -> None:
    opt = {"type": "Adan", "lr": 0.05, "betas": list(BETAS), "eps": 1e-8, "weight_decay": weight_decay,
           "no_prox": False, "foreach": foreach}
    got = run_registered(opt, steps=6)
    params, loss = small_problem()
    expected = adan_algorithm_1(params, loss, steps=6, lr=0.05, betas=BETAS, eps=1e-8, weight_decay=weight_decay)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-13)
    assert not torch.allclose(got[0], params[0])


def test_adan_first_step_is_a_normalized_gradient_step() -> None:
    params, loss = small_problem()
    got = run_registered({"type": "Adan", "lr": 0.05, "betas": list(BETAS), "weight_decay": 0.02}, steps=1)
    leaves = [p.clone().requires_grad_(True) for p in params]
    grads = torch.autograd.grad(loss(*leaves), leaves)
    for g_out, p, g in zip(got, params, grads, strict=True):
        torch.testing.assert_close(g_out, (p - 0.05 * g / (g.abs() + 1e-8)) / (1 + 0.02 * 0.05), rtol=1e-12, atol=1e-13)


def test_adan_betas_are_not_the_one_minus_convention() -> None:
    """Reading (0.98, 0.92, 0.99) as paper coefficients (adan-pytorch's convention) is a different run."""
    params, loss = small_problem()
    other = adan_algorithm_1(params, loss, steps=4, lr=0.05, betas=tuple(1 - b for b in BETAS), eps=1e-8,
                             weight_decay=0.0)
    got = run_registered({"type": "Adan", "lr": 0.05, "betas": list(BETAS)}, steps=4)
    assert (got[0] - other[0]).abs().max() > 1e-4


def test_every_torch_optimizer_is_registered() -> None:
    torch_names = {name for name, obj in vars(torch.optim).items()
                   if inspect.isclass(obj) and issubclass(obj, torch.optim.Optimizer) and obj is not torch.optim.Optimizer}
    assert {"Adam", "AdamW", "SGD", "RMSprop", "Adan"} <= set(optimizer_names())
    assert torch_names | {"Adan"} == set(optimizer_names())
    for name in sorted(torch_names):
        assert get_optimizer_class(name) is getattr(torch.optim, name)
    from timm.optim import Adan

    assert get_optimizer_class("Adan") is Adan


def test_optimizer_errors_name_the_key() -> None:
    param = [nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError, match=r"train.optim_g.type: unknown optimizer 'Adna'; did you mean 'Adan'"):
        build_optimizer(param, {"type": "Adna", "lr": 1e-3})
    with pytest.raises(ValueError, match=r"train.optim_g.weight_decya: unknown key; did you mean 'weight_decay'"):
        build_optimizer(param, {"type": "Adan", "lr": 1e-3, "weight_decya": 0})
    with pytest.raises(ValueError, match=r"max_grad_norm.*train.grad_clip"):
        build_optimizer(param, {"type": "Adan", "lr": 1e-3, "max_grad_norm": 1.0})
    opt = {"type": "Adam", "lr": 1e-3, "betas": [0.9, 0.99]}
    assert build_optimizer(param, opt).defaults["betas"] == (0.9, 0.99) and opt["betas"] == [0.9, 0.99]


def test_scheduler_names_follow_basicsr() -> None:
    assert get_scheduler_class("MultiStepLR") is MultiStepRestartLR
    assert get_scheduler_class("MultiStepRestartLR") is MultiStepRestartLR
    assert get_scheduler_class("CosineAnnealingRestartLR") is CosineAnnealingRestartLR
    assert get_scheduler_class("CosineAnnealingLR") is torch.optim.lr_scheduler.CosineAnnealingLR
    with pytest.raises(ValueError, match="did you mean 'CosineAnnealingLR'"):
        get_scheduler_class("CosineAnealingLR")
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match=r"train.scheduler.milestone: unknown key; did you mean 'milestones'"):
        build_scheduler(optimizer, {"type": "MultiStepLR", "milestone": [2]})
    scheduler = build_scheduler(optimizer, {"type": "CosineAnnealingLR", "T_max": 4.0, "eta_min": 0.0})
    values = []
    for _ in range(4):
        optimizer.step()
        scheduler.step()
        values.append(scheduler.get_last_lr()[0])
    assert values == pytest.approx([0.8535534, 0.5, 0.1464466, 0.0])


def test_ema_is_basicsr_model_ema_and_copies_buffers() -> None:
    torch.manual_seed(0)
    net, ema_net = nn.Sequential(nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2)), nn.Sequential(nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2))
    ema = WeightEMA(ema_net, decay=0.9)
    ema.copy_from(net)
    start = {k: v.clone() for k, v in ema_net.state_dict().items()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    net(torch.randn(4, 2, 3, 3))  # updates the running statistics
    ema.update(net)
    for name, param in net.named_parameters():
        expected = start[name].mul(0.9).add(param.detach(), alpha=0.1)
        assert torch.equal(dict(ema_net.named_parameters())[name], expected)
    torch.testing.assert_close(ema_net[1].running_mean, net[1].running_mean, rtol=0, atol=0)
    with pytest.raises(ValueError, match="ema_decay"):
        WeightEMA(ema_net, decay=1.0)


class TinyBNNetForTests(nn.Module):
    """conv - BatchNorm - PixelShuffle: the smallest SR network with BatchNorm."""

    def __init__(self, *, upscale: int = 2) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 3 * upscale**2, 3, padding=1), nn.BatchNorm2d(3 * upscale**2),
                                  nn.PixelShuffle(upscale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


if "TinyBNNetForTests" not in ARCH_REGISTRY:
    register_architecture(TinyBNNetForTests)


def test_bn_population_after_freezes_batch_statistics_but_not_weights() -> None:
    opt = {"network_g": {"type": "TinyBNNetForTests", "upscale": 2}, "path": {},
           "train": {"optim_g": {"type": "Adam", "lr": 1e-2}, "pixel_opt": {"type": "L1Loss"},
                     "bn_population_after": 2}}
    model = SRModel(opt, dist_info=DistInfo("none", 0, 1, 0, torch.device("cpu"), None))
    bn = model.net_g.body[1]
    history = []
    for it in range(1, 5):
        model.feed_data({"lq": torch.rand(2, 3, 8, 8), "gt": torch.rand(2, 3, 16, 16)})
        model.update_learning_rate(it)
        weight_before = bn.weight.detach().clone()
        model.optimize_parameters(it)
        history.append((bn.training, bn.running_mean.clone(), not torch.equal(weight_before, bn.weight)))
    assert [h[0] for h in history] == [True, True, False, False]
    assert not torch.equal(history[0][1], history[1][1])  # batch statistics update the running mean
    assert torch.equal(history[1][1], history[2][1]) and torch.equal(history[2][1], history[3][1])
    assert all(h[2] for h in history)  # the affine weights keep learning
    assert model.net_g.training and model.net_g.body[0].training


def test_set_train_mode_counts_batchnorm_layers() -> None:
    net = nn.Sequential(nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1), nn.Sequential(nn.BatchNorm1d(1)))
    net.eval()
    assert set_train_mode(net, bn_population=False) == 0 and all(m.training for m in net.modules())
    assert set_train_mode(net, bn_population=True) == 2
    assert [m.training for m in net.modules()] == [True, True, False, True, False]
