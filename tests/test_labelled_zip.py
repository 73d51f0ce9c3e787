"""The Evaluate page's zip upload: a labelled set read in memory, refused whole when it is not a
zip, too big or a zip bomb; a bad photo inside is skipped with the same reason an upload gets."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from training.labelled_zip import ZipRefused, decode, read_labelled_zip


def png(seed: int, size: int = 48) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def make_zip(members: dict[str, bytes], method=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_a_labelled_zip_is_read_in_memory_with_its_bad_files_skipped():
    data = make_zip({"set/test/benign/a.png": png(1), "set/test/benign/b.png": png(2),
                     "set/test/Malignant/c.png": png(3), "set/test/malignant/notes.txt": b"hello",
                     "set/test/malignant/fake.jpg": b"this is text, not a photo", "set/readme.png": png(4),
                     "__MACOSX/set/test/benign/._a.png": b"\x00\x05", "set/test/benign/.DS_Store": b"x"})
    lz = read_labelled_zip(data, "clinic.zip")
    assert lz.counts() == {"benign": 2, "malignant": 2}  # fake.jpg is still a candidate photo here
    reasons = dict(lz.skipped)
    assert reasons["set/test/malignant/notes.txt"].startswith("not a photo")
    assert reasons["set/readme.png"] == "not inside a benign/ or malignant/ folder"
    assert not any("__MACOSX" in p or "DS_Store" in p for p, _ in lz.skipped)
    images, labels, paths, skipped = decode(lz, 32)
    assert images.shape == (3, 32, 32, 3) and images.dtype == np.uint8 and labels.tolist() == [0, 0, 1]
    assert paths == ["set/test/benign/a.png", "set/test/benign/b.png", "set/test/Malignant/c.png"]
    assert dict(skipped)["set/test/malignant/fake.jpg"].startswith("not an image this app can read")


@pytest.mark.parametrize("data, message", [
    (b"PK\x03\x04 not really a zip", "not a zip file"),
    (b"", "not a zip file"),
    (make_zip({"benign/a.txt": b"x"}), "no photos in benign/ or malignant/ folders"),
])
def test_unusable_zips_are_refused_with_a_reason(data, message):
    with pytest.raises(ZipRefused, match=message):
        read_labelled_zip(data, "x.zip")


def test_a_zip_bomb_and_oversized_zips_are_refused_before_unpacking():
    bomb = make_zip({"benign/a.png": png(1), "malignant/zeros.png": b"\x00" * (30 * 2**20)})
    assert len(bomb) < 100_000
    with pytest.raises(ZipRefused, match="zip bomb"):
        read_labelled_zip(bomb, "bomb.zip")
    with pytest.raises(ZipRefused, match="once unpacked"):
        read_labelled_zip(make_zip({f"benign/{i}.png": png(i) for i in range(3)}), "big.zip",
                          limits={"max_total_bytes": 1000})
    with pytest.raises(ZipRefused, match="entries, more than"):
        read_labelled_zip(make_zip({f"benign/{i}.png": png(i) for i in range(5)}), "many.zip", limits={"max_files": 4})
    lz = read_labelled_zip(make_zip({f"benign/{i}.png": png(i) for i in range(5)}), "cap.zip", limits={"max_photos": 3})
    assert len(lz.photos) == 3 and sum("beyond the first 3" in why for _, why in lz.skipped) == 2
