"""Seconds of training until the MNIST test set first reaches a target top-1 accuracy (99.0%).

Runs, in one process on the same machine:

- baseline: the recipe of the PyTorch examples' MNIST script (two 3×3 convs, max pool, dropout,
  fc 9216→128→10; Adadelta lr 1.0, StepLR gamma 0.7, batch 64, a per-sample Dataset/DataLoader
  that converts each image to a PIL image, then to a tensor, then normalizes it);
- dcnn: our fastest recipe (recipes/mnist_fast.yaml) through dcnn's trainer;
- optionally (--lenet5) the faithful LeNet-5 recipe, reporting its final test error.

The test set is evaluated every `--eval-every` fraction of an epoch for both; evaluation time is
not counted. Prints a Markdown table with seconds, epochs and the speed-up ratio.

    DCNN_DATA_DIR=../shared/data python benchmarks/mnist_time_to_accuracy.py [--lenet5]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from dcnn.data.mnist import find_mnist, load_mnist
from dcnn.train import load_recipe, train
from dcnn.train.trainer import Trainer


class Stopwatch:
    """Training time: wall time minus the time spent evaluating."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.paused = 0.0

    def elapsed(self) -> float:
        return time.perf_counter() - self.start - self.paused

    def excluding(self, work: Callable[[], float]) -> float:
        began = time.perf_counter()
        result = work()
        self.paused += time.perf_counter() - began
        return result


# ----- baseline: the PyTorch examples' MNIST recipe -------------------------------------------
class ExamplesNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        x = self.dropout1(torch.flatten(F.max_pool2d(x, 2), 1))
        x = self.dropout2(F.relu(self.fc1(x)))
        return F.log_softmax(self.fc2(x), dim=1)


class PerSampleMNIST(Dataset):
    """As torchvision's MNIST with ToTensor and Normalize((0.1307,), (0.3081,)): one PIL image per item."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images.numpy(), labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = Image.fromarray(self.images[index], mode="L")
        x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).unsqueeze(0)
        return (x - 0.1307) / 0.3081, int(self.labels[index])


def baseline(data_dir: str | None, target: float, eval_every: float, max_epochs: int) -> dict:
    torch.manual_seed(1)
    watch = Stopwatch()
    train_set = PerSampleMNIST(*load_mnist("train", data_dir))
    test_x, test_y = load_mnist("test", data_dir)
    test_x = (test_x.float().unsqueeze(1) / 255.0 - 0.1307) / 0.3081
    loader = DataLoader(train_set, batch_size=64, shuffle=True)
    model = ExamplesNet()
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    check_every = max(1, round(eval_every * len(loader)))

    def test_accuracy() -> float:
        model.eval()
        with torch.no_grad():
            correct = sum(int((model(test_x[i : i + 1000]).argmax(1) == test_y[i : i + 1000]).sum())
                          for i in range(0, len(test_y), 1000))
        model.train()
        return correct / len(test_y)

    accuracy = 0.0
    for epoch in range(max_epochs):
        model.train()
        for step, (x, y) in enumerate(loader, 1):
            optimizer.zero_grad()
            F.nll_loss(model(x), y).backward()
            optimizer.step()
            if step % check_every == 0 or step == len(loader):
                accuracy = watch.excluding(test_accuracy)
                if accuracy >= target:
                    return {"seconds": watch.elapsed(), "epochs": epoch + step / len(loader), "accuracy": accuracy}
        scheduler.step()
    return {"seconds": float("nan"), "epochs": float(max_epochs), "accuracy": accuracy}


# ----- dcnn -------------------------------------------------------------------------------------
def dcnn_recipe(
    recipe: str, data_dir: str | None, target: float | None, eval_every: float, seed: int | None = None
) -> dict:
    watch = Stopwatch()
    reached: dict = {}

    def check(trainer: Trainer) -> bool:
        if target is None:
            return False
        if trainer.step_in_epoch % max(1, round(eval_every * trainer.steps_per_epoch)) and \
                trainer.step_in_epoch != trainer.steps_per_epoch:
            return False
        accuracy = watch.excluding(lambda: trainer_test_accuracy(trainer))
        if accuracy >= target:
            reached.update(seconds=watch.elapsed(), accuracy=accuracy,
                           epochs=trainer.epoch + trainer.step_in_epoch / trainer.steps_per_epoch)
            return True
        return False

    with tempfile.TemporaryDirectory() as tmp:
        overrides = {"data_dir": data_dir, "progress": False, "run_dir": str(Path(tmp) / "run")}
        cfg = load_recipe(recipe, overrides | ({} if seed is None else {"seed": seed}))
        _, result = train(cfg, after_step=check)
        total = watch.elapsed()
    if target is None:
        return {"seconds": total, "epochs": float(cfg.epochs), "accuracy": result.accuracy(1)}
    return reached or {"seconds": float("nan"), "epochs": float(cfg.epochs), "accuracy": result.accuracy(1)}


def trainer_test_accuracy(trainer: Trainer) -> float:
    return trainer.evaluate_on(trainer.data.test, topk=(1,), num_hardest=0).accuracy(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--target", type=float, default=0.99)
    parser.add_argument("--eval-every", type=float, default=0.1, help="fraction of an epoch between checks")
    parser.add_argument("--baseline-epochs", type=int, default=14)
    parser.add_argument("--recipe", default="mnist_fast")
    parser.add_argument("--seed", type=int, default=None, help="override the dcnn recipe's seed")
    parser.add_argument("--lenet5", action="store_true", help="also train the faithful LeNet-5 recipe")
    parser.add_argument("--skip-baseline", action="store_true")
    args = parser.parse_args()
    if find_mnist(args.data_dir) is None:
        raise SystemExit("full MNIST not found: set DCNN_DATA_DIR or --data-dir to the folder holding mnist/")

    # Torch imports some modules lazily, on first use (constructing an optimizer imports torch._dynamo,
    # about 2 s): pay that once here so that neither recipe's time includes it.
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    rows = []
    ours = dcnn_recipe(args.recipe, args.data_dir, args.target, args.eval_every, args.seed)
    rows.append((f"dcnn {args.recipe}", ours))
    if not args.skip_baseline:
        base = baseline(args.data_dir, args.target, args.eval_every, args.baseline_epochs)
        rows.append(("PyTorch examples MNIST (baseline)", base))
    if args.lenet5:
        # No target: the whole recipe runs; its seconds are the run's wall time (with per-epoch validation).
        rows.append(("dcnn lenet5 (faithful), whole recipe", dcnn_recipe("lenet5", args.data_dir, None, 1.0)))

    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}")
    print(f"| recipe | seconds to {100 * args.target:.1f}% (whole recipe: to the end) | epochs | test accuracy |")
    print("|---|---:|---:|---:|")
    for name, r in rows:
        print(f"| {name} | {r['seconds']:.1f} | {r['epochs']:.2f} | {100 * r['accuracy']:.2f}% |")
    if not args.skip_baseline:
        print(f"\nspeed-up (baseline seconds / dcnn seconds): {base['seconds'] / ours['seconds']:.1f}x")


if __name__ == "__main__":
    main()
