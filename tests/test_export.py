"""mocomri export: each format loads into its library's class with strict=True and equal outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mocomri.cli import main as cli_main
from mocomri.config import load_config, save_config
from mocomri.export import TOLERANCE, ExportError, export_run
from mocomri.models import create_encoder


def _run(tmp_path: Path, name: str, in_channels: int, width: int, seed: int = 0, norm: str = "batch") -> Path:
    """A run directory as `mocomri pretrain` leaves it: config.yaml and encoder.pt (random weights,
    norm statistics and scales moved off their initial values so that a wrong load would show)."""
    run = tmp_path / f"{name}_c{in_channels}_w{width}_{norm}"
    run.mkdir()
    cfg = load_config(None, [f"model.name={name}", f"model.in_channels={in_channels}", f"model.width={width}",
                             f"model.norm={norm}", "data.image_size=32", "data.patch_size=16"])
    save_config(cfg, run / "config.yaml")
    torch.manual_seed(seed)
    backbone, _ = create_encoder(name, in_channels=in_channels, width=width, norm=norm)
    for module in backbone.modules():
        if isinstance(module, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
        if isinstance(module, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d, torch.nn.GroupNorm)):
            module.weight.data.uniform_(0.5, 1.5)
    torch.save(backbone.state_dict(), run / "encoder.pt")
    return run


def _target_output(fmt: str, name: str, c: int, width: int, weights: Path, x: torch.Tensor) -> torch.Tensor:
    """Loads the file into the target library's class as a user would, independently of mocomri.export."""
    if fmt == "torchvision":
        import torchvision

        net = getattr(torchvision.models, name)(weights=None)
        net.conv1 = torch.nn.Conv2d(c, 64, kernel_size=7, stride=2, padding=3, bias=False)
        net.fc = torch.nn.Identity()
    elif fmt == "timm":
        timm = pytest.importorskip("timm")
        net = timm.create_model(name, pretrained=False, num_classes=0, in_chans=c)
    elif fmt == "monai":
        from monai.networks.nets import ResNet

        layers = {"resnet18": [2, 2, 2, 2], "resnet18_3d": [2, 2, 2, 2], "resnet50": [3, 4, 6, 3]}[name]
        block = "bottleneck" if name == "resnet50" else "basic"
        net = ResNet(block=block, layers=layers, block_inplanes=[width, 2 * width, 4 * width, 8 * width],
                     spatial_dims=3 if name.endswith("_3d") else 2, n_input_channels=c, conv1_t_stride=2,
                     bias_downsample=False, feed_forward=False)
    else:
        net, _ = create_encoder(name, in_channels=c, width=width)
    net.load_state_dict(load_file(str(weights)), strict=True)
    with torch.no_grad():
        return net.eval()(x)


@pytest.mark.parametrize("fmt,name,channels,width", [
    ("torchvision", "resnet18", 1, 64),
    ("torchvision", "resnet18", 4, 64),
    ("timm", "resnet18", 1, 64),
    ("timm", "resnet50", 4, 64),
    ("monai", "resnet18", 1, 16),
    ("monai", "resnet18_3d", 1, 8),
    ("monai", "resnet18_3d", 4, 8),
    ("safetensors", "resnet18", 4, 16),
    ("safetensors", "resnet18_3d", 1, 8),
])
def test_export__loads_strictly_into_the_target_with_equal_outputs(tmp_path, fmt, name, channels, width):
    if fmt == "timm":
        pytest.importorskip("timm")
    run = _run(tmp_path, name, channels, width)
    result = export_run(run, fmt, tmp_path / "out")
    assert result.max_abs_difference <= TOLERANCE
    dims = 3 if name.endswith("_3d") else 2
    x = torch.randn(2, channels, *(16,) * dims if dims == 3 else (32, 32))
    backbone, _ = create_encoder(name, in_channels=channels, width=width)
    backbone.load_state_dict(torch.load(run / "encoder.pt", weights_only=True))
    with torch.no_grad():
        expected = backbone.eval()(x)
    torch.testing.assert_close(_target_output(fmt, name, channels, width, result.weights, x).reshape(expected.shape),
                               expected, atol=TOLERANCE, rtol=0)
    card = json.loads((tmp_path / "out" / "model_card.json").read_text())
    for key in ("architecture", "input", "pretraining", "loading", "check"):
        assert key in card
    assert card["input"]["channels"] == channels and card["architecture"]["encoder"] == name
    markdown = (tmp_path / "out" / "MODEL_CARD.md").read_text()
    assert "model.safetensors" in markdown and "load_state_dict" in markdown


@pytest.mark.parametrize("fmt,name,width", [("torchvision", "resnet18", 64), ("timm", "resnet18", 64),
                                            ("safetensors", "resnet18_3d", 8)])
