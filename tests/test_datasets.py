"""training/datasets.py: the dataset walker and its symlink fence, the folders the app may offer,
the image counts (the files a run loads), and the synthetic demo set."""

from __future__ import annotations

import pytest

from training import datasets as D
from training.datasets import DatasetChoiceError
from training.synthetic import write_dataset


# ------------------------------------------------------------------ datasets under LESION_LENS_DATA

def test_list_and_resolve_datasets(base):
    assert D.list_datasets() == ["nested/test", "nested/train", "one"]
    assert D.resolve_dataset("one") == (base / "one").resolve()
    assert D.resolve_dataset("nested/test") == (base / "nested" / "test").resolve()
    assert D.count_images(base / "nested" / "test") == {"benign": 2, "malignant": 2}


@pytest.mark.parametrize("rel, message", [("../x", "outside"), ("/etc", "inside"), ("", "inside"),
                                          ("nested", "several datasets"), ("notdata", "not a dataset"),
                                          ("missing", "no such folder"), ("one/benign", "not a dataset")])
def test_resolve_dataset_refuses(base, rel, message):
    with pytest.raises(DatasetChoiceError, match=message):
        D.resolve_dataset(rel)


def test_symlinks_out_of_the_data_folder_are_refused(base, tmp_path):
    outside = write_dataset(tmp_path / "outside", per_class=2, size=32)
    (base / "linked").symlink_to(outside, target_is_directory=True)
    (base / "half").mkdir()
    (base / "half" / "benign").symlink_to(outside / "benign", target_is_directory=True)
    (base / "half" / "malignant").mkdir()
    write_dataset(base / "files", per_class=2, size=32)
    (base / "files" / "malignant" / "zz.png").symlink_to(outside / "malignant" / "000.png")
    assert D.list_datasets() == ["nested/test", "nested/train", "one"]
    for rel in ("linked", "half", "files"):
        with pytest.raises(DatasetChoiceError):
            D.resolve_dataset(rel)
        assert not D.allowed_data(base / rel)
    # a symlink inside the folder that stays inside it is fine
    (base / "one" / "benign" / "alias.png").symlink_to(base / "one" / "benign" / "000.png")
    assert D.resolve_dataset("one") == (base / "one").resolve()


def test_without_lesion_lens_data_nothing_but_the_synthetic_set(monkeypatch, tmp_path):
    monkeypatch.delenv("LESION_LENS_DATA", raising=False)
    monkeypatch.setenv("LESION_LENS_RUNS", str(tmp_path / "runs"))
    assert D.data_base() is None and D.list_datasets() == []
    with pytest.raises(DatasetChoiceError, match="LESION_LENS_DATA"):
        D.resolve_dataset("one")
    demo = D.synthetic_demo()
    assert demo == tmp_path / "runs" / D.SYNTHETIC_DIR_NAME
    for split, n in D.SYNTHETIC_PER_CLASS.items():
        assert "SYNTHETIC" in (demo / split / "SYNTHETIC.txt").read_text()
        assert D.count_images(demo / split) == {"benign": n, "malignant": n}
    stamp = (demo / "train" / "benign" / "000.png").stat().st_mtime_ns
    assert D.synthetic_demo() == demo and (demo / "train" / "benign" / "000.png").stat().st_mtime_ns == stamp
    assert D.allowed_data(demo / "train") and not D.allowed_data(tmp_path)
    from training.rundir import list_runs

    assert list_runs() == []
