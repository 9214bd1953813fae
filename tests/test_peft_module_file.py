"""Module files: a round trip keeps tensors, heads and metadata; a module refuses another base encoder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mocomri.peft import PEMEncoder, PEMError, load_pem, save_pem, state_dict_digest
from test_peft_arithmetic import _encoder, _pem


def test_module_file__round_trips_with_its_metadata(tmp_path: Path) -> None:
    pem = _pem("lora", 1, seed=4)
    pem.provenance = {"objective": "ce", "manifest_sha1": "ab" * 20, "labels": ["a", "b"]}
    path = save_pem(pem, tmp_path / "m.safetensors")
    back = load_pem(path)
    assert back.spec == pem.spec and back.spec.seed == 4
    assert back.layers == pem.layers and back.base == pem.base and back.provenance == pem.provenance
    assert back.path == str(path)
    assert set(back.tensors) == set(pem.tensors)
    for key, value in pem.tensors.items():
        assert torch.equal(back.tensors[key], value)
    assert back.heads[0].labels == pem.heads[0].labels
    assert torch.equal(back.heads[0].weight, pem.heads[0].weight)


def test_module_file__records_the_base_encoder_digest_of_its_state_dict() -> None:
    pem = _pem("ia3", 1)
    assert pem.base.sha1 == state_dict_digest(_encoder().state_dict())
    assert pem.base.sha1 != state_dict_digest(_encoder(seed=1).state_dict())


def test_module_file__attaches_to_its_base_and_refuses_another(tmp_path: Path) -> None:
    pem = load_pem(save_pem(_pem("lora", 1), tmp_path / "m.safetensors"))
    x = torch.randn(2, 1, 16, 16)
    attached = PEMEncoder.from_pem(pem, _encoder()).eval()
    with torch.no_grad():
        assert not torch.allclose(attached(x), _encoder()(x))
    with pytest.raises(PEMError, match=r"m\.safetensors was trained on the encoder with hash"):
        PEMEncoder.from_pem(pem, _encoder(seed=1))


def test_module_file__another_file_is_an_error_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a module")
    with pytest.raises(PEMError, match="bad.safetensors"):
        load_pem(bad)


def test_save_merged__writes_a_plain_state_dict_that_reproduces_the_module(tmp_path: Path) -> None:
    from mocomri.peft import save_merged

    pem = _pem("ia3", 2)
    path = save_merged(pem, _encoder(), tmp_path / "encoder.pt")
    plain = _encoder(seed=7)
    plain.load_state_dict(torch.load(path, weights_only=True), strict=True)
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(plain.eval()(x), PEMEncoder.from_pem(pem, _encoder()).eval()(x), atol=1e-5, rtol=1e-4)
