"""image_folder on real photos (clothing-small) and on built folders with awkward files."""
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

import gluonft
from gluonft.datasets import (
    DatasetNotFound,
    FolderData,
    ImageSet,
    UnreadableImagesWarning,
    image_folder,
    list_images,
    load_images,
)

CLOTHES = ("dress", "hat", "longsleeve", "outwear", "pants", "shirt", "shoes", "shorts", "skirt",
           "t-shirt")


@pytest.fixture(scope="module")
def clothing(shared) -> Path:
    return shared / "data" / "clothing-small"


@pytest.fixture(scope="module")
def clothes(clothing) -> FolderData:
    begin = time.perf_counter()
    data = gluonft.datasets.image_folder(clothing, image_size=64)
    data.seconds = time.perf_counter() - begin
    return data


# --- real photos -------------------------------------------------------------------------------

def test_clothing_small_loads_every_split_with_one_class_order(clothing, clothes):
    assert isinstance(clothes, FolderData) and clothes.layout == "split folders"
    assert clothes.classes == CLOTHES
    assert [(name, len(part)) for name, part in clothes.items()] == \
        [("train", 3068), ("validation", 341), ("test", 372)]
    for name, part in clothes.items():
        assert part.classes == CLOTHES and part.skipped == ()
        assert part.images.shape[1:] == (74, 74, 3) and part.images.dtype == np.uint8
        folder = clothing / name
        assert part.class_counts() == {c: len(list(Path(folder, c).glob("*.jpg")))
                                       for c in CLOTHES}
    assert clothes["val"] is clothes.validation and clothes["test"] is clothes.test
    assert clothes.stored_size == 74 and clothes.image_size == 64 and clothes.fit == "crop"
    assert clothes.seconds < 60  # about 4 s on 2 cores; generous for a shared machine


def test_a_real_photo_is_the_centre_square_resized_with_inter_area(clothing, clothes):
    first = sorted((clothing / "test" / "dress").glob("*.jpg"))[0]
    bgr = cv2.imread(str(first), cv2.IMREAD_COLOR)
    h, w = bgr.shape[:2]
    s = min(h, w)
    square = bgr[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s, ::-1]
    expected = cv2.resize(np.ascontiguousarray(square), (74, 74), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(clothes.test.images[0], expected)


def test_one_split_alone_is_an_imageset(clothing):
    test = image_folder(clothing, image_size=32, split="test")
    assert isinstance(test, ImageSet) and len(test) == 372 and test.classes == CLOTHES
    assert test.images.shape[1:] == (37, 37, 3)


def test_a_real_single_folder_splits_stratified_and_reproducibly(clothing):
    data = image_folder(clothing / "validation", image_size=16, val_fraction=0.25,
                        test_fraction=0.2, seed=3)
    assert data.layout == "class folders" and data.classes == CLOTHES
    total = {c: len(list((clothing / "validation" / c).glob("*.jpg"))) for c in CLOTHES}
    for c in CLOTHES:
        parts = [part.class_counts()[c] for _, part in data.items()]
        assert sum(parts) == total[c] and min(parts) >= 1  # every class in every split
    assert len(data.test) == pytest.approx(0.2 * 341, abs=6)
    again = image_folder(clothing / "validation", image_size=16, val_fraction=0.25,
                         test_fraction=0.2, seed=3)
    np.testing.assert_array_equal(again.validation.images, data.validation.images)
    other = image_folder(clothing / "validation", image_size=16, val_fraction=0.25,
                         test_fraction=0.2, seed=4)
    assert not np.array_equal(other.validation.images, data.validation.images)


# --- built folders -----------------------------------------------------------------------------

def _write(path: Path, image: np.ndarray):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image), path


def _awkward(root: Path) -> Path:
    """Three classes of odd files: grey, RGBA, 16-bit, odd sizes, corrupt, text, hidden."""
    rng = np.random.RandomState(0)
    _write(root / "cat" / "grey.png", np.full((30, 50), 90, np.uint8))
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., 0] = 255  # blue in BGR(A)
    rgba[:, :20, 3] = 255  # left half opaque, right half transparent -> white
    _write(root / "cat" / "rgba.png", rgba)
    _write(root / "cat" / "nested" / "odd.jpg", rng.randint(0, 255, (37, 91, 3), np.uint8))
    (root / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "cat" / "._rgba.png").write_bytes(b"macOS resource fork")  # hidden: ignored
    _write(root / "dog" / "deep.png", np.full((20, 20, 3), 60000, np.uint16))  # 16-bit
    _write(root / "dog" / "wide.BMP", rng.randint(0, 255, (10, 300, 3), np.uint8))
    (root / "dog" / "empty.png").write_bytes(b"")
    _write(root / "eel" / "a.jpg", np.full((64, 48, 3), 128, np.uint8))
    _write(root / "eel" / "b.webp", np.full((48, 64, 3), 30, np.uint8))
    (root / "README.md").write_text("a stray file beside the class folders is ignored")
    return root


