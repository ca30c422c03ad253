"""Throughput and latency of `dcnn serve` against 1, 4 and 16 concurrent clients.

Starts the real server (`dcnn serve MODEL --port 0`, its own process) twice on a model file: with
its dynamic batching (the defaults: a 5 ms window, batches of up to 32) and, as the baseline in
the same run, with batching off (`--max-batch 1`: one model call per request). Both run at once
(idle while the other is measured) and are measured in turn at each level. Clients are
threads in this process, each with its own keep-alive connection, posting the same photo
(../shared/data/images/chelsea.png, a 451x300 PNG: decoded, resized and centre-cropped by the
server for every request) to /predict in a closed loop. Per level: requests per second, median
and 99th-percentile latency, and the mean batch size from /health.

The model is ResNet-18 at 224x224 (ImageNet size, 11.7M parameters, 1.8 GMACs per image) with
10 classes and untrained weights: the speed does not depend on the weights. `--model resnet20`
measures a small CIFAR network (32x32) instead. The clients share the machine's cores with the
server: on a 2-core machine they take part of its CPU.

    DCNN_DATA_DIR=../shared/data python benchmarks/serving.py [--model resnet18] [--requests 96]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import httpx
import torch
from data_pipeline import cpu_model  # the machine line of the other benchmarks

from dcnn.data.preprocess import Preprocess
from dcnn.models import create_model, modelfile

CONCURRENCY = (1, 4, 16)


def write_model_file(name: str, path: Path) -> Path:
    """A dcnn model file of `name` (10 classes, untrained) with the model's own preprocessing."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=10).eval()
    meta = modelfile.model_metadata(model, {"class_names": [f"class {i}" for i in range(10)],
                                       "preprocessing": Preprocess.for_model(model).to_dict(), "dataset": "none"})
    modelfile.save_model_file(model, path, meta)
    return path


def start_server(model_file: Path, log: Path, options: list[str]) -> tuple[subprocess.Popen, str]:
    with log.open("w") as handle:
        process = subprocess.Popen([sys.executable, "-m", "dcnn.cli", "serve", str(model_file), "--port", "0",
                                    "--device", "cpu", *options], stdout=handle, stderr=subprocess.STDOUT)
    while not (found := re.search(r"on (http://\S+/) ", log.read_text())):
        if process.poll() is not None:
            sys.exit(f"dcnn serve did not start:\n{log.read_text()}")
        time.sleep(0.1)
    httpx.get(found.group(1) + "health", timeout=300).raise_for_status()
    return process, found.group(1)


def measure(url: str, photo: bytes, clients: int, requests: int) -> dict[str, float]:
    """`requests` posts spread over `clients` threads; throughput, latency percentiles, mean batch."""

    def client(share: int) -> list[float]:
        latencies = []
        with httpx.Client(base_url=url, timeout=300) as session:
            for _ in range(share):
                start = time.perf_counter()
                session.post("/predict", files={"file": ("chelsea.png", photo, "image/png")}).raise_for_status()
                latencies.append(time.perf_counter() - start)
        return latencies

    shares = [requests // clients + (i < requests % clients) for i in range(clients)]
    before = httpx.get(url + "health").json()
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = sorted(t for chunk in pool.map(client, shares) for t in chunk)
    elapsed = time.perf_counter() - start
    after = httpx.get(url + "health").json()
    return {"throughput": requests / elapsed, "p50": 1000 * statistics.median(latencies),
            "p99": 1000 * latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))],
            "batch": (after["images"] - before["images"]) / (after["batches"] - before["batches"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--model", default="resnet18", help="registered model to serve (at its default input size)")
    parser.add_argument("--requests", type=int, default=96, help="requests per concurrency level")
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("DCNN_DATA_DIR", "../shared/data")))
    args = parser.parse_args()

    photo = (args.data_dir / "images" / "chelsea.png").read_bytes()
    servers = {"batched (5 ms window, up to 32)": [], "one request per model call": ["--max-batch", "1"]}
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        model_file = write_model_file(args.model, Path(scratch) / f"{args.model}.safetensors")
        started = {label: start_server(model_file, Path(scratch) / f"server{i}.log", options)
                   for i, (label, options) in enumerate(servers.items())}
        try:
            for _, url in started.values():
                measure(url, photo, 4, 8)  # warm-up: first calls, lazy imports
            for clients in CONCURRENCY:  # both servers at each level in turn: the machine's load drifts
                rows += [(label, clients, measure(url, photo, clients, args.requests))
                         for label, (_, url) in started.items()]
        finally:
            for process, _ in started.values():
                process.terminate()
                process.wait()
        rows.sort(key=lambda row: list(servers).index(row[0]))

    single = next(r for label, clients, r in rows if clients == 1 and label.startswith("batched"))
    size = "x".join(map(str, Preprocess.for_model(args.model).input_size[1:]))
    print(f"\n{args.model} at {size}, {args.requests} requests per level\n")
    print("| server | clients | requests/s | p50 ms | p99 ms | mean batch | throughput vs 1 client |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, clients, r in rows:
        print(f"| {label} | {clients} | {r['throughput']:.1f} | {r['p50']:.0f} | {r['p99']:.0f} | {r['batch']:.1f} "
              f"| {r['throughput'] / single['throughput']:.2f}x |")
    print(f"\nmachine: {cpu_model()}, {os.cpu_count()} CPUs, torch {torch.__version__}, OMP_NUM_THREADS "
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}, load "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}, {date.today()}")


if __name__ == "__main__":
    main()
