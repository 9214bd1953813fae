"""benchmarks/peft_cost.py: what each case trains, a tiny run end to end, and its table."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmarks.peft_cost import CASES, build_case, main, markdown, measure
from mocomri.config import Config, ModelConfig, save_config
from mocomri.data.settings import DataConfig
from mocomri.models import create_encoder


def _tiny():
    torch.manual_seed(0)
    encoder, feature_dim = create_encoder("resnet18", in_channels=1, width=4)
    return encoder, feature_dim, torch.randn(4, 1, 16, 16), torch.tensor([0, 1, 2, 3])


def test_build_case__counts_what_it_trains_and_the_step_moves_only_that() -> None:
    encoder, feature_dim, images, labels = _tiny()
    full = build_case("full", encoder, feature_dim, images, labels)
    assert full.trainable == sum(p.numel() for p in encoder.parameters())
    lora = build_case("lora", encoder, feature_dim, images, labels)
    # rank 4 on every conv of the residual blocks: A (4, in, k, k) and B (out, 4)
    convs = [m for n, m in encoder.named_modules() if n.startswith("layer") and isinstance(m, torch.nn.Conv2d)
             and ".conv" in n]
    assert lora.trainable == sum(4 * c.in_channels * c.kernel_size[0] * c.kernel_size[1] + c.out_channels * 4 for c in convs)
    ia3 = build_case("ia3", encoder, feature_dim, images, labels)
    blocks = [m for n, m in encoder.named_modules() if n.count(".") == 1 and n.startswith("layer")]
    assert ia3.trainable == sum(b.conv2.in_channels + b.bn2.num_features for b in blocks)

    frozen = {k: v.clone() for k, v in lora.model.state_dict().items() if "lora_" not in k}
    lora()
    for key, value in lora.model.state_dict().items():
        if key in frozen:
            assert torch.equal(value, frozen[key]), key  # the base encoder, BatchNorm statistics included
    with pytest.raises(ValueError, match="case='half' must be one of"):
        build_case("half", encoder, feature_dim, images, labels)


def test_measure__tiny_config_end_to_end_and_its_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "tiny.yaml"
    save_config(Config(model=ModelConfig(name="resnet18", width=4), data=DataConfig(image_size=16)), config)
    results = measure(str(config), batch_size=4, rounds=2, steps_per_round=1, warmup=1, device=torch.device("cpu"))
    assert list(results["cases"]) == list(CASES)
    for row in results["cases"].values():
        assert row["median_ms"] > 0 and row["best_ms"] <= row["median_ms"] and row["speedup_vs_full"] > 0
    assert results["cases"]["full"]["speedup_vs_full"] == 1.0

    lines = markdown(results).splitlines()
    assert lines[2] == "| training | trainable parameters | share of full | step time, ms | speed vs full | peak memory, MiB |"
    full = results["cases"]["full"]
    assert lines[-1].startswith(f"| full fine-tuning | {full['trainable']:,} | 100.00% | {full['median_ms']:.1f} (")
    assert lines[4].split(" | ")[2] == f"{100 * results['cases']['lora']['trainable'] / full['trainable']:.2f}%"

    assert main(["--config", str(config), "--batch-size", "4", "--quick", "--out", str(tmp_path / "cost.json")]) == 0
    assert "| (IA)³ |" in capsys.readouterr().out and (tmp_path / "cost.json").is_file()
