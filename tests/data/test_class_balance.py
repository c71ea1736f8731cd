"""num_images on a source with classes: a balanced, deterministic subset of the first images of each class."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.config import DatasetConfig
from pipeline.data.dataset import PreparedDataset
from pipeline.data.prepare import describe_plan, prepare_dataset
from pipeline.data.sources import FolderSource, LSUN10Source, ZipSource


def _png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize((24, 20)).save(buf, format="PNG")
    return buf.getvalue()


def _classes(root: Path, sizes: dict[str, int]) -> Path:
    for c, (name, n) in enumerate(sizes.items()):
        (root / name).mkdir(parents=True)
        for i in range(n):
            (root / name / f"{i:03d}.png").write_bytes(_png(100 * c + i))
    return root


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    "counts, limit, quotas",
    [
        ([10, 10, 10], 9, [3, 3, 3]),
        ([10, 10, 10], 8, [3, 3, 2]),  # the remainder goes to the first classes
        ([2, 10, 10], 9, [2, 4, 3]),  # a small class gives its surplus to the others
        ([1, 1, 1, 1, 50], 20, [1, 1, 1, 1, 16]),
        ([10, 10, 10, 10, 10], 3, [1, 1, 1, 0, 0]),  # fewer images than classes: the first classes
        ([4, 4], 100, [4, 4]),  # more than there is: everything
        ([4, 4], None, [4, 4]),
    ],
)
def test_balanced_quotas(counts: list[int], limit: int | None, quotas: list[int]) -> None:
    from pipeline.data.sources import balanced_quotas  # here, so the module's other tests run on any version

    assert balanced_quotas(counts, limit) == quotas


def test_a_limited_class_folder_takes_the_first_images_of_every_class_in_source_order(tmp_path: Path) -> None:
    root = _classes(tmp_path / "train", {"cat": 6, "dog": 6, "owl": 6})
    src = FolderSource(root, labels_from_subfolders=True, limit=7)
    names = [raw.name for raw in src]
    assert names == ["cat/000.png", "cat/001.png", "cat/002.png", "dog/000.png", "dog/001.png"] + [
        "owl/000.png",
        "owl/001.png",
    ]
    assert [raw.label for raw in src] == [0, 0, 0, 1, 1, 2, 2] and len(src) == 7
    assert src.class_names == ["cat", "dog", "owl"] and src.class_quotas() == [3, 2, 2]
    assert FolderSource(root, limit=7).class_quotas() is None  # without classes: the first 7, as before


def test_a_limited_class_zip_is_balanced_like_the_folder(tmp_path: Path) -> None:
    import zipfile

    root = _classes(tmp_path / "train", {"cat": 4, "dog": 4})
    path = tmp_path / "train.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for p in sorted(root.rglob("*.png"), reverse=True):  # member order must not matter
            zf.writestr(p.relative_to(root).as_posix(), p.read_bytes())
    folder = FolderSource(root, labels_from_subfolders=True, limit=5)
    zipped = ZipSource(path, labels_from_subfolders=True, limit=5)
    assert [(r.name, r.label, r.data) for r in zipped] == [(r.name, r.label, r.data) for r in folder]
    assert [r.name for r in zipped] == ["cat/000.png", "cat/001.png", "cat/002.png", "dog/000.png", "dog/001.png"]


def test_unlabelled_and_unlimited_sources_keep_the_first_images_as_before(tmp_path: Path) -> None:
    root = _classes(tmp_path / "train", {"cat": 4, "dog": 4})
    plain = FolderSource(root, limit=5)
    assert [r.name for r in plain] == [f"cat/{i:03d}.png" for i in range(4)] + ["dog/000.png"]
    whole = FolderSource(root, labels_from_subfolders=True)
    assert len(whole) == 8 and [r.label for r in whole] == [0] * 4 + [1] * 4


def _lsun(path: Path, n: int, seed: int) -> Path:
    import lmdb

    env = lmdb.open(str(path), map_size=1 << 22)
    with env.begin(write=True) as txn:
        for i in range(n):
            txn.put(f"{i:040x}".encode(), _png(seed + i))
    env.close()
    return path


def test_a_limited_lsun10_takes_a_balanced_share_of_each_category(tmp_path: Path) -> None:
    cats = {
        "tower": _lsun(tmp_path / "t", 5, 0),
        "bedroom": _lsun(tmp_path / "b", 5, 50),
        "kitchen": _lsun(tmp_path / "k", 2, 90),
    }
    ten = LSUN10Source(cats, per_category=4, limit=7)
    # labels follow the categories' order in params; the remainder goes to the first category
    assert [r.label for r in ten] == [0, 0, 0, 1, 1, 2, 2] and len(ten) == 7
    assert ten.class_quotas() == [3, 2, 2]
    plan = describe_plan(DatasetConfig(source="lsun10", categories=cats, per_category=4, num_images=7, resolution=16))
    assert plan["num_images"] == 7 and plan["class_quotas"] == {"tower": 3, "bedroom": 2, "kitchen": 2}
    assert plan["short_classes"] == []  # kitchen's 2 fill its share of 7
    # with 9, kitchen's 2 are short of its share of 3 and the others take the surplus (per_category caps them at 4)
    short = DatasetConfig(source="lsun10", categories=cats, per_category=4, num_images=9, resolution=16)
    assert LSUN10Source(cats, per_category=4, limit=9).class_quotas() == [4, 3, 2]
    assert describe_plan(short)["short_classes"] == ["kitchen: 2 image(s) for a share of 3"]


def test_a_small_class_is_named_in_the_dry_run_and_the_warning_and_gives_its_surplus(tmp_path: Path) -> None:
    root = _classes(tmp_path / "train", {"cat": 1, "dog": 6, "owl": 6})
    cfg = DatasetConfig(source="folder", path=root, resolution=16, labels="subfolders", num_images=9)
    plan = describe_plan(cfg)
    assert plan["num_images"] == 9 and plan["class_quotas"] == {"cat": 1, "dog": 4, "owl": 4}
    assert plan["short_classes"] == ["cat: 1 image(s) for a share of 3"]
    with pytest.warns(UserWarning, match=r"num_images=9: 1 class\(es\) .*cat: 1 image\(s\) for a share of 3"):
        stats = prepare_dataset(cfg, tmp_path / "out")
    assert stats["class_counts"] == [1, 4, 4] and stats["num_images"] == 9
    balanced = DatasetConfig(source="folder", path=root, resolution=16, labels="subfolders", num_images=3)
    assert describe_plan(balanced)["short_classes"] == []


def test_one_and_two_workers_give_the_same_bytes_for_a_limited_class_folder(tmp_path: Path) -> None:
    root = _classes(tmp_path / "train", {"cat": 5, "dog": 5, "owl": 5})
    cfg = DatasetConfig(source="folder", path=root, resolution=16, labels="subfolders", num_images=8)
    one = prepare_dataset(cfg, tmp_path / "w1", chunk_size=3)
    prepare_dataset(cfg, tmp_path / "w2", chunk_size=3, workers=2)
    assert _tree(tmp_path / "w1") == _tree(tmp_path / "w2")
    assert one["class_counts"] == [3, 3, 2]
    assert PreparedDataset(tmp_path / "w1").labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2]