def test_awkward_files_are_decoded_converted_or_skipped_with_one_warning(tmp_path):
    root = _awkward(tmp_path / "photos")
    with pytest.warns(UnreadableImagesWarning) as caught:
        data = image_folder(root, image_size=16, margin=1.0, val_fraction=0.5, seed=0)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "2 unreadable" in message and "broken.jpg" in message and "empty.png" in message
    assert data.classes == ("cat", "dog", "eel")
    assert sorted(data.skipped) == sorted([str(root / "cat" / "broken.jpg"),
                                           str(root / "dog" / "empty.png")])
    images = np.concatenate([data.train.images, data.validation.images])
    assert len(images) == 7 and images.shape[1:] == (16, 16, 3)
    files = [p.relative_to(root).as_posix() for p in list_images(root)]
    assert "cat/nested/odd.jpg" in files and "cat/._rgba.png" not in files
    assert "cat/notes.txt" not in files


def test_pixel_conversions(tmp_path):
    root = _awkward(tmp_path / "photos")
    paths = [root / "cat" / "grey.png", root / "cat" / "rgba.png", root / "dog" / "deep.png"]
    images, kept, skipped = load_images(paths, size=20, fit="stretch")
    assert kept == [0, 1, 2] and skipped == []
    grey, rgba, deep = images
    assert np.all(grey == 90)  # grey repeated over R, G, B
    assert np.all(rgba[:, :9] == (0, 0, 255))  # opaque blue, now RGB
    assert np.all(rgba[:, 11:] == 255)  # transparent -> white
    assert np.all(deep == round(60000 * 255 / 65535))  # 16 bits scaled to 8


@pytest.mark.parametrize("fit", ["crop", "pad", "stretch"])
def test_fit_modes_make_a_tall_image_square(tmp_path, fit):
    tall = np.zeros((40, 20, 3), np.uint8)
    tall[:20] = (0, 0, 255)  # red top half (BGR)
    tall[20:] = (255, 0, 0)  # blue bottom half
    _write(tmp_path / "tall.png", tall)
    (image,), _, _ = load_images([tmp_path / "tall.png"], size=20, fit=fit)
    red, blue = (255, 0, 0), (0, 0, 255)
    if fit == "crop":  # rows 10..29 of the original: half red, half blue, full width
        assert np.all(image[:10] == red) and np.all(image[10:] == blue)
    elif fit == "pad":  # whole image at half size, black columns either side
        assert np.all(image[:, :5] == 0) and np.all(image[:, 15:] == 0)
        assert np.all(image[:10, 5:15] == red) and np.all(image[10:, 5:15] == blue)
    else:  # whole image squeezed vertically
        assert np.all(image[:10] == red) and np.all(image[10:] == blue)
        assert image.shape == (20, 20, 3)
    if fit != "pad":
        assert not np.any(np.all(image == 0, axis=-1))


def test_split_folders_with_val_alias_and_a_carved_validation(tmp_path):
    for split, n in (("train", 6), ("val", 2)):
        for c, value in (("b", 10), ("a", 200)):
            for i in range(n):
                _write(tmp_path / "ds" / split / c / f"{i}.png", np.full((8, 8, 3), value + i,
                                                                         np.uint8))
    data = image_folder(tmp_path / "ds", image_size=8, margin=1.0)
    assert data.classes == ("a", "b") and len(data.validation) == 4 and data.test is None
    assert np.all(data.validation.images[data.validation.labels == 0] >= 200)  # 'a' is label 0
    with pytest.raises(ValueError, match=r"has its own val/ folder, so val_fraction=0.5"):
        image_folder(tmp_path / "ds", image_size=8, val_fraction=0.5)
    carved = image_folder(tmp_path / "ds", image_size=8, margin=1.0, test_fraction=0.5, seed=1)
    assert carved.test.class_counts() == {"a": 3, "b": 3} and len(carved.train) == 6
    alone = image_folder(tmp_path / "ds", image_size=8, margin=1.0, test_fraction=0.5, seed=1,
                         split="test")
    np.testing.assert_array_equal(alone.images, carved.test.images)
    with pytest.raises(ValueError,
                       match=r"has no test split .*found train/, val/\); pass test_fraction"):
        image_folder(tmp_path / "ds", image_size=8, split="test")


# --- clear errors ------------------------------------------------------------------------------

def _classes(root: Path, names, n=2):
    for name in names:
        for i in range(n):
            _write(root / name / f"{i}.png", np.full((8, 8, 3), i, np.uint8))
    return root


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(DatasetNotFound, match="does not exist"):
        image_folder(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFound, match=r"has no class folders \(it is empty\)"):
        image_folder(tmp_path / "empty")
    _write(tmp_path / "flat" / "a.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DatasetNotFound, match=r"holds files \(a.png\) but each class needs its "
                                              r"own folder"):
        image_folder(tmp_path / "flat")


