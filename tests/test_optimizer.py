from __future__ import annotations

import pytest
import torch
from torch import nn

from mocomri.config import load_config
from mocomri.train.optimizer import OPTIMIZERS, build_optimizer


def _model() -> nn.Module:
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    model[0].requires_grad_(False)  # a frozen layer, as the momentum encoder is
    return model


@pytest.mark.parametrize(
    ("name", "cls", "settings"),
    [
        ("sgd", torch.optim.SGD, {"lr": 0.03, "weight_decay": 1e-4, "momentum": 0.8}),
        ("adamw", torch.optim.AdamW, {"lr": 0.03, "weight_decay": 1e-4}),
    ],
)
def test_build_optimizer__each_name_builds_its_class_over_the_trainable_parameters(name, cls, settings):
    cfg = load_config(None, [f"optim.name={name}", "optim.lr=0.03", "optim.weight_decay=1e-4", "optim.sgd_momentum=0.8"])
    model = _model()
    optimizer = build_optimizer(model, cfg)
    assert type(optimizer) is cls
    (group,) = optimizer.param_groups
    assert [id(p) for p in group["params"]] == [id(p) for p in model[1].parameters()]
    assert {k: group[k] for k in settings} == settings


def test_build_optimizer__every_registered_name_is_tested_above():
    assert list(OPTIMIZERS) == ["sgd", "adamw"]


def test_build_optimizer__unknown_name_names_the_choices():
    cfg = load_config(None)
    cfg.optim.name = "lbfgs"  # past the config's own check
    with pytest.raises(ValueError, match=r"^optim\.name='lbfgs' must be 'sgd' or 'adamw'$"):
        build_optimizer(_model(), cfg)
