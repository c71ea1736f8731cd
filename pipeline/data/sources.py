"""Readers of raw image sources (folder, zip, LSUN lmdb, LSUN-10): encoded bytes with a name and a label."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path, PurePosixPath

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


class SourceError(ValueError):
    """A raw source is missing or unusable; the message says which and what to do."""


@dataclass(frozen=True)
class RawImage:
    name: str  # where it came from, for warnings about corrupt files
    data: bytes  # the encoded image
    label: int


@dataclass
class ImageSource:
    """An ordered, countable stream of encoded images; `limit` keeps the first N."""

    class_names: list[str] = field(default_factory=list)
    limit: int | None = None

    def _count_all(self) -> int:
        raise NotImplementedError

    def _iter_all(self) -> Iterator[RawImage]:
        raise NotImplementedError

    def __len__(self) -> int:
        n = self._count_all()
        return n if self.limit is None else min(n, self.limit)

    def __iter__(self) -> Iterator[RawImage]:
        return islice(self._iter_all(), len(self))


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _is_macos_metadata(name: str) -> bool:
    # macOS Finder puts resource forks in `__MACOSX/` and `._NAME` AppleDouble files: not images, and
    # counting them as unreadable ones would fail an ordinary Finder zip on max_bad_fraction.
    parts = PurePosixPath(name).parts
    return "__MACOSX" in parts or any(part.startswith("._") for part in parts)


def _labels_from_parents(names: Sequence[str], by_subfolder: bool) -> tuple[list[int], list[str]]:
    # MiniImageNet style: the first folder under the root is the class, whatever lies below it
    # (ImageNet's train/<wnid>/images/*.JPEG, or a nested folder inside one class).
    if not by_subfolder:
        return [0] * len(names), []
    loose = [n for n in names if len(PurePosixPath(n).parts) < 2]
    if loose:
        raise SourceError(
            f"labels: subfolders needs every image inside a class folder, but {len(loose)} lie directly in the root "
            f"(first: '{loose[0]}'); move them into a class folder or set labels: none"
        )
    parents = [PurePosixPath(n).parts[0] for n in names]
    classes = sorted(set(parents))
    index = {c: i for i, c in enumerate(classes)}
    return [index[p] for p in parents], classes


class FolderSource(ImageSource):
    """Every image file under a folder (recursively, sorted by path)."""

    def __init__(self, root: Path, labels_from_subfolders: bool = False, limit: int | None = None):
        if not root.is_dir():
            raise SourceError(f"image folder '{root}' does not exist or is not a folder")
        self.root = root
        self.files = sorted(
            rel
            for rel in (p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and _is_image(p.name))
            if not _is_macos_metadata(rel)
        )
        self.labels, classes = _labels_from_parents(self.files, labels_from_subfolders)
        super().__init__(classes, limit)

    def _count_all(self) -> int:
        return len(self.files)

    def _iter_all(self) -> Iterator[RawImage]:
        for rel, label in zip(self.files, self.labels):
            yield RawImage(rel, (self.root / rel).read_bytes(), label)


class ZipSource(ImageSource):
    """Every image member of a zip archive (sorted by member name)."""

    def __init__(self, path: Path, labels_from_subfolders: bool = False, limit: int | None = None):
        if not path.is_file():
            raise SourceError(f"zip archive '{path}' does not exist")
        try:
            with zipfile.ZipFile(path) as zf:
                self.members = sorted(
                    n for n in zf.namelist() if _is_image(n) and not n.endswith("/") and not _is_macos_metadata(n)
                )
        except zipfile.BadZipFile as err:
            raise SourceError(f"'{path}' is not a readable zip archive: {err}") from None
        self.path = path
        self.labels, classes = _labels_from_parents(self.members, labels_from_subfolders)
        super().__init__(classes, limit)

    def _count_all(self) -> int:
        return len(self.members)

    def _iter_all(self) -> Iterator[RawImage]:
        with zipfile.ZipFile(self.path) as zf:
            for name, label in zip(self.members, self.labels):
                try:
                    data = zf.read(name)
                except (zipfile.BadZipFile, OSError) as err:
                    # A damaged member is a corrupt image, not a reason to abandon the archive.
                    data = f"unreadable zip member: {err}".encode()
                yield RawImage(name, data, label)


def _open_lmdb(path: Path):
    import lmdb

    if not path.exists():
        raise SourceError(
            f"LSUN lmdb '{path}' does not exist (expected a folder such as bedroom_train_lmdb/ holding data.mdb)"
        )
    try:
        return lmdb.open(str(path), readonly=True, lock=False, readahead=False, meminit=False, max_readers=1)
    except lmdb.Error as err:
        raise SourceError(f"'{path}' is not a readable lmdb database: {err}") from None


class LSUNSource(ImageSource):
    """One LSUN category as distributed by the LSUN authors: an lmdb of key -> encoded image (webp)."""

    def __init__(self, path: Path, label: int = 0, limit: int | None = None, class_name: str | None = None):
        self.path = path
        self.label = label
        env = _open_lmdb(path)
        self.entries = env.stat()["entries"]
        env.close()
        super().__init__([class_name or path.name], limit)

    def _count_all(self) -> int:
        return self.entries

    def _iter_all(self) -> Iterator[RawImage]:
        env = _open_lmdb(self.path)
        try:
            with env.begin(write=False) as txn:
                for key, value in txn.cursor():
                    yield RawImage(key.decode("ascii", "replace"), bytes(value), self.label)
        finally:
            env.close()


class LSUN10Source(ImageSource):
    """LSUN-10: the first `per_category` images of each of several LSUN categories, labelled by category."""

    def __init__(self, categories: dict[str, Path], per_category: int, limit: int | None = None):
        self.parts = [
            LSUNSource(p, label=i, limit=per_category, class_name=name)
            for i, (name, p) in enumerate(categories.items())
        ]
        super().__init__(list(categories), limit)

    def _count_all(self) -> int:
        return sum(len(p) for p in self.parts)

    def _iter_all(self) -> Iterator[RawImage]:
        for part in self.parts:
            yield from part
