"""A plain MoCo v2 on brain-tumour, outside mocomri's data and training pipeline: is a weak gain
the pipeline's fault or the recipe's?

Run from the repository root (it needs the shared data)::

    .venv/bin/python tools/plain_moco.py --width 64 --steps 400 --out runs/plain_moco_w64

Everything a plain MoCo v2 script does and nothing of mocomri's pipeline: the JPEGs read with
PIL, grayscale, resized to 96 px (aspect not kept), [0, 1]; per-item torchvision views
(``RandomResizedCrop(64, scale=(0.2, 1))``, horizontal flip, brightness/contrast jitter with
probability 0.8), then the set's mean and std; the MoCo of ``moco/builder.py``
(:class:`tests.reference_moco.ReferenceMoCo`, split BatchNorm and a shuffled key batch) on the
registry's ResNet-18; SGD with momentum 0.9 at a constant learning rate; bf16 autocast on the CPU.
It trains on the manifest's ``train`` rows (the split cleaned of near-duplicates) and probes the
query backbone and a random-init one of the same architecture (seed 0) on the ``test`` rows:
logistic regression on standardised pooled features at C = 0.01, 0.1, 1, at 100 % and at a
subject-grouped 10 % of the training labels, and a cosine 20-NN. It writes ``result.json``
(the arguments, the loss curve and the probe) and the backbone's ``encoder.pt``, which
``mocomri probe --encoder OUT --config configs/brain_tumor_cpu.yaml model.width=W`` also reads.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mocomri.data.manifest import read_manifest  # noqa: E402
from mocomri.eval.fractions import sample_label_fraction  # noqa: E402
from mocomri.models.encoders import create_encoder  # noqa: E402
from tests.reference_moco import ReferenceMoCo, colab_split_bn  # noqa: E402


def load_images(manifest, rows, side: int) -> torch.Tensor:
    """Grayscale, resized to ``side`` x ``side``, in [0, 1]. Shape: (N, 1, side, side)."""
    from PIL import Image

    return torch.from_numpy(np.stack([
        np.asarray(Image.open(manifest.root / r.path).convert("L").resize((side, side), Image.BILINEAR), np.float32) / 255
        for r in rows
    ]))[:, None]


def probe(features: np.ndarray, labels: np.ndarray, groups: np.ndarray, train: np.ndarray, test: np.ndarray) -> dict:
    """Test accuracy (%) of logistic regression (three C, 100 % and 10 % of the labels) and a cosine 20-NN."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.preprocessing import StandardScaler

    train_idx = np.flatnonzero(train)
    subsets = {"100%": train_idx, "10%": train_idx[sample_label_fraction(labels[train], groups[train], 0.1, seed=0)]}
    out = {}
    for name, idx in subsets.items():
        scaler = StandardScaler().fit(features[idx])
        a, b = scaler.transform(features[idx]), scaler.transform(features[test])
        for c in (0.01, 0.1, 1.0):
            model = LogisticRegression(C=c, max_iter=3000).fit(a, labels[idx])
            out[f"logistic C={c} {name}"] = round(100 * float((model.predict(b) == labels[test]).mean()), 1)
        if name == "100%":
            knn = KNeighborsClassifier(20, metric="cosine").fit(a, labels[idx])
            out["kNN k=20 100%"] = round(100 * float((knn.predict(b) == labels[test]).mean()), 1)
    return out


def main() -> None:
    import torchvision.transforms.v2 as T

    parser = argparse.ArgumentParser(prog="tools/plain_moco.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", default="data_manifests/brain_tumor_mri.csv")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.06, help="constant, not scaled by the batch size")
    parser.add_argument("--temperature", type=float, default=0.2)
    parser.add_argument("--queue-size", type=int, default=4096)
    parser.add_argument("--momentum", type=float, default=0.99)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--crop-scale", type=float, default=0.2, help="smallest crop area, fraction of the image")
    parser.add_argument("--jitter", type=float, default=0.4, help="brightness and contrast jitter strength")
    parser.add_argument("--bn-splits", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.manual_seed(args.seed)

    manifest = read_manifest(args.manifest)
    train_rows = [r for r in manifest.rows if r.split == "train"]
    images = load_images(manifest, train_rows, 96)  # (N, 1, 96, 96)
    mean, std = float(images.mean()), float(images.std())
    crop = T.RandomResizedCrop(64, scale=(args.crop_scale, 1.0), antialias=True)

    def view(x: torch.Tensor) -> torch.Tensor:
        x = crop(x)
        if torch.rand(()) < 0.5:
            x = x.flip(-1)
        if torch.rand(()) < 0.8:
            contrast = 1 + (2 * torch.rand(()) - 1) * args.jitter
            brightness = (2 * torch.rand(()) - 1) * args.jitter / 2
            x = (x * contrast + brightness * x.mean()).clamp(0, 1)
        return (x - mean) / std

    encoder, feature_dim = create_encoder("resnet18", 1, args.width)
    model = ReferenceMoCo(colab_split_bn(encoder, args.bn_splits), feature_dim, proj_hidden_dim=feature_dim,
                          queue_size=args.queue_size, temperature=args.temperature)
    optimizer = torch.optim.SGD(model.encoder_q.parameters(), lr=args.lr, momentum=0.9, weight_decay=args.weight_decay)
    log, started, order, pos = [], time.time(), torch.randperm(len(images)), 0
    for step in range(args.steps):
        if pos + args.batch_size > len(images):
            order, pos = torch.randperm(len(images)), 0
        batch = order[pos:pos + args.batch_size]
        pos += args.batch_size
        q = torch.stack([view(images[i]) for i in batch])
        k = torch.stack([view(images[i]) for i in batch])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits, labels = model(q, k, args.momentum)
        loss = F.cross_entropy(logits.float(), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 20 == 0 or step == args.steps - 1:
            record = {"step": step, "loss": round(loss.item(), 4),
                      "contrastive_acc": round((logits.argmax(1) == 0).float().mean().item(), 3),
                      "seconds": round(time.time() - started, 1)}
            log.append(record)
            print(record, flush=True)
    minutes = (time.time() - started) / 60

    rows = [r for r in manifest.rows if r.split in ("train", "test")]
    x = (load_images(manifest, rows, 64) - mean) / std
    labels = np.array([r.label for r in rows])
    groups = np.array([r.subject for r in rows])
    train, test = np.array([r.split == "train" for r in rows]), np.array([r.split == "test" for r in rows])
    torch.manual_seed(0)
    random_init, _ = create_encoder("resnet18", 1, args.width)
    backbone = model.encoder_q[0]
    results = {}
    for name, net in (("moco", backbone), ("random_init", random_init)):
        net.eval()
        with torch.no_grad():
            features = torch.cat([net(x[i:i + 256]).float() for i in range(0, len(x), 256)]).numpy()
        results[name] = probe(features, labels, groups, train, test)
        print(name, results[name], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "result.json").write_text(json.dumps(
        {"args": {k: str(v) for k, v in vars(args).items()}, "pretrain_minutes": round(minutes, 1),
         "log": log, "probe": results}, indent=1) + "\n")
    # SplitBatchNorm keeps BatchNorm's keys, so the backbone loads into the registry's ResNet.
    torch.save(backbone.state_dict(), args.out / "encoder.pt")


if __name__ == "__main__":
    main()
