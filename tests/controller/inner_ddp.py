"""A tiny regression model and its data for the inner controller's tests, and one
rank of the two-process DDP test (a light module: spawned processes import it)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from tune_app.controller.inner import InnerController, resolve

W = torch.tensor([[1.0], [-2.0], [0.5]])


def batches(seed: int = 0, n: int = 40, noise: float = 0.1) -> Iterator[tuple[Any, Any]]:
    """``n`` seeded mini-batches of a noisy linear target."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        x = torch.randn(16, 3, generator=g)
        yield x, x @ W + noise * torch.randn(16, 1, generator=g)


def tiny(lr: float = 0.1, wd: float = 0.0) -> tuple[nn.Module, torch.optim.Optimizer]:
    """The same small MLP each call, with SGD and momentum (state to restore)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    return model, torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=wd)


def weights(model: nn.Module) -> list[torch.Tensor]:
    """Copies of the model's parameters."""
    return [p.detach().clone() for p in model.parameters()]


def ddp_rank(rank: int, port: int, policy: str, out: str) -> None:
    """One of two gloo ranks: DDP training under the controller, each rank with its
    own data; writes its history, weights and local losses to ``out/<rank>.pt``."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    model, opt = tiny(lr=1.0)
    net = nn.parallel.DistributedDataParallel(model)
    ctl = InnerController(resolve("lr", 2, policy), model, opt, world=2, rank=rank)
    local = []
    for x, y in batches(seed=10 + rank, n=16, noise=0.5 + 2.0 * rank):
        opt.zero_grad()
        loss = F.mse_loss(net(x), y)
        loss.backward()
        opt.step()
        ctl.after_step(loss)
        local.append(float(loss.detach()))
    torch.save(
        {"history": ctl.history, "weights": weights(model), "local": local}, f"{out}/{rank}.pt"
    )
    dist.destroy_process_group()
