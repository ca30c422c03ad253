"""Using a saved model file: evaluating it on the test split of its dataset, predicting many images."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from PIL import Image

from dcnn.data.mnist import load_mnist
from dcnn.data.preprocess import Preprocess
from dcnn.errors import DcnnError
from dcnn.evaluate.metrics import evaluate
from dcnn.evaluate.run import evaluate_model_file, image_paths, predict_images
from dcnn.models import create_model, get_model_cfg, modelfile


def test_evaluation_reads_only_the_test_split(tmp_path, mnist_dir):
    only_test = tmp_path / "data" / "mnist"
    only_test.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(mnist_dir / name, only_test / name)
    torch.manual_seed(0)
    model = create_model("lenet5_modern", maps=(4, 8, 16)).eval()
    prep = Preprocess.for_training(get_model_cfg("lenet5_modern"), 1, (28, 28))
    meta = modelfile.model_metadata(model, {"model_options": {"maps": [4, 8, 16]}, "class_names": list("0123456789"),
                                       "preprocessing": prep.to_dict(), "dataset": "mnist"})
    modelfile.save_model_file(model, tmp_path / "model.safetensors", meta)

    result, report_dir, _, split = evaluate_model_file(tmp_path / "model.safetensors", data_dir=str(tmp_path / "data"))
    assert result.num_samples == 10_000 and (report_dir / "metrics.json").is_file() and split == "test"
    images, labels = load_mnist("test", str(mnist_dir.parent))  # the same numbers, computed directly
    direct = evaluate(model, [(prep.normalize(images[:, None].float() / 255), labels)], torch.device("cpu"))
    assert result.accuracy(1) == direct.accuracy(1)


def _flat_folder(root, per_class: int = 10):
    generator = torch.Generator().manual_seed(1)
    for c, name in enumerate(("dark", "light")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = (torch.rand(12, 12, 3, generator=generator) * 100 + 120 * c).to(torch.uint8)
            Image.fromarray(pixels.numpy()).save(root / name / f"{i}.png")
    return root


def test_a_run_on_a_flat_folder_is_evaluated_on_the_images_it_held_out(tmp_path):
    """A folder without test/ trains on part of it: eval reads the held-out part, the images the run
    validated on (and reported), never the training images; a run that held none out is refused."""
    from dcnn.train import make_config, train

    folder = _flat_folder(tmp_path / "folder")
    values = dict(model="resnet20", dataset=str(folder), image_size=8, epochs=1, batch_size=4, progress=False,
                  val_size=None, val_split=0.3, seed=2)
    run, _ = train(make_config({**values, "run_dir": str(tmp_path / "run")}))
    reported = json.loads((run / "eval" / "metrics.json").read_text())
    result, _, _, split = evaluate_model_file(run, out_dir=tmp_path / "again")
    assert split == "val" and result.num_samples == 6 == reported["num_samples"]  # 30% of 2 x 10
    assert result.accuracy(1) == reported["top1_accuracy"]
    assert json.loads((tmp_path / "again" / "metrics.json").read_text())["split"] == "val"

    other = _flat_folder(tmp_path / "other", per_class=3)  # a folder of other images: all of it
    result, _, _, split = evaluate_model_file(run, dataset=str(other), out_dir=tmp_path / "other-eval")
    assert split == "all" and result.num_samples == 6

    meta = modelfile.read_model_metadata(run / "model.safetensors")
    assert meta["held_out"] == [0.3, 2]
    model, _ = modelfile.load_model_file(run / "model.safetensors")
    del meta["held_out"]  # a model file of a run that held nothing out of the folder
    rest = {k: v for k, v in meta.items() if k not in ("model", "num_classes", "in_chans")}
    modelfile.save_model_file(model, tmp_path / "all.safetensors", modelfile.model_metadata(model, rest))
    with pytest.raises(DcnnError, match="trained on every image there"):
        evaluate_model_file(tmp_path / "all.safetensors", out_dir=tmp_path / "refused")
    assert not (tmp_path / "refused").exists()


# --- predict ------------------------------------------------------------------------------------


def test_folders_expand_to_their_image_files_recursively_sorted(tmp_path):
    names = ("z.png", "a/b.JPG", "a/c/d.webp", "a/.e.png", ".hidden/f.png", "notes.txt", "a/g.bmp", "a/h.gif/i.tif")
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    single = tmp_path / "given.txt"  # a file named on the command line is read as given, whatever its name
    assert image_paths([single, tmp_path / "a", tmp_path]) == [
        single, *(tmp_path / n for n in ("a/b.JPG", "a/c/d.webp", "a/g.bmp", "a/h.gif/i.tif")),
        *(tmp_path / n for n in ("a/b.JPG", "a/c/d.webp", "a/g.bmp", "a/h.gif/i.tif", "z.png"))]
    (tmp_path / "no images" / ".h.png").parent.mkdir()
    (tmp_path / "no images" / ".h.png").write_bytes(b"")
    (tmp_path / "no images" / "readme.md").write_bytes(b"")
    with pytest.raises(DcnnError, match="no images holds no image files"):
        image_paths([tmp_path / "no images"])


def test_batches_predict_what_images_one_by_one_predict(tmp_path):
    torch.manual_seed(0)
    model = create_model("lenet5_modern", num_classes=4, maps=(4, 8, 16)).eval()
    prep = Preprocess.for_training(get_model_cfg("lenet5_modern"), 1, (28, 28))
    generator = torch.Generator().manual_seed(0)
    paths = []
    for i in range(6):
        paths.append(tmp_path / f"{i}.png")
        pixels = torch.randint(0, 256, (20 + 3 * i, 30, 3), generator=generator, dtype=torch.uint8)
        Image.fromarray(pixels.numpy()).save(paths[-1])
    paths.insert(3, tmp_path / "missing.png")
    names = ["w", "x", "y", "z"]
    calls = []

    def classify(x: torch.Tensor) -> torch.Tensor:
        calls.append(len(x))
        return model(x)

    batched = predict_images(classify, prep, names, paths, top=4, batch_size=3)
    assert calls == [3, 2, 1]  # batches of 3 paths; the missing file leaves its batch one short
    calls.clear()
    single = predict_images(classify, prep, names, paths, top=4, batch_size=1)
    assert calls == [1] * 6
    assert batched[1] == single[1] and [p for p, _ in single[1]] == [tmp_path / "missing.png"]
    assert [p for p, _ in batched[0]] == [p for p, _ in single[0]] == paths[:3] + paths[4:]
    for (_, many), (_, one) in zip(batched[0], single[0], strict=True):
        assert [n for n, _ in many] == [n for n, _ in one]
        assert max(abs(p - q) for (_, p), (_, q) in zip(many, one, strict=True)) < 1e-6
    with pytest.raises(DcnnError, match="--batch-size 0"):
        predict_images(classify, prep, names, paths, batch_size=0)
