"""A tiny trained CIFAR-10 model and a real `dcnn serve` process on loopback, shared by the serve tests.

The run is a small CIFAR ResNet (resnet20's family, one block of 8/16/32 maps per stage: 19k
parameters, cheap enough for a load test) trained for three steps on 60 CIFAR-10 JPEGs (six a
class): a real three-channel model file with ten class names, made in a few seconds. Under xdist the workers
share one run (the first trains it, under a file lock); each worker starts its own server.
"""

from __future__ import annotations

import io
import re
import signal
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from PIL import Image

from dcnn.train import make_config, train
from tests.conftest import data_dir

TRAIN_PER_CLASS, TEST_PER_CLASS = 6, 1
# The server's limits and batching in these tests (small, so that the tests can pass them).
MAX_UPLOAD_MB = 1
MAX_PIXELS = 4_000_000
MAX_BATCH = 8
BATCH_WINDOW_MS = 10.0


def cifar_subset(root: Path) -> Path:
    """train/ and test/ class folders linking to the first CIFAR-10 JPEGs of each class."""
    source = data_dir() / "cifar10-jpeg"
    if not (source / "train").is_dir():
        pytest.fail(f"CIFAR-10 JPEGs not found in {source}; set DCNN_DATA_DIR to the folder holding cifar10-jpeg/")
    for split, count in (("train", TRAIN_PER_CLASS), ("test", TEST_PER_CLASS)):
        for folder in sorted(p for p in (source / split).iterdir() if p.is_dir()):
            target = root / split / folder.name
            target.mkdir(parents=True)
            for path in sorted(folder.iterdir())[:count]:
                (target / path.name).symlink_to(path.resolve())
    return root


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.xdist_group("serve"))


@pytest.fixture(scope="session")
def served_run(tmp_path_factory) -> Path:
    """A finished run directory (the small resnet20 on the CIFAR-10 subset)."""
    base = tmp_path_factory.mktemp("serve")
    run = base / "run"
    data = cifar_subset(base / "cifar")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DCNN_CACHE_DIR", str(base / "cache"))
        train(make_config({"model": "resnet20", "dataset": str(data), "epochs": 1, "batch_size": 20,
                           "model_options": {"depths": [1, 1, 1], "widths": [8, 16, 32], "stem_width": 8},
                           "optimizer": "sgd", "lr": 0.05, "progress": False, "seed": 0, "device": "cpu",
                           "run_dir": str(run)}))
    return run


@dataclass
class Server:
    url: str
    run: Path
    process: subprocess.Popen
    log: Path

    def client(self, **options) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, **options)

    def health(self) -> dict:
        response = httpx.get(self.url + "health", timeout=60)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture(scope="session")
def server(served_run, tmp_path_factory) -> Iterator[Server]:
    """`dcnn serve RUN --port 0` with the test limits, in its own process; stopped by Ctrl-C (SIGINT:
    the requests in progress finish, then the command exits with 130, as an interrupted command does)."""
    log = tmp_path_factory.mktemp("serve") / "server.log"
    with log.open("w") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "dcnn.cli", "serve", str(served_run), "--host", "127.0.0.1", "--port", "0",
             "--max-upload-mb", str(MAX_UPLOAD_MB), "--max-pixels", str(MAX_PIXELS), "--max-batch", str(MAX_BATCH),
             "--batch-window-ms", str(BATCH_WINDOW_MS), "--device", "cpu"],
            stdout=handle, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while not (found := re.search(r"serving resnet20 on (http://127\.0\.0\.1:\d+/)", log.read_text())):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"`dcnn serve` did not start:\n{log.read_text()}")
        time.sleep(0.05)
    served = Server(found.group(1), served_run, process, log)
    served.health()  # the socket listens already: this waits in its backlog until uvicorn accepts
    yield served
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 130, log.read_text()
    assert "Application shutdown complete" in log.read_text()


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares width×height pixels; its data holds one pixel (never decoded)."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    data = buffer.getvalue()
    header = b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return data[:8] + struct.pack(">I", 13) + header + struct.pack(">I", zlib.crc32(header)) + data[33:]


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()
