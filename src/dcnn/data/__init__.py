"""Datasets: MNIST and Fashion-MNIST (IDX files, verified download), and the embedded MNIST sample."""

from dcnn.data.idx import parse_idx, read_idx
from dcnn.data.mnist import (
    FASHION_MNIST_CLASSES,
    MNIST_CLASSES,
    find_fashion_mnist,
    find_mnist,
    load_fashion_mnist,
    load_mnist,
    load_mnist_sample,
)

__all__ = [
    "FASHION_MNIST_CLASSES",
    "MNIST_CLASSES",
    "find_fashion_mnist",
    "find_mnist",
    "load_fashion_mnist",
    "load_mnist",
    "load_mnist_sample",
    "parse_idx",
    "read_idx",
]
