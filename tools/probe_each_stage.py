"""A quick look at which stage of an encoder carries a label: one logistic regression per stage.

    .venv/bin/python tools/probe_each_stage.py RUN_DIR MANIFEST

For the run's encoder and the same architecture at random init, each stage's output (``layer1``
to ``layer4``) is average-pooled over space, standardised, and fed to scikit-learn's
``LogisticRegressionCV`` (C in 1e-3..10, 5 folds) trained on the manifest's labelled ``train``
rows and scored on its ``test`` rows (one item per scan; accuracy, no interval). Also all stages
concatenated (what ``mocomri probe --features stages`` reads). This is a diagnostic, not the
project's probe: no subject-grouped CV, no label fractions, no bootstrap; use ``mocomri probe``
or ``mocomri crossfit`` for figures to report.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegressionCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mocomri.data.datasets import build_eval_dataset  # noqa: E402
from mocomri.data.manifest.schema import read_manifest  # noqa: E402
from mocomri.eval.features import RANDOM, STAGES, load_encoder_source  # noqa: E402


def stage_features(encoder: torch.nn.Module, x: torch.Tensor) -> dict[str, np.ndarray]:
    pooled: dict[str, np.ndarray] = {}
    hooks = [getattr(encoder, name).register_forward_hook(
        lambda _m, _i, out, name=name: pooled.__setitem__(name, out.flatten(2).mean(2).numpy())) for name in STAGES]
    with torch.inference_mode():
        encoder.eval()(x)
    for hook in hooks:
        hook.remove()
    pooled["all"] = np.concatenate([pooled[name] for name in STAGES], 1)
    return pooled


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a pretraining run directory")
    parser.add_argument("manifest", help="labelled train and test rows")
    parser.add_argument("--seed", type=int, default=0, help="the random-init encoder's seed")
    args = parser.parse_args(argv)
    source = load_encoder_source(args.run)
    manifest = read_manifest(args.manifest)
    manifest = manifest.replace_rows([r for r in manifest.rows if r.label])
    data = {}
    for split in ("train", "test"):
        dataset = build_eval_dataset(manifest, source.run_config.data, [split])
        x = torch.stack([dataset[i]["image"] for i in range(len(dataset))])
        data[split] = (x, np.array([r.label for r in manifest.select(split).rows]))
    print(f"{len(data['train'][1])} train / {len(data['test'][1])} test scans; test accuracy (%) per stage")
    for name, (encoder, _) in [("pretrained", source.build()),
                               ("random init", load_encoder_source(RANDOM, source.model).build(args.seed))]:
        train, test = stage_features(encoder, data["train"][0]), stage_features(encoder, data["test"][0])
        cells = []
        for stage in (*STAGES, "all"):
            probe = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=[1e-3, 1e-2, 1e-1, 1, 10], cv=5, max_iter=2000))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                probe.fit(train[stage], data["train"][1])
            cells.append(f"{stage} ({train[stage].shape[1]}) {100 * (probe.predict(test[stage]) == data['test'][1]).mean():.1f}")
        print(f"{name}: " + ", ".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
