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


def balanced_quotas(counts: Sequence[int], limit: int | None) -> list[int]:
    """How many images to take from each class so that `limit` of them cover every class.

    Quotas are as equal as possible; the remainder of an uneven split goes to the first classes in label
    order (for class folders, the sorted folder names), and a class holding fewer images than its share
    is taken whole and its surplus shared again among the others (the remainder of that split going to
    the first of those), so the quotas add up to min(limit, sum(counts)). `limit` None takes everything."""
    if limit is None or limit >= sum(counts):
        return list(counts)
    quotas = [0] * len(counts)
    remaining = limit
    active = [k for k, c in enumerate(counts) if c > 0]
    while remaining > 0 and active:
        base, extra = divmod(remaining, len(active))
        share = {k: base + (i < extra) for i, k in enumerate(active)}
        short = [k for k in active if counts[k] <= share[k]]
        if not short:
            for k in active:
                quotas[k] = share[k]
            break
        # A class that cannot fill its share takes all it has; the rest is shared again among the others.
        for k in short:
            quotas[k] = counts[k]
            remaining -= counts[k]
        active = [k for k in active if counts[k] > share[k]]
    return quotas


def short_classes(class_names: Sequence[str], counts: Sequence[int], limit: int | None) -> list[str]:
    """The classes holding fewer images than their equal share of `limit` (the split `balanced_quotas`
    starts from), whose surplus the other classes took, as "name: n image(s) for a share of s"; empty
    when every class could fill its share."""
    if limit is None or limit >= sum(counts) or not counts:
        return []
    base, extra = divmod(limit, len(counts))
    shares = [base + (k < extra) for k in range(len(counts))]
    return [f"{name}: {c} image(s) for a share of {s}" for name, c, s in zip(class_names, counts, shares) if c < s]


@dataclass
class ImageSource:
    """An ordered, countable stream of encoded images; `limit` keeps N of them: the first N, or, for a
    source with classes, a balanced subset (`balanced_quotas`) of the first images of each class."""

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

    def class_counts(self) -> list[int] | None:
        """Images per class before the limit; None for a source without classes (the limit keeps the first N)."""
        return None

    def class_quotas(self) -> list[int] | None:
        """Images per class the limit keeps; None for a source without classes."""
        counts = self.class_counts()
        return None if counts is None else balanced_quotas(counts, self.limit)


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _is_macos_metadata(name: str) -> bool:
    # macOS Finder puts resource forks in `__MACOSX/` and `._NAME` AppleDouble files: not images, and
    # counting them as unreadable ones would fail an ordinary Finder zip on max_bad_fraction.
    parts = PurePosixPath(name).parts
    return "__MACOSX" in parts or any(part.startswith("._") for part in parts)


def _first_of_each_class(names: list[str], labels: list[int], quotas: Sequence[int]) -> tuple[list[str], list[int]]:
    # The first `quota` names of each class in sorted order, kept in the source's own order, so the
    # output is ordered as an unlimited preparation would order it.
    taken = [0] * len(quotas)
    kept_names, kept_labels = [], []
    for name, label in zip(names, labels):
        if taken[label] < quotas[label]:
            taken[label] += 1
            kept_names.append(name)
            kept_labels.append(label)
    return kept_names, kept_labels


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


def _class_counts(labels: list[int], classes: list[str]) -> list[int]:
    counts = [0] * len(classes)
    for label in labels:
        counts[label] += 1
    return counts


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
        self._counts = _class_counts(self.labels, classes) if labels_from_subfolders else None
        if self._counts is not None and limit is not None:
            self.files, self.labels = _first_of_each_class(self.files, self.labels, self.class_quotas())

    def class_counts(self) -> list[int] | None:
        return self._counts

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
        self._counts = _class_counts(self.labels, classes) if labels_from_subfolders else None
        if self._counts is not None and limit is not None:
            self.members, self.labels = _first_of_each_class(self.members, self.labels, self.class_quotas())

    def class_counts(self) -> list[int] | None:
        return self._counts

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
    """LSUN-10: the first `per_category` images of each of several LSUN categories, labelled by category
    in the order the categories are listed; `limit` takes a balanced share of each (`balanced_quotas`)."""

    def __init__(self, categories: dict[str, Path], per_category: int, limit: int | None = None):
        self.parts = [
            LSUNSource(p, label=i, limit=per_category, class_name=name)
            for i, (name, p) in enumerate(categories.items())
        ]
        self._counts = [len(p) for p in self.parts]
        super().__init__(list(categories), limit)
        for part, quota in zip(self.parts, self.class_quotas()):
            part.limit = quota

    def class_counts(self) -> list[int] | None:
        return self._counts

    def _count_all(self) -> int:
        return sum(len(p) for p in self.parts)

    def _iter_all(self) -> Iterator[RawImage]:
        for part in self.parts:
            yield from part
