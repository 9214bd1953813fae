from __future__ import annotations

import pytest

from mocomri.models.shuffle_bn import SHUFFLE_BN_MODES, resolve_shuffle_bn


@pytest.mark.parametrize(
    ("batch_norm", "distributed", "expected"),
    [(False, False, "none"), (False, True, "none"), (True, True, "ddp"), (True, False, "split")],
)
def test_resolve_shuffle_bn__auto_follows_the_encoder_then_the_process_count(batch_norm, distributed, expected):
    assert resolve_shuffle_bn("auto", batch_norm, distributed) == expected


@pytest.mark.parametrize("mode", [m for m in SHUFFLE_BN_MODES if m != "auto"])
def test_resolve_shuffle_bn__an_explicit_mode_is_kept(mode):
    for batch_norm in (True, False):
        for distributed in (True, False):
            assert resolve_shuffle_bn(mode, batch_norm, distributed) == mode


def test_resolve_shuffle_bn__unknown_mode_names_the_allowed_ones():
    with pytest.raises(ValueError, match=r"shuffle_bn='sync' must be one of \('auto', 'ddp', 'split', 'none'\)"):
        resolve_shuffle_bn("sync", batch_norm=True, distributed=False)
