"""Time each part of the batched views: the sampling grid, the resampling, every artefact, a pair.

    .venv/bin/python tools/bench_view_parts.py [--threads 2] [--calls 10] [--src DIR]

2D: 128 working images of 96 px to 64-px views; 3D: 8 volumes of 96³ to 64³, and the pair of
views of ``configs/ixi185_3d.yaml`` (16 volumes of 56³ to 48³, 32 views) and of
``configs/ixi185_3d_patches.yaml`` (64 volumes of 56³ to 24³ patches, 128 views). Every artefact is timed
on the whole batch (in training only the items that draw it pay for it). ``--src`` times the
``mocomri`` of another source tree (e.g. a ``git worktree`` of an older commit) with this script.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

_here = Path(__file__).resolve().parents[1]
_src = sys.argv[sys.argv.index("--src") + 1] if "--src" in sys.argv else str(_here)
sys.path.insert(0, _src)

from mocomri.augment import BatchViews, artefacts  # noqa: E402
from mocomri.augment.geometry import _affine_grid, resample, view_affines  # noqa: E402
from mocomri.augment.settings import AugmentConfig, AugmentParams  # noqa: E402

# This tree's mocomri/timing.py, whichever tree's mocomri is timed: an older --src tree may not
# have it, and its package name is taken by the tree under test. It imports nothing of mocomri.
_timing_spec = importlib.util.spec_from_file_location("bench_view_parts_timing", _here / "mocomri" / "timing.py")
timing = importlib.util.module_from_spec(_timing_spec)
sys.modules[_timing_spec.name] = timing  # dataclasses look their module up while building the class
_timing_spec.loader.exec_module(timing)


def timed(name: str, fn, calls: int) -> None:
    """Prints ms per call of ``fn`` over ``calls`` calls, after one untimed call."""
    print(f"  {name:<28} {timing.time_calls(fn, calls, warmup=1) * 1000:8.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--src", help="the source tree whose mocomri is timed (default: this one)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    f64 = torch.float64
    # (items each part is timed on, images a pair of views is made of, working side, view side)
    cases = [(128, 128, (96, 96), (64, 64)), (8, 8, (96, 96, 96), (64, 64, 64)), (32, 16, (56, 56, 56), (48, 48, 48)),
             (128, 64, (56, 56, 56), (24, 24, 24))]  # the last: configs/ixi185_3d_patches.yaml
    for b, n, working, size in cases:
        d = len(size)
        print(f"{b} x {working} -> {size}, {torch.get_num_threads()} threads")
        x = torch.randn(b, 1, *working)
        affines = view_affines(torch.full((b, d), 0.7, dtype=f64), torch.zeros(b, d, dtype=f64),
                               torch.full((b, 1 if d == 2 else 3), 0.1, dtype=f64), torch.ones(b, dtype=f64),
                               torch.zeros(b, dtype=torch.long)).float()
        order = list(range(d - 1, -1, -1))
        theta = torch.cat([affines[:, order][:, :, order], affines[:, order, d:]], 2)
        grid = _affine_grid(affines, size).flip(-1).contiguous()
        timed("F.affine_grid", lambda: F.affine_grid(theta, [b, 1, *size], align_corners=False), args.calls)
        timed("grid by broadcasting", lambda: _affine_grid(affines, size), args.calls)
        timed("grid_sample", lambda: F.grid_sample(x, grid, padding_mode="border", align_corners=False), args.calls)
        timed("resample, rotated (grid + sample)", lambda: resample(x, affines, size), args.calls)
        # A whole-pixel crop (72 of 96 px, centred), as the views snap them: crop + interpolate in 3D.
        straight = view_affines(torch.full((b, d), 0.75, dtype=f64), torch.zeros(b, d, dtype=f64),
                                torch.zeros(b, 1 if d == 2 else 3, dtype=f64), torch.ones(b, dtype=f64),
                                torch.zeros(b, dtype=torch.long)).float()
        timed("resample, crop without rotation", lambda: resample(x, straight, size), args.calls)
        y = resample(x, affines, size)
        flat = y.flatten(1)
        timed("torch.std_mean", lambda: torch.std_mean(flat, 1, correction=0), args.calls)
        timed("mean + mean square", lambda: (flat.mean(1), (flat * flat).mean(1)), args.calls)
        timed("rescale01", lambda: artefacts.rescale01(y), args.calls)
        timed("normalize", lambda: artefacts.normalize(y), args.calls)
        timed("bias_field", lambda: artefacts.bias_field(y, torch.rand(b, artefacts.bias_field_size(d, 3))), args.calls)
        timed("gibbs_ringing", lambda: artefacts.gibbs_ringing(y, torch.rand(b)), args.calls)
        timed("kspace_spike", lambda: artefacts.kspace_spike(y, torch.zeros(b, 1, d, dtype=torch.long), torch.ones(b, 1)), args.calls)
        timed("kspace_log_magnitude_mean", lambda: artefacts.kspace_log_magnitude_mean(y), args.calls)
        noise = torch.randn(2, *y.shape)
        timed("randn (Rician noise)", lambda: torch.randn(2, *y.shape), args.calls)
        timed("rician_noise", lambda: artefacts.rician_noise(y, torch.rand(b), noise), args.calls)
        timed("adjust_contrast", lambda: artefacts.adjust_contrast(y, torch.rand(b) + 0.5), args.calls)
        timed("histogram_shift", lambda: artefacts.histogram_shift(y, torch.linspace(0, 1, 8).repeat(b, 1)), args.calls)
        x = x[:n]
        family, flip = torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.long)
        patches = size[0] == 24  # the patch recipe's own views: overlapping patches, no rotation
        views = BatchViews(AugmentConfig(base=AugmentParams(crop_scale=[0.4, 0.5], crop_aspect=1.0, affine_prob=0.0),
                                         pair_shift=0.25) if patches else AugmentConfig(), ["t1"], size)
        seeds = iter(range(10**6))
        timed("BatchViews, a pair of views", lambda: views(x.half(), family, flip, next(seeds)), max(3, args.calls // 2))
        crop = BatchViews(AugmentConfig(preset="crop", base=AugmentParams(crop_scale=[0.85, 1.0])) if d == 3 and size[0] == 48
                          else AugmentConfig(preset="crop"), ["t1"], size)
        timed("same, preset crop", lambda: crop(x.half(), family, flip, next(seeds)), max(3, args.calls // 2))


if __name__ == "__main__":
    main()