def test_one_class_only(tmp_path):
    with pytest.raises(ValueError, match=r"only one class folder, 'hotdog'.*at least two"):
        image_folder(_classes(tmp_path / "one", ["hotdog"]))


def test_a_class_folder_without_images_is_named(tmp_path):
    root = _classes(tmp_path / "ds", ["cat", "dog"])
    (root / "emu").mkdir()
    (root / "emu" / "readme.txt").write_text("no photos yet")
    with pytest.raises(ValueError, match=r"class folder\(s\) 'emu' hold no image files"):
        image_folder(root)
    (root / "emu" / "x.jpg").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"no readable image in class folder\(s\) 'emu'"):
        image_folder(root)


def test_a_split_missing_a_class_is_named(tmp_path):
    _classes(tmp_path / "ds" / "train", ["cat", "dog", "emu"])
    _classes(tmp_path / "ds" / "test", ["cat", "dog", "fox"])
    with pytest.raises(ValueError, match=r"test folder .* missing 'emu'; not in train 'fox'"):
        image_folder(tmp_path / "ds", image_size=8)


def test_ambiguous_or_stray_split_folders(tmp_path):
    _classes(tmp_path / "a" / "train", ["x", "y"])
    _classes(tmp_path / "a" / "val", ["x", "y"])
    _classes(tmp_path / "a" / "validation", ["x", "y"])
    with pytest.raises(ValueError, match=r"both validation/ and val/"):
        image_folder(tmp_path / "a", image_size=8)
    _classes(tmp_path / "b" / "train", ["x", "y"])
    _classes(tmp_path / "b" / "extra", ["x", "y"])
    with pytest.raises(ValueError, match=r"also extra/; expected only train/"):
        image_folder(tmp_path / "b", image_size=8)


def test_too_few_images_to_split(tmp_path):
    root = _classes(tmp_path / "ds", ["x", "y"], n=1)
    with pytest.raises(ValueError, match=r"class\(es\) 'x', 'y' have fewer than 2 images"):
        image_folder(root, image_size=8)


@pytest.mark.parametrize("kwargs, match", [
    ({"image_size": 4}, "image_size must be an integer >= 8, got 4"),
    ({"margin": 0.9}, "margin must be a number >= 1 .*got 0.9"),
    ({"fit": "zoom"}, "unknown fit 'zoom': expected one of crop, pad, stretch"),
    ({"split": "dev"}, "unknown split 'dev': expected one of train, validation, test"),
    ({"val_fraction": 1.0}, r"val_fraction must be a number in \[0, 1\) or None, got 1.0"),
    ({"workers": 0}, "workers must be an integer >= 1, got 0"),
])
def test_argument_validation(tmp_path, kwargs, match):
    root = _classes(tmp_path / "ds", ["x", "y"], n=3)
    with pytest.raises(ValueError, match=match):
        with warnings.catch_warnings():
            image_folder(root, **kwargs)


def _with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """The JPEG with an EXIF APP1 segment holding only the Orientation tag (like a phone's)."""
    import struct
    tiff = (b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1)
            + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack("<I", 0))
    app1 = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpeg[2:]


@pytest.mark.parametrize("height", [40, 1200])  # 1200: also through the reduced decode
def test_exif_orientation_of_phone_photos_is_applied(tmp_path, height):
    stored = np.zeros((height, height * 3 // 2, 3), np.uint8)
    stored[:, : height * 3 // 4] = (0, 0, 255)  # left half red (BGR)
    ok, jpeg = cv2.imencode(".jpg", stored)
    path = tmp_path / "phone.jpg"
    path.write_bytes(_with_exif_orientation(jpeg.tobytes(), 6))  # 6: turn 90 deg clockwise
    (image,), _, _ = load_images([path], size=20, fit="stretch")
    # Displayed upright, the stored left half is the top half.
    assert np.all(np.abs(image[:8].astype(int) - (255, 0, 0)) < 12)
    assert np.all(image[12:] < 12)


def test_a_large_jpeg_decoded_at_reduced_scale_matches_a_full_decode(tmp_path):
    yy, xx = np.mgrid[:1500, :2000]
    photo = np.stack([(xx / 8) % 256, (yy / 6) % 256, ((xx + yy) / 15) % 256], -1)
    cv2.imwrite(str(tmp_path / "big.jpg"), photo.astype(np.uint8))
    (image,), _, _ = load_images([tmp_path / "big.jpg"], size=90)  # 1500 // 8 >= 180
    full = cv2.imread(str(tmp_path / "big.jpg"))[:, 250:1750, ::-1]
    expected = cv2.resize(np.ascontiguousarray(full), (90, 90), interpolation=cv2.INTER_AREA)
    difference = np.abs(image.astype(int) - expected)
    assert difference.mean() < 1 and difference.max() <= 8
