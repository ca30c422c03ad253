"""Class-per-folder and CSV image sets: scanning, splitting, decoding, the disk cache, lazy loading."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

import dcnn.data.folder as folder
from dcnn.data.folder import (
    ImageFiles,
    LazyImageDataset,
    Skipped,
    collate_skipping,
    decode_image_file,
    decode_images,
    load_or_decode,
    read_csv_list,
    scan_image_folder,
    stratified_sample,
    stratified_split,
)
from dcnn.errors import DcnnError
from tests.conftest import data_dir


def save(path: Path, image: Image.Image | None = None, **options: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (image or Image.new("RGB", (6, 4), (10, 20, 30))).save(path, **options)
    return path


def files_of(paths: list[Path], labels: list[int] | None = None) -> ImageFiles:
    return ImageFiles(paths, labels or [0] * len(paths), ["only"])


def test_image_files_take_paths_or_text_and_one_label_in_range_per_path() -> None:
    given = Path("a/1.png")
    files = ImageFiles([given, "b/2.png"], [np.int64(1), True], ["a", "b"])
    assert files.paths == [Path("a/1.png"), Path("b/2.png")]
    assert files.paths[0] is given  # kept, not parsed again: Path(path) was a third of scanning CIFAR-10
    assert files.labels == [1, 1] and {type(label) for label in files.labels} == {int}
    with pytest.raises(DcnnError, match="2 image paths but 1 labels; give one label per image"):
        ImageFiles([given, given], [0], ["a"])
    with pytest.raises(DcnnError, match="label 2 is out of range for 2 class names"):
        ImageFiles([given], [2], ["a", "b"])


# --- Scanning ---------------------------------------------------------------------------------


def test_flat_folder_gives_sorted_classes_recursive_images_and_reports_the_rest(tmp_path: Path) -> None:
    save(tmp_path / "zebra" / "a.JPG")
    save(tmp_path / "zebra" / "nested" / "deeper" / "b.png")
    save(tmp_path / "ant" / "c.jpeg")
    save(tmp_path / "ant" / ".hidden.png")
    save(tmp_path / ".cache" / "d.png")
    (tmp_path / "ant" / "notes.txt").write_text("hello")
    (tmp_path / "README.md").write_text("hi")
    splits, skipped = scan_image_folder(tmp_path)
    assert list(splits) == ["all"]
    files = splits["all"]
    assert files.class_names == ["ant", "zebra"]
    assert files.paths == [
        tmp_path / "ant" / "c.jpeg",
        tmp_path / "zebra" / "a.JPG",
        tmp_path / "zebra" / "nested" / "deeper" / "b.png",
    ]
    assert files.labels == [0, 1, 1]
    assert files.class_counts() == {"ant": 1, "zebra": 2}
    assert skipped == [
        Skipped(tmp_path / "README.md", "file outside the class folders"),
        Skipped(tmp_path / "ant" / "notes.txt", "not an image file name"),
    ]


def test_train_and_val_splits_share_class_indices(tmp_path: Path) -> None:
    for split, count in (("train", 3), ("val", 1)):
        for name in ("dog", "cat"):
            for i in range(count):
                save(tmp_path / split / name / f"{i}.png")
    save(tmp_path / "extra" / "x" / "y.png")
    splits, skipped = scan_image_folder(tmp_path)
    assert list(splits) == ["train", "val"]
    assert splits["train"].class_names == splits["val"].class_names == ["cat", "dog"]
    assert splits["train"].class_counts() == {"cat": 3, "dog": 3}
    assert splits["val"].labels == [0, 1]
    assert splits["val"].paths[1] == tmp_path / "val" / "dog" / "0.png"
    assert [s.reason for s in skipped] == ["folder next to the splits (expected train, val, test)"]


def test_splits_with_different_class_folders_raise_naming_the_difference(tmp_path: Path) -> None:
    save(tmp_path / "train" / "cat" / "0.png")
    save(tmp_path / "train" / "dog" / "0.png")
    save(tmp_path / "test" / "cat" / "0.png")
    save(tmp_path / "test" / "bird" / "0.png")
    with pytest.raises(DcnnError, match=r"only in test/: \['bird'\], only in train/: \['dog'\]"):
        scan_image_folder(tmp_path)


def test_empty_class_folder_is_reported_kept_when_another_split_has_it_else_dropped(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        (tmp_path / "train" / name).mkdir(parents=True)
        (tmp_path / "val" / name).mkdir(parents=True)
    save(tmp_path / "train" / "a" / "0.png")
    save(tmp_path / "val" / "a" / "0.png")
    save(tmp_path / "train" / "c" / "0.png")  # c has no val images
    (tmp_path / "val" / "c" / "thumbs.db").write_bytes(b"x")  # no image either
    splits, skipped = scan_image_folder(tmp_path)
    assert splits["train"].class_names == splits["val"].class_names == ["a", "c"]
    assert splits["train"].labels == [0, 1] and splits["val"].labels == [0]
    reasons = {(s.path.relative_to(tmp_path).as_posix(), s.reason) for s in skipped}
    assert reasons == {
        ("train/b", "empty class folder (class dropped: no split has images of it)"),
        ("val/b", "empty class folder (class dropped: no split has images of it)"),
        ("val/c", "empty class folder"),
        ("val/c/thumbs.db", "not an image file name"),
    }


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("missing", "not found"),
        ("file", "is not a folder"),
        ("no classes", "no class folders"),
        ("no images", "no images in"),
        ("lone split", "has a train/ folder but not train/ with val/ or test/"),
    ],
)
def test_scan_errors(tmp_path: Path, layout: str, message: str) -> None:
    root = tmp_path / "set"
    if layout == "file":
        root.write_text("x")
    elif layout == "no classes":
        root.mkdir()
        (root / "a.png").write_bytes(b"")
    elif layout == "no images":
        (root / "cat").mkdir(parents=True)
        (root / "cat" / "notes.txt").write_text("x")
    elif layout == "lone split":
        save(root / "train" / "cat" / "0.png")
    with pytest.raises(DcnnError, match=message):
        scan_image_folder(root)


# --- CSV lists ----------------------------------------------------------------------------------


def test_csv_list_with_header_relative_paths_and_sorted_class_names(tmp_path: Path) -> None:
    (tmp_path / "lists").mkdir()
    csv = tmp_path / "lists" / "train.csv"
    csv.write_text("\npath,label\nimgs/a.png,zebra\n\n/abs/b.png, ant\n'c.png',zebra\n")
    files = read_csv_list(csv)
    assert files.class_names == ["ant", "zebra"]
    assert files.paths == [tmp_path / "lists" / "imgs" / "a.png", Path("/abs/b.png"), tmp_path / "lists" / "'c.png'"]
    assert files.labels == [1, 0, 1]


def test_csv_integer_labels_sort_by_value(tmp_path: Path) -> None:
    csv = tmp_path / "list.csv"
    csv.write_text("a.png,10\nb.png,2\nc.png,1\n")
    files = read_csv_list(csv)
    assert files.class_names == ["1", "2", "10"]
    assert files.labels == [2, 1, 0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("path,label\na.png,cat\nb.png\n", "line 3: expected 'path,label'"),
        ("a.png,cat,extra\n", "line 1: expected 'path,label'"),
        ("a.png,cat\n,dog\n", "line 2: expected"),
        ("path,label\n", "no 'path,label' rows"),
    ],
)
def test_malformed_csv_names_the_line(tmp_path: Path, text: str, message: str) -> None:
    csv = tmp_path / "list.csv"
    csv.write_text(text)
    with pytest.raises(DcnnError, match=message):
        read_csv_list(csv)


# --- Stratified split -------------------------------------------------------------------------


def test_stratified_split_is_proportional_disjoint_and_seeded() -> None:
    counts = [100, 10, 2, 1]
    labels = [c for c, n in enumerate(counts) for _ in range(n)]
    files = ImageFiles([Path(f"{i}.png") for i in range(len(labels))], labels, ["a", "b", "c", "d"])
    train, val = stratified_split(files, 0.2, seed=0)
    assert val.class_counts() == {"a": 20, "b": 2, "c": 1, "d": 0}
    assert train.class_counts() == {"a": 80, "b": 8, "c": 1, "d": 1}
    assert sorted(train.paths + val.paths) == sorted(files.paths)
    assert set(train.paths).isdisjoint(val.paths)
    for part in (train, val):  # labels travel with their paths
        assert all(files.labels[int(p.stem)] == label for p, label in zip(part.paths, part.labels, strict=True))
    assert stratified_split(files, 0.2, seed=0)[1].paths == val.paths
    assert stratified_split(files, 0.2, seed=1)[1].paths != val.paths
    assert len(stratified_split(files, 0.0, seed=0)[1]) == 0
    with pytest.raises(DcnnError, match="val_fraction"):
        stratified_split(files, 1.0, seed=0)


def test_tiny_fraction_still_puts_one_of_each_class_in_val() -> None:
    files = ImageFiles([Path(f"{i}.png") for i in range(6)], [0, 0, 0, 1, 1, 1], ["a", "b"])
    train, val = stratified_split(files, 0.01, seed=3)
    assert val.class_counts() == {"a": 1, "b": 1} and train.class_counts() == {"a": 2, "b": 2}


@pytest.mark.parametrize("counts, count, expected", [
    ([10, 20, 30], 12, [2, 4, 6]),  # exact shares
    ([10, 20, 30], 3, [1, 1, 1]),  # one of each: 0.5, 1, 1.5 rounded up where the share is below one
    ([97, 2, 1], 10, [8, 1, 1]),  # 9.7, 0.2, 0.1: at least one each, taken back from the largest class
    ([97, 2, 1], 2, [2, 0, 0]),  # fewer than the classes: the largest shares
    ([5, 5, 5, 5], 6, [2, 2, 1, 1]),  # 1.5 each: two classes round up (which two is seeded)
    ([3, 4], 7, [3, 4]),  # everything
    ([3, 4], 9, [3, 4]),
])
def test_stratified_sample_gives_every_class_its_share(counts: list[int], count: int, expected: list[int]) -> None:
    labels = [c for c, n in enumerate(counts) for _ in range(n)]
    picked = stratified_sample(labels, count, seed=0)
    assert picked == sorted(set(picked)) and all(0 <= i < len(labels) for i in picked)
    got = np.bincount([labels[i] for i in picked], minlength=len(counts)).tolist()
    assert (sorted(got, reverse=True) if len(set(counts)) == 1 else got) == expected


def test_stratified_sample_is_drawn_at_random_with_the_seed() -> None:
    labels = [0] * 50 + [1] * 50 + [2] * 50  # stored class by class, as image folders are
    picked = stratified_sample(labels, 30, seed=0)
    assert picked == stratified_sample(labels, 30, seed=0)
    assert picked != stratified_sample(labels, 30, seed=1)
    assert picked != [*range(10), *range(50, 60), *range(100, 110)]  # not the first of each class
    ties = {tuple(i // 2 for i in stratified_sample([0, 0, 1, 1, 2, 2, 3, 3], 2, seed)) for seed in range(20)}
    assert len(ties) > 1  # equal shares: which classes get one is drawn as well


# --- Decoding -----------------------------------------------------------------------------------


def stripes(width: int, height: int) -> Image.Image:
    """Red left quarter, green middle half, blue right quarter."""
    array = np.zeros((height, width, 3), np.uint8)
    array[:, : width // 4, 0] = 255
    array[:, width // 4 : 3 * width // 4, 1] = 255
    array[:, 3 * width // 4 :, 2] = 255
    return Image.fromarray(array)


def test_crop_takes_the_centre_and_stretch_keeps_everything(tmp_path: Path) -> None:
    path = save(tmp_path / "wide.png", stripes(40, 20))
    cropped = decode_image_file(path, (20, 20), 3, fit="crop")
    assert cropped.dtype == torch.uint8 and cropped.shape == (3, 20, 20)
    assert (cropped[1] == 255).all() and (cropped[[0, 2]] == 0).all()  # exactly the green middle half
    halved = decode_image_file(save(tmp_path / "big.png", stripes(80, 40)), (10, 10), 3, fit="crop")
    assert (halved[:, :, 1:-1] == torch.tensor([0, 255, 0], dtype=torch.uint8).view(3, 1, 1)).all()
    stretched = decode_image_file(path, (10, 20), 3, fit="stretch")
    assert stretched.shape == (3, 10, 20)
    colours = ((255, 0, 0), (0, 255, 0), (0, 0, 255))
    red, green, blue = (torch.tensor(c, dtype=torch.uint8).view(3, 1, 1) for c in colours)
    assert (stretched[:, :, :4] == red).all() and (stretched[:, :, 6:14] == green).all()
    assert (stretched[:, :, 16:] == blue).all()
    tall = decode_image_file(save(tmp_path / "tall.png", stripes(40, 20).rotate(90, expand=True)), (20, 20), 3)
    assert (tall[1] == 255).all()


def test_crop_matches_resize_shorter_side_then_centre_crop(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8))
    path = save(tmp_path / "noise.png", image)
    # Independent computation: shorter side 30 -> 12, longer 50 -> int(12 * 50 / 30) = 20, centre 12×12.
    expected = np.asarray(image.resize((20, 12), Image.Resampling.BILINEAR))[:, 4:16].transpose(2, 0, 1)
    np.testing.assert_array_equal(decode_image_file(path, (12, 12), 3).numpy(), expected)


def test_large_jpeg_decodes_through_a_draft_close_to_a_full_decode(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    smooth = Image.fromarray(rng.integers(0, 256, (8, 12, 3), dtype=np.uint8)).resize((1200, 800), Image.BICUBIC)
    path = save(tmp_path / "photo.jpg", smooth, quality=95)
    fast = decode_image_file(path, (32, 32), 3).float()
    with Image.open(path) as full:
        reference = np.asarray(full.convert("RGB").resize((48, 32), Image.Resampling.BILINEAR))[:, 8:40]
    assert (fast - torch.from_numpy(reference.transpose(2, 0, 1).copy()).float()).abs().mean() < 2.0


@pytest.mark.parametrize(
    ("image", "suffix", "rgb", "gray"),
    [
        (Image.new("L", (4, 4), 100), ".png", (100, 100, 100), 100),
        (Image.new("LA", (4, 4), (100, 0)), ".png", (255, 255, 255), 255),  # transparent: white
        (Image.new("LA", (4, 4), (100, 255)), ".png", (100, 100, 100), 100),
        (Image.new("RGBA", (4, 4), (200, 0, 0, 51)), ".png", (244, 204, 204), 216),  # 20% of 200 on white
        (Image.new("RGB", (4, 4), (10, 20, 30)), ".png", (10, 20, 30), 18),  # BT.601: 18.15
        (Image.new("CMYK", (4, 4), (255, 0, 0, 0)), ".tif", (0, 255, 255), 179),  # cyan
        (Image.new("I;16", (4, 4), 65535), ".png", (255, 255, 255), 255),
        (Image.new("I;16", (4, 4), 32896), ".png", (128, 128, 128), 128),  # 128.5 / 257 * 255
        (Image.new("1", (4, 4), 1), ".png", (255, 255, 255), 255),
    ],
    ids=["L", "LA-transparent", "LA-opaque", "RGBA", "RGB", "CMYK", "I;16-max", "I;16-mid", "1"],
)
def test_modes_decode_to_expected_values(
    tmp_path: Path, image: Image.Image, suffix: str, rgb: tuple[int, ...], gray: int
) -> None:
    path = save(tmp_path / f"image{suffix}", image)
    with Image.open(path) as reopened:
        assert reopened.mode == image.mode  # the file really holds that mode
    assert decode_image_file(path, (4, 4), 3).tolist() == [[[v] * 4] * 4 for v in rgb]
    assert decode_image_file(path, (4, 4), 1).tolist() == [[[gray] * 4] * 4]


def test_palette_with_a_transparent_entry(tmp_path: Path) -> None:
    image = Image.new("P", (4, 4), 1)
    image.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    image.putpixel((0, 0), 0)
    path = save(tmp_path / "palette.png", image, transparency=0)
    out = decode_image_file(path, (4, 4), 3)
    assert out[:, 0, 0].tolist() == [255, 255, 255]
    assert out[:, 3, 3].tolist() == [10, 20, 30]


def test_exif_orientation_6_comes_back_rotated(tmp_path: Path) -> None:
    array = np.zeros((4, 8), np.uint8)
    array[:, 4:] = 255  # stored: left half black, right half white
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90° clockwise: the left half goes on top
    path = save(tmp_path / "phone.jpg", Image.fromarray(array), exif=exif, quality=100)
    out = decode_image_file(path, (8, 4), 1, fit="stretch")
    assert out.shape == (1, 8, 4)
    assert out[0, :3].max() < 30 and out[0, 5:].min() > 225


@pytest.fixture
def bad_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[ImageFiles, dict[str, str]]:
    """Two good images and one of each bad kind, with the reason each should get."""
    good = [save(tmp_path / "good1.png"), save(tmp_path / "good2.jpg")]
    jpeg = (tmp_path / "good2.jpg").read_bytes()
    bad = {
        "empty.jpg": (b"", "empty (0 bytes)"),
        "cut.jpg": (jpeg[: len(jpeg) // 2], "truncated or corrupt"),
        "text.png": (b"not an image at all\n", "not an image file Pillow can read"),
        "locked.png": ((tmp_path / "good1.png").read_bytes(), "permission denied"),
    }
    for name, (data, _) in bad.items():
        (tmp_path / name).write_bytes(data)
    save(tmp_path / "bomb.png", Image.new("L", (2000, 1000)))
    reasons = {name: reason for name, (_, reason) in bad.items()}
    reasons["bomb.png"] = "2000×1000 = 2,000,000 pixels, over the limit of 1,000,000"
    reasons["gone.png"] = "not found"
    locked = tmp_path / "locked.png"
    locked.chmod(0)
    if os.geteuid() == 0:  # root reads anything: make Pillow meet the permission error it would get
        real_open = Image.open

        def open_denying(fp: object, *args: object, **kwargs: object) -> Image.Image:
            if Path(str(fp)) == locked:
                raise PermissionError(13, "Permission denied", str(fp))
            return real_open(fp, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(Image, "open", open_denying)
    paths = [good[0], *(tmp_path / name for name in reasons), good[1]]
    return ImageFiles(paths, [0] * len(paths), ["x"]), reasons


def test_each_bad_file_is_skipped_with_its_reason(bad_set: tuple[ImageFiles, dict[str, str]]) -> None:
    files, reasons = bad_set
    decoded = decode_images(files, (4, 4), 3, max_pixels=1_000_000)
    assert decoded.images.shape == (2, 3, 4, 4) and decoded.labels.tolist() == [0, 0]
    assert decoded.paths == [files.paths[0], files.paths[-1]]
    assert len(decoded.skipped) == len(reasons) == 6
    for skip in decoded.skipped:
        assert reasons[skip.path.name] in skip.reason and str(skip.path) in skip.reason
    torch.testing.assert_close(decoded.images[1], decode_image_file(files.paths[-1], (4, 4), 3))


def test_strict_stops_at_the_first_bad_file(bad_set: tuple[ImageFiles, dict[str, str]]) -> None:
    files, _ = bad_set
    with pytest.raises(DcnnError, match=r"empty\.jpg is empty \(0 bytes\).*strict mode stops"):
        decode_images(files, (4, 4), 3, strict=True)


def test_invalid_options_raise(tmp_path: Path) -> None:
    files = files_of([save(tmp_path / "a.png")])
    with pytest.raises(DcnnError, match=r"channels must be 1.*fit must be"):
        decode_images(files, (4, 4), 2, fit="pad")  # type: ignore[arg-type]


# --- Disk cache ---------------------------------------------------------------------------------


def count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    calls: list[Path] = []
    real = folder._decode

    def counting(path: Path, *args: object) -> np.ndarray:
        calls.append(path)
        return real(path, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(folder, "_decode", counting)
    return calls


def test_cache_is_read_back_and_notices_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    paths = [save(tmp_path / "set" / f"{i}.png", Image.new("L", (4, 4), 40 * i)) for i in range(3)]
    (tmp_path / "set" / "bad.png").write_bytes(b"")
    files = ImageFiles([*paths, tmp_path / "set" / "bad.png"], [0, 1, 1, 0], ["a", "b"])
    calls = count_decodes(monkeypatch)
    first = load_or_decode(files, (4, 4), 1, cache_dir=cache)
    assert len(calls) == 4
    second = load_or_decode(files, (4, 4), 1, cache_dir=cache)
    assert len(calls) == 4  # nothing decoded
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
    assert second.paths == first.paths and second.class_names == ["a", "b"] and second.skipped == first.skipped
    assert second.images[:, 0, 0, 0].tolist() == [0, 40, 80]
    with pytest.raises(DcnnError, match=r"bad\.png is empty"):
        load_or_decode(files, (4, 4), 1, cache_dir=cache, strict=True)  # the cached skip counts

    save(paths[1], Image.new("L", (4, 4), 41))
    os.utime(paths[1], ns=(0, 1_000_000_000))  # modified
    assert load_or_decode(files, (4, 4), 1, cache_dir=cache).images[1, 0, 0, 0] == 41
    assert len(calls) == 8
    relabelled = ImageFiles(files.paths, [1, 1, 1, 0], ["a", "b"])
    assert load_or_decode(relabelled, (4, 4), 1, cache_dir=cache).labels.tolist() == [1, 1, 1]
    added = ImageFiles([*files.paths, save(tmp_path / "set" / "new.png")], [*files.labels, 1], ["a", "b"])
    assert len(load_or_decode(added, (4, 4), 1, cache_dir=cache).paths) == 4
    assert len(load_or_decode(files, (4, 4), 3, cache_dir=cache).paths) == 3  # other options: another entry
    assert len(calls) == 8 + 4 + 5 + 4


def test_corrupt_cache_entry_is_decoded_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    files = files_of([save(tmp_path / f"{i}.png", Image.new("L", (4, 4), 9 * i)) for i in range(2)])
    expected = load_or_decode(files, (4, 4), 1, cache_dir=cache).images
    (npy,) = cache.glob("*.npy")
    data = bytearray(npy.read_bytes())
    data[-1] ^= 0xFF  # one flipped pixel: same shape, wrong digest
    npy.write_bytes(bytes(data))
    calls = count_decodes(monkeypatch)
    assert torch.equal(load_or_decode(files, (4, 4), 1, cache_dir=cache).images, expected)
    assert len(calls) == 2
    npy.write_bytes(b"garbage")
    (meta,) = cache.glob("*.json")
    assert torch.equal(load_or_decode(files, (4, 4), 1, cache_dir=cache).images, expected)
    meta.write_text("{not json")
    assert torch.equal(load_or_decode(files, (4, 4), 1, cache_dir=cache).images, expected)
    assert len(calls) == 6
    assert torch.equal(load_or_decode(files, (4, 4), 1, cache_dir=cache).images, expected)
    assert len(calls) == 6  # rewritten entries are trusted again


# --- Lazy dataset -------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [0, 2])
def test_lazy_dataset_matches_the_in_memory_decode_and_reports_failures(tmp_path: Path, workers: int) -> None:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(7):
        image = Image.fromarray(rng.integers(0, 256, (20 + i, 30, 3), dtype=np.uint8))
        paths.append(save(tmp_path / f"{i}.png", image))
    jpeg = save(tmp_path / "whole.jpg", Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)))
    (tmp_path / "cut.jpg").write_bytes(jpeg.read_bytes()[:2000])  # a sound header, truncated data
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello")
    names = [*paths[:3], tmp_path / "cut.jpg", tmp_path / "empty.png", *paths[3:], tmp_path / "text.jpg"]
    files = ImageFiles(names, [i % 2 for i in range(len(names))], ["a", "b"])
    dataset = LazyImageDataset(files, (12, 16), 3)
    assert {s.path.name for s in dataset.skipped} == {"empty.png", "text.jpg"}  # caught from headers
    assert len(dataset) == 8
    loader = DataLoader(dataset, batch_size=3, num_workers=workers, collate_fn=collate_skipping)
    batches = list(loader)
    images = torch.cat([b.images for b in batches])
    labels = torch.cat([b.labels for b in batches])
    failures = [s for b in batches for s in b.skipped]
    assert [s.path.name for s in failures] == ["cut.jpg"] and "truncated or corrupt" in failures[0].reason
    decoded = decode_images(files, (12, 16), 3)
    assert torch.equal(images, decoded.images) and torch.equal(labels, decoded.labels)
    assert images.dtype == torch.uint8 and images.shape == (7, 3, 12, 16)


def test_collate_of_a_batch_that_failed_entirely(tmp_path: Path) -> None:
    (tmp_path / "cut.png").write_bytes(save(tmp_path / "a.png").read_bytes()[:40])
    dataset = LazyImageDataset(files_of([tmp_path / "cut.png"]), (5, 6), 1, check_headers=False)
    batch = collate_skipping([dataset[0]])
    assert batch.images.shape == (0, 1, 5, 6) and batch.labels.shape == (0,)
    assert [s.path for s in batch.skipped] == [tmp_path / "cut.png"]


# --- Real data ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cifar_test_dir() -> Path:
    path = data_dir() / "cifar10-jpeg" / "test"
    if not (path / "cat").is_dir():
        pytest.fail(f"cifar10-jpeg not found in {path.parent}; set DCNN_DATA_DIR to the folder holding cifar10-jpeg/")
    return path


def test_real_cifar10_jpegs_decode_to_their_pixels(cifar_test_dir: Path) -> None:
    splits, skipped = scan_image_folder(cifar_test_dir)
    files = splits["all"]
    assert files.class_names[:4] == ["airplane", "automobile", "bird", "cat"] and len(files.class_names) == 10
    assert skipped == [] and files.class_counts()["cat"] == 1000
    picked = [i for i, label in enumerate(files.labels) if label in (3, 5)][::6]
    sample = files.subset(picked)
    decoded = decode_images(sample, (32, 32), 3, progress=True)
    assert decoded.images.shape == (len(picked), 3, 32, 32) and len(picked) >= 300 and decoded.skipped == []
    assert decoded.labels.unique().tolist() == [3, 5]
    for index in (0, len(picked) // 2, len(picked) - 1):
        with Image.open(sample.paths[index]) as image:
            expected = np.asarray(image.convert("RGB")).transpose(2, 0, 1)
        np.testing.assert_array_equal(decoded.images[index].numpy(), expected)
    gray = decode_images(sample.subset(range(10)), (16, 16), 1, fit="stretch")
    assert gray.images.shape == (10, 1, 16, 16) and 40 < gray.images.float().mean() < 200
