"""A synthetic MRI cohort: brain-like phantoms written as NIfTI in a BIDS layout.

Each subject has its own anatomy: an ellipsoidal head of varying size and shape with scalp and
skull, a brain with a folded cortical ribbon (grey matter) of varying thickness, white matter,
deep grey nuclei, ventricles of varying size, and subarachnoid CSF. Half the subjects carry
grey-matter heterotopia (a malformation of cortical development: neurons that stopped in the
white matter on their way to the cortex): nodules of grey matter 12-20 mm across inside the
white matter, one or two every few millimetres along the superior-inferior axis, so that
nearly every axial slice through the white matter cuts one, and a cortex thinner by the
nodules' volume. The label (``heterotopia`` / ``healthy`` in ``participants.tsv``) is whether
the subject's anatomy has nodules.

Each contrast (T1w, T2w, FLAIR, PD) maps the tissues to its own intensities (FLAIR suppresses
CSF), then gets a partial-volume blur, a smooth multiplicative bias field, Rician noise and a
per-scan scanner gain, and is stored as int16.

The label is a matter of where the grey matter is, not how much there is: a nodule takes the
signal of grey matter in every contrast, each tissue's volume is that of the same subject
without heterotopia (the cortex gives the nodules' volume to the white matter), and the deep
grey nuclei, which everyone has, are grey matter inside the white matter too. So the histogram
of an image (mean, std, percentiles) cannot tell the classes apart. The phantom is generated
in RAS and stored LAS (like FSL's templates), so readers must use the affine.

Deterministic for a seed: subject ``i`` depends only on ``(seed, i)``.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage
from tqdm import tqdm

# Classes of the anatomy's label map; NODULE is heterotopic grey matter.
BACKGROUND, SCALP, SKULL, CSF, GM, WM, NODULE = range(7)
# The tissue whose signal each class takes: a nodule is grey matter.
TISSUE = np.array([BACKGROUND, SCALP, SKULL, CSF, GM, WM, GM])
# Relative signal of each tissue (index as above) in each contrast, from typical 3T values.
CONTRASTS: dict[str, tuple[float, ...]] = {
    #        bg    scalp skull  CSF   GM    WM
    "T1w":   (0.0, 0.90, 0.08, 0.18, 0.55, 0.80),
    "T2w":   (0.0, 0.55, 0.06, 1.00, 0.62, 0.45),
    "FLAIR": (0.0, 0.65, 0.05, 0.10, 0.66, 0.50),
    "PD":    (0.0, 0.80, 0.08, 0.85, 0.75, 0.62),
}
FIELD_OF_VIEW_MM = (192.0, 192.0, 144.0)  # fixed, so the anatomy does not depend on the shape
LABELS = ("healthy", "heterotopia")
NODULE_SPACING_MM = (5.0, 7.0)  # between nodule levels along S-I: below the smallest diameter
NODULE_RADIUS_MM = (6.0, 10.0)
Coords = tuple[np.ndarray, np.ndarray, np.ndarray]


def _waves(rng: np.random.Generator, coords: Coords, n: int, wavelength: tuple[float, float]) -> np.ndarray:
    """A smooth random field: a sum of ``n`` plane waves with random directions and phases.

    Shape: coords, three arrays broadcasting to (X, Y, Z), in mm -> (X, Y, Z), about unit variance.
    """
    field = 0.0
    for _ in range(n):
        direction = rng.normal(size=3)
        direction *= 2 * np.pi / rng.uniform(*wavelength) / np.linalg.norm(direction)
        phase = rng.uniform(0, 2 * np.pi)
        projected = sum(np.float32(d) * c for d, c in zip(direction, coords))  # broadcasts lazily
        field = field + np.cos(projected + np.float32(phase))
    return np.asarray(field, dtype=np.float32) * np.float32(np.sqrt(2.0 / n))


def _ellipsoid(coords: Coords, center, radii) -> np.ndarray:
    """Normalised radius of an axis-aligned ellipsoid: < 1 inside. Shape: (X, Y, Z)."""
    return np.sqrt(sum(((c - np.float32(m)) / np.float32(r)) ** 2 for c, m, r in zip(coords, center, radii)))


def _grid(shape: tuple[int, int, int]) -> tuple[Coords, tuple[float, float, float]]:
    """RAS coordinates (mm) of the voxel centres as three broadcastable axes, and the spacing.

    Shape: (X, 1, 1), (1, Y, 1), (1, 1, Z).
    """
    spacing = tuple(f / n for f, n in zip(FIELD_OF_VIEW_MM, shape))
    axes = [(np.arange(n, dtype=np.float32) - (n - 1) / 2) * np.float32(s) for n, s in zip(shape, spacing)]
    x, y, z = np.meshgrid(*axes, indexing="ij", sparse=True)
    return (x, y, z), spacing


def make_anatomy(rng: np.random.Generator, shape: tuple[int, int, int], heterotopia: bool) -> np.ndarray:
    """One subject's label map (values BACKGROUND..NODULE).

    Args:
        rng: draws everything about the subject's anatomy.
        shape: voxels per axis over the fixed field of view.
        heterotopia: put nodules of grey matter in the white matter (:func:`place_nodules`).

    Shape: returns (X, Y, Z), RAS.
    """
    coords, spacing = _grid(shape)
    # A small random pose: a rotation about the S axis and a shift, as heads are never centred.
    angle = np.deg2rad(rng.uniform(-8, 8))
    cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    shift = rng.uniform(-6, 6, size=3).astype(np.float32)
    x, y, z = coords
    coords = (cos * x - sin * y + shift[0], sin * x + cos * y + shift[1], z + shift[2])  # (X, Y, 1) x2, (1, 1, Z)

    head_radii = (rng.uniform(62, 72), rng.uniform(78, 90), rng.uniform(60, 68))
    head = _ellipsoid(coords, (0, 0, 0), head_radii) * (1 + 0.04 * _waves(rng, coords, 6, (120, 240)))
    brain = head * (1 + 0.03 * _waves(rng, coords, 6, (80, 160))) / rng.uniform(0.82, 0.87)
    gyri = _waves(rng, coords, 16, (14, 30))  # cortical folding: a finer field moves the GM/WM edge
    depth = brain - 0.08 * gyri  # white matter below white_edge, cortex above (up to brain 0.95)
    white_edge = rng.uniform(0.72, 0.80)  # where the white matter begins: the cortex's thickness

    labels = np.zeros(shape, dtype=np.uint8)
    labels[head < 1.0] = SCALP
    labels[head < 0.93] = SKULL
    labels[brain < 1.0] = CSF
    labels[brain < 0.95] = GM
    labels[depth < white_edge] = WM
    # Deep grey nuclei (thalamus, basal ganglia) either side of the midline.
    for side in (-1, 1):
        nucleus = _ellipsoid(coords, (side * rng.uniform(14, 20), rng.uniform(-4, 4), rng.uniform(-2, 6)),
                             (rng.uniform(7, 10), rng.uniform(10, 14), rng.uniform(7, 10)))
        labels[(nucleus < 1.0) & (labels == WM)] = GM
    # Lateral ventricles; their width varies a lot between people (and with age).
    width = rng.uniform(3, 9)
    for side in (-1, 1):
        ventricle = _ellipsoid(coords, (side * (width + 2), rng.uniform(-2, 6), rng.uniform(4, 12)),
                               (width, rng.uniform(16, 24), rng.uniform(6, 10)))
        labels[(ventricle < 1.0) & (brain < 0.9)] = CSF
    if heterotopia:
        place_nodules(rng, labels, spacing)
        thin_cortex(labels, depth, white_edge, int((labels == NODULE).sum()))
    return labels


def thin_cortex(labels: np.ndarray, depth: np.ndarray, white_edge: float, n_voxels: int) -> None:
    """Turns the ``n_voxels`` innermost voxels of the cortex into white matter, in place.

    Heterotopia is neurons that stopped in the white matter on their way to the cortex: the
    cortex is thinner by the nodules' volume, so each tissue's volume is that of the same
    subject without heterotopia.

    Shape: labels, depth (X, Y, Z); the cortex is GM with ``depth >= white_edge`` (which leaves
    the deep grey nuclei out).
    """
    cortex = np.flatnonzero((labels == GM) & (depth >= white_edge))
    inner = cortex[np.argsort(depth.ravel()[cortex], kind="stable")[:n_voxels]]
    labels.ravel()[inner] = WM


def place_nodules(rng: np.random.Generator, labels: np.ndarray, spacing: tuple[float, float, float]) -> None:
    """Turns ellipsoidal nodules of white matter into NODULE, in place.

    Nodule levels are spread evenly along the superior-inferior axis over the white matter's
    extent, ``NODULE_SPACING_MM`` apart (less than the smallest nodule's diameter, so that
    consecutive nodules overlap along that axis), with one or two nodules per level centred on
    white-matter voxels of the axial slice nearest that level; so nearly every axial slice
    through the white matter cuts a nodule. Only white matter changes: a nodule lies in the
    white matter.

    Shape: labels (X, Y, Z), RAS.
    """
    wm = np.argwhere(labels == WM)  # (N, 3) voxel indices
    if len(wm) == 0:
        return
    low, high = wm[:, 2].min() * spacing[2], wm[:, 2].max() * spacing[2]  # mm along S
    n_levels = int(np.ceil((high - low) / rng.uniform(*NODULE_SPACING_MM))) + 1
    for level in np.linspace(low, high, n_levels):
        in_slice = wm[wm[:, 2] == int(round(level / spacing[2]))]
        if len(in_slice) == 0:
            continue
        for center in in_slice[rng.choice(len(in_slice), size=min(int(rng.integers(1, 3)), len(in_slice)),
                                          replace=False)]:
            radii = rng.uniform(*NODULE_RADIUS_MM) * np.array([1.0, rng.uniform(1.0, 1.4), 1.0])
            # Work in a box around the nodule; the full grid would cost a volume per nodule.
            half = np.ceil(radii / np.array(spacing)).astype(int)
            box = tuple(slice(max(c - h, 0), c + h + 1) for c, h in zip(center, half))
            offsets = np.meshgrid(*[(np.arange(b.start, min(b.stop, n)) - c) * d
                                    for b, n, c, d in zip(box, labels.shape, center, spacing)],
                                  indexing="ij", sparse=True)  # mm from the centre, per axis
            inside = sum((o / r) ** 2 for o, r in zip(offsets, radii)) < 1.0
            region = labels[box]  # a view: writes go to labels
            region[inside & (region == WM)] = NODULE


def render(labels: np.ndarray, contrast: str, rng: np.random.Generator) -> np.ndarray:
    """Turns a label map into one contrast's magnitude image with MRI artefacts.

    Shape: labels (X, Y, Z) -> (X, Y, Z) int16.
    """
    signal = np.asarray(CONTRASTS[contrast], dtype=np.float32)
    # Tissue intensities differ slightly between people and scans.
    signal = signal * rng.uniform(0.95, 1.05, size=signal.shape).astype(np.float32)
    image = signal[TISSUE[labels]]  # a nodule takes grey matter's signal
    coords, _ = _grid(labels.shape)
    image *= 1 + 0.03 * _waves(rng, coords, 10, (10, 30))  # tissue texture
    image = ndimage.gaussian_filter(image, sigma=0.6)  # partial volume / point spread
    # Smooth receive-coil bias field: exp of a random quadratic over the field of view.
    u, v, w = (c / np.float32(max(FIELD_OF_VIEW_MM) / 2) for c in coords)
    terms = [u, v, w, u * v, v * w, u * w, u * u, v * v]
    bias = sum(np.float32(rng.normal(0, 0.12)) * t for t in terms)
    image *= np.exp(bias)
    # Rician noise: the magnitude of the complex signal with Gaussian noise on both channels.
    sigma = rng.uniform(0.015, 0.035)
    real = image + rng.normal(0, sigma, size=image.shape).astype(np.float32)
    imag = rng.normal(0, sigma, size=image.shape).astype(np.float32)
    image = np.sqrt(real * real + imag * imag)
    gain = rng.uniform(600, 1400)  # scanner-dependent scaling of stored values
    return np.clip(image * gain, 0, 32767).astype(np.int16)


def _las_affine(shape, spacing) -> np.ndarray:
    """Voxel-to-world for an array stored with its first axis running right to left (LAS)."""
    affine = np.diag([-spacing[0], spacing[1], spacing[2], 1.0])
    affine[:3, 3] = [(shape[0] - 1) / 2 * spacing[0], -(shape[1] - 1) / 2 * spacing[1], -(shape[2] - 1) / 2 * spacing[2]]
    return affine


def make_subject(
    seed: int, index: int, heterotopia: bool, modalities, shape
) -> tuple[dict[str, np.ndarray], np.ndarray, tuple[float, float, float]]:
    """Draws one subject's anatomy and renders it in each modality.

    Returns:
        ``({modality: int16 image}, anatomy, spacing)``: the images and the label map are RAS.

    Shape: each image and the anatomy (X, Y, Z).
    """
    anatomy = make_anatomy(np.random.default_rng([seed, index]), shape, heterotopia)
    _, spacing = _grid(shape)
    images = {m: render(anatomy, m, np.random.default_rng([seed, index, i + 1])) for i, m in enumerate(modalities)}
    return images, anatomy, spacing


def subject_label(anatomy: np.ndarray) -> str:
    """The label of a subject, read from its anatomy: ``heterotopia`` if it has a nodule."""
    return LABELS[int(bool((anatomy == NODULE).any()))]


def make_cohort(
    out: str | Path,
    subjects: int = 200,
    modalities: tuple[str, ...] | list[str] = ("T1w", "T2w", "FLAIR"),
    shape: tuple[int, int, int] = (64, 64, 48),
    seed: int = 0,
    progress: bool = False,
) -> Path:
    """Writes a synthetic cohort as a BIDS tree.

    Layout: ``out/sub-001/anat/sub-001_T1w.nii.gz`` (one file per modality), plus
    ``participants.tsv`` (``participant_id``, ``label`` read from the anatomy by
    :func:`subject_label`, ``nodule_ml``: the volume of heterotopic grey matter) and
    ``dataset_description.json``. Half the subjects (rounded down) are drawn with heterotopia.

    Args:
        out: the folder to write (created; existing subject files are overwritten).
        subjects: number of subjects.
        modalities: contrasts to write, from ``CONTRASTS``.
        shape: voxels per axis; the field of view is fixed (192 x 192 x 144 mm), so the default
            (64, 64, 48) is 3 mm isotropic.
        seed: the cohort seed.
        progress: show a tqdm progress bar.

    Returns:
        The BIDS root (``out``).

    Raises:
        ValueError: unknown modality, fewer than 2 subjects, or a shape below 16 voxels.
    """
    unknown = [m for m in modalities if m not in CONTRASTS]
    if unknown:
        raise ValueError(f"modalities {unknown} unknown (available: {', '.join(CONTRASTS)})")
    if subjects < 2:
        raise ValueError(f"subjects={subjects} must be at least 2")
    if len(shape) != 3 or min(shape) < 16:
        raise ValueError(f"shape={tuple(shape)} must be three sizes of at least 16")
    shape = tuple(int(s) for s in shape)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    drawn = np.random.default_rng(seed).permutation(np.arange(subjects) % 2)  # balanced, shuffled
    width = max(3, len(str(subjects)))
    records = []
    for index in tqdm(range(subjects), desc="synth", unit="subject", disable=not progress):
        subject = f"{index + 1:0{width}d}"
        images, anatomy, spacing = make_subject(seed, index, bool(drawn[index]), modalities, shape)
        folder = out / f"sub-{subject}" / "anat"
        folder.mkdir(parents=True, exist_ok=True)
        affine = _las_affine(shape, spacing)
        for modality, image in images.items():
            nifti = nib.Nifti1Image(np.ascontiguousarray(image[::-1]), affine)  # stored LAS
            nifti.header.set_xyzt_units("mm")
            nifti.set_qform(affine, code=1)
            nifti.set_sform(affine, code=1)
            nib.save(nifti, folder / f"sub-{subject}_{modality}.nii.gz")
        nodule_ml = float((anatomy == NODULE).sum() * np.prod(spacing) / 1000)
        records.append((f"sub-{subject}", subject_label(anatomy), nodule_ml))
    with open(out / "participants.tsv", "w") as f:
        f.write("participant_id\tlabel\tnodule_ml\n")
        f.writelines(f"{pid}\t{label}\t{ml:.2f}\n" for pid, label, ml in records)
    description = {"Name": "mocomri synthetic cohort", "BIDSVersion": "1.9.0", "DatasetType": "raw",
                   "GeneratedBy": [{"Name": "mocomri synth", "Description": f"seed={seed}, shape={list(shape)}"}]}
    (out / "dataset_description.json").write_text(json.dumps(description, indent=2) + "\n")
    return out
