"""The shared digests against hashlib computed by hand."""

from __future__ import annotations

import hashlib
import struct

import torch

from mocomri.files import file_digest, state_dict_digest


def test_file_digest__is_the_sha1_of_the_bytes(tmp_path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"mocomri" * 1000)
    assert file_digest(path, chunk=7) == hashlib.sha1(b"mocomri" * 1000).hexdigest()


def test_state_dict_digest__keys_dtypes_shapes_and_little_endian_values() -> None:
    state = {"b": torch.tensor([2], dtype=torch.int64), "a": torch.tensor([[1.0, -0.5]])}
    expected = hashlib.sha1()
    expected.update(b"a|torch.float32|(1, 2)|" + struct.pack("<2f", 1.0, -0.5))
    expected.update(b"b|torch.int64|(1,)|" + struct.pack("<q", 2))
    assert state_dict_digest(state) == expected.hexdigest()
    # the same weights in another layout or order give the same digest; other values do not
    assert state_dict_digest({"a": state["a"].t().contiguous().t(), "b": state["b"]}) == expected.hexdigest()
    assert state_dict_digest({**state, "b": torch.tensor([3])}) != expected.hexdigest()
