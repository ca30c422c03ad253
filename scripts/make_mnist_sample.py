"""Build the MNIST sample shipped in the package (src/dcnn/data/sample/mnist_sample.npz).

A class-balanced subset of the canonical MNIST files, drawn without replacement with a fixed seed:
per class, TRAIN_PER_CLASS training and TEST_PER_CLASS test images. The file records the indices
taken (into the canonical train and t10k files, ascending), the seed, and the MD5s of the source
files, so the sample can be checked against, and rebuilt from, the full dataset.

    python scripts/make_mnist_sample.py [--data-dir DIR]   # DIR holds mnist/ (default: as load_mnist)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from dcnn.data.download import atomic_output
from dcnn.data.mnist import MNIST, load_mnist

SEED = 20240601
TRAIN_PER_CLASS = 1_000
TEST_PER_CLASS = 200
OUTPUT = Path(__file__).resolve().parents[1] / "src" / "dcnn" / "data" / "sample" / "mnist_sample.npz"


def balanced_indices(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """`per_class` indices of each class in `labels`, drawn without replacement, sorted ascending."""
    chosen = [rng.choice(np.flatnonzero(labels == cls), size=per_class, replace=False) for cls in range(10)]
    return np.sort(np.concatenate(chosen))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, default=None, help="folder holding mnist/")
    args = parser.parse_args()

    rng = np.random.default_rng(SEED)
    arrays: dict[str, np.ndarray] = {"seed": np.array(SEED)}
    for split, per_class in (("train", TRAIN_PER_CLASS), ("test", TEST_PER_CLASS)):
        images, labels = (t.numpy() for t in load_mnist(split, args.data_dir, download=False))
        indices = balanced_indices(labels, per_class, rng)
        arrays[f"{split}_images"] = images[indices]
        arrays[f"{split}_labels"] = labels[indices].astype(np.uint8)
        arrays[f"{split}_indices"] = indices.astype(np.int32)
        arrays[f"{split}_source_md5"] = np.array([spec.content_md5 for spec in MNIST.splits[split]])
    with atomic_output(OUTPUT) as handle:
        np.savez_compressed(handle, **arrays)
    sizes = ", ".join(f"{split}: {len(arrays[f'{split}_indices'])}" for split in ("train", "test"))
    print(f"wrote {OUTPUT} ({OUTPUT.stat().st_size / 1e6:.2f} MB; {sizes} images)")


if __name__ == "__main__":
    main()
