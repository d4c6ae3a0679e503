"""Checks shared by the network tests: gradients reach every parameter and a step moves it."""

from __future__ import annotations

import torch
from torch import nn


def sgd_step_changes_every_parameter(net: nn.Module, x: torch.Tensor) -> None:
    """Run one forward/backward/SGD step and assert every parameter got a gradient and moved."""
    net.train()
    before = {name: p.detach().clone() for name, p in net.named_parameters()}
    net.zero_grad()
    output = net(x)
    loss = (output - torch.randn_like(output)).pow(2).mean()
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), name
    with torch.no_grad():  # one plain SGD step (torch.optim takes a second to import)
        for p in net.parameters():
            p -= 0.1 * p.grad
    for name, p in net.named_parameters():
        assert not torch.equal(before[name], p.detach()), f"{name} did not change"
