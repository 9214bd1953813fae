"""Re-seeding a view transform per item: MONAI's per-step random states against one shared stream.

When views were made per item, the pretraining sampler seeded every item's view transform, so
that a resumed run redrew the views of an uninterrupted one. ``Compose.set_random_state`` builds a new ``RandomState`` for each
random step; the reference views' composer (:class:`tests.reference_transforms.ViewCompose`, the
per-item path the batched views replaced) re-seeds one shared stream in place.
Times one seeding, and one seeding plus a pair of 64 px views of a 256 x 256 image, both ways,
round-robin, on one thread.

Usage::

    python tools/bench_view_seeding.py
"""

import itertools
import statistics
import sys
import warnings
from pathlib import Path

import torch
from monai.transforms import Compose

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mocomri.augment.settings import AugmentConfig  # noqa: E402
from mocomri.timing import time_interleaved  # noqa: E402
from tests.reference_transforms import build_view_transform  # noqa: E402


def main(rounds: int = 5, calls: int = 50) -> None:
    warnings.filterwarnings("ignore", category=UserWarning)  # a MONAI searchsorted layout note
    torch.set_num_threads(1)
    image = torch.randn(1, 256, 256)
    shared = build_view_transform(AugmentConfig(), "T1w", 2, 64)
    per_step = build_view_transform(AugmentConfig(), "T1w", 2, 64)

    def seed_shared(i):
        shared.set_random_state(seed=i)

    def seed_per_step(i):
        Compose.set_random_state(per_step, seed=i)  # MONAI's own: a RandomState per step

    def pair_shared(i):
        seed_shared(i)
        shared(image), shared(image)

    def pair_per_step(i):
        seed_per_step(i)
        per_step(image), per_step(image)

    fns = {("seed", "per-step"): seed_per_step, ("seed", "shared"): seed_shared,
           ("pair", "per-step"): pair_per_step, ("pair", "shared"): pair_shared}
    # Each timing seeds with 0, ..., calls - 1, every round alike.
    seeds = {key: itertools.cycle(range(calls)) for key in fns}
    timed = {key: (lambda fn=fn, s=seeds[key]: fn(next(s))) for key, fn in fns.items()}
    times = {key: [1e3 * t for t in ts] for key, ts in time_interleaved(timed, rounds, calls).items()}  # ms
    print("| what | MONAI per-step states, ms | one shared stream, ms |")
    print("|---|---|---|")
    for what, label in (("seed", "seeding"), ("pair", "seeding + a pair of views")):
        print(f"| {label} | {statistics.median(times[(what, 'per-step')]):.3f} | "
              f"{statistics.median(times[(what, 'shared')]):.3f} |")


if __name__ == "__main__":
    main()