def test_export__group_norm_run_loads_into_the_target_built_with_group_norm(tmp_path, monkeypatch, fmt, name, width):
    if fmt == "timm":
        timm = pytest.importorskip("timm")
    run = _run(tmp_path, name, 1, width, norm="group")
    result = export_run(run, fmt, tmp_path / "out")
    assert result.max_abs_difference <= TOLERANCE
    assert load_file(str(result.weights)).keys().isdisjoint({"bn1.running_mean", "bn1.running_var"})

    def group_norm(channels, **factory):  # as a user would pass GroupNorm to the library (8: the default groups)
        return torch.nn.GroupNorm(8, channels, **factory)

    if fmt == "torchvision":
        import torchvision

        net = torchvision.models.resnet18(weights=None, norm_layer=group_norm)
        net.conv1 = torch.nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        net.fc = torch.nn.Identity()
    elif fmt == "timm":
        net = timm.create_model(name, pretrained=False, num_classes=0, in_chans=1, norm_layer=group_norm)
    else:
        net, _ = create_encoder(name, width=width, norm="group", norm_groups=8)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())
    net.load_state_dict(load_file(str(result.weights)), strict=True)
    backbone, _ = create_encoder(name, width=width, norm="group")
    backbone.load_state_dict(torch.load(run / "encoder.pt", weights_only=True))
    x = torch.randn(2, 1, *((16,) * 3 if name.endswith("_3d") else (32, 32)))
    with torch.no_grad():
        expected = backbone.eval()(x)
        torch.testing.assert_close(net.eval()(x).reshape(expected.shape), expected, atol=TOLERANCE, rtol=0)
    card = json.loads((tmp_path / "out" / "model_card.json").read_text())
    assert (card["architecture"]["norm"], card["architecture"]["norm_groups"]) == ("group", 8)
    # the card's loading lines, run as a user would run them beside the file
    monkeypatch.chdir(tmp_path / "out")
    scope: dict = {}
    exec(f"import safetensors.torch, torch, torchvision, mocomri.models\n{'import timm' if fmt == 'timm' else ''}\n"
         + card["loading"], scope)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in scope["net"].modules())
    with torch.no_grad():
        torch.testing.assert_close(scope["net"].eval()(x).reshape(expected.shape), expected, atol=TOLERANCE, rtol=0)


def test_export__group_norm_to_monai_names_monais_stem_only_norm(tmp_path):
    run = _run(tmp_path, "resnet18_3d", 1, 8, norm="group")
    with pytest.raises(ExportError, match=r"--format monai: model\.norm=group.*stem only.*--format safetensors"):
        export_run(run, "monai", tmp_path / "out")
    assert not (tmp_path / "out" / "model.safetensors").exists()


@pytest.mark.parametrize("fmt,name,width,advice", [
    ("torchvision", "resnet18", 32, "--format monai"),
    ("timm", "resnet18", 32, "--format monai"),
    ("torchvision", "resnet18_3d", 8, "3D encoder"),
])
def test_export__a_target_that_cannot_hold_the_model_is_a_clear_error(tmp_path, fmt, name, width, advice):
    run = _run(tmp_path, name, 1, width)
    with pytest.raises(ExportError, match=advice):
        export_run(run, fmt, tmp_path / "out")
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_export_command__one_line_error_and_exit_code_2(tmp_path, capsys):
    run = _run(tmp_path, "resnet18", 1, 32)
    assert cli_main(["export", str(run), "--format", "torchvision", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model.width=32" in err
    assert cli_main(["export", str(run), "--format", "monai", "--out", str(tmp_path / "o")]) == 0
    assert "load it with" in capsys.readouterr().out


def test_export__model_card_carries_the_probe_numbers_beside_their_baselines(tmp_path):
    run = _run(tmp_path, "resnet18", 1, 16)
    entry = {"mean": 0.8, "std": 0.01, "ci": [0.75, 0.85], "per_seed": [0.8]}
    metrics = {"settings": {"knn_k": 20, "unit": "item"},
               "methods": {"moco": {"1.0": {"accuracy": entry}},
                           "random_init": {"1.0": {"accuracy": {**entry, "mean": 0.7, "ci": [0.65, 0.75]}}}}}
    (run / "probe").mkdir()
    (run / "probe" / "metrics.json").write_text(json.dumps(metrics))
    export_run(run, "safetensors", tmp_path / "out")
    card = json.loads((tmp_path / "out" / "model_card.json").read_text())
    assert card["probe"]["accuracy"]["moco"]["1.0"] == {"mean": 0.8, "std": 0.01, "ci95": [0.75, 0.85]}
    assert card["probe"]["accuracy"]["random_init"]["1.0"]["mean"] == 0.7
    markdown = (tmp_path / "out" / "MODEL_CARD.md").read_text()
    assert "MoCo encoder (linear)" in markdown and "Random init (linear)" in markdown and "80.0 [75.0, 85.0]" in markdown
