"""IDX datasets (MNIST layout) such as fashion-mnist, read with numpy, replayed for `epochs`, shuffled per epoch."""

from __future__ import annotations

import gzip
import hashlib
import os
import time
from collections.abc import Iterator

import numpy as np

from ffstream.sources.base import Frame, FrameSource, Position, SourceError
from ffstream.sources.preprocess import Preprocess

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"  # where Debian's dataset-fashion-mnist installs it
INSTALL_HINT = "install fashion-mnist with `apt-get install dataset-fashion-mnist`"
SPLIT_PREFIX = {"train": "train", "test": "t10k"}  # split name -> file name prefix
GZIP_MAGIC = b"\x1f\x8b"

# IDX type byte -> big-endian numpy dtype (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT")
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """One IDX file, gzipped or plain -> an array of the shape its header gives, native byte order."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise SourceError(f"cannot read IDX file {path}: {e.strerror}") from None
    if raw[:2] == GZIP_MAGIC:  # sniff rather than trust the name: some mirrors store .gz unpacked
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise SourceError(f"corrupt gzip IDX file {path}: {e}") from None
    # magic: two zero bytes, a type byte, the number of dimensions; then one big-endian uint32 per dimension
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES or raw[3] == 0:
        raise SourceError(f"not an IDX file (bad magic number {raw[:4].hex() or 'empty'}): {path}")
    dtype, ndim = np.dtype(IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise SourceError(f"truncated IDX header in {path}")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(dims)) * dtype.itemsize
    if len(raw) != expected:
        raise SourceError(f"IDX file {path} has {len(raw)} bytes, its header {dims} says {expected}")
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="))  # a writable, native-order copy


def load_idx(images_path: str | os.PathLike, labels_path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Image and label files -> (uint8 (N, H, W), int64 (N,))."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise SourceError(f"expected uint8 images (N, H, W) in {images_path}, got {images.dtype} {images.shape}")
    if labels.ndim != 1:
        raise SourceError(f"expected labels (N,) in {labels_path}, got shape {labels.shape}")
    if len(labels) != len(images):
        raise SourceError(f"{len(images)} images but {len(labels)} labels in {images_path} / {labels_path}")
    if len(labels) and labels.min() < 0:
        raise SourceError(f"negative label in {labels_path}")
    return images, labels.astype(np.int64)


def split_paths(directory: str, split: str) -> tuple[str, str]:
    """The image and label files of `split` (train|test) in `directory`, plain or .gz."""
    if split not in SPLIT_PREFIX:
        raise SourceError(f"unknown split {split!r}: use one of {', '.join(SPLIT_PREFIX)}")
    prefix = SPLIT_PREFIX[split]
    found = []
    for kind in ("images-idx3", "labels-idx1"):
        base = os.path.join(directory, f"{prefix}-{kind}-ubyte")
        path = next((p for p in (base, base + ".gz") if os.path.isfile(p)), None)
        if path is None:
            raise SourceError(f"missing IDX file {base}[.gz] ({split} split); {INSTALL_HINT}")
        found.append(path)
    return found[0], found[1]


class IdxSource(FrameSource):
    """A labelled image set as a stream: `epochs` passes, each in a fresh seeded order when `shuffle`."""

    live = False

    def __init__(
        self,
        images: np.ndarray,  # uint8 (N, H, W) or (N, H, W, 3)
        labels: np.ndarray,  # int (N,)
        preprocess: Preprocess,
        *,
        name: str = "idx",
        seed: int = 0,  # seeds the per-epoch permutations
        epochs: int = 1,  # passes over the set
        shuffle: bool = True,  # False: file order every epoch
        num_classes: int | None = None,  # None: max label + 1
        files: tuple[str, ...] = (),  # the IDX files read, for `identity()`; () hashes the arrays instead
    ) -> None:
        if epochs <= 0:
            raise ValueError(f"epochs must be positive, got {epochs}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        super().__init__(name, preprocess)
        self.images, self.labels = images, labels
        self.seed, self.epochs, self.shuffle = seed, epochs, shuffle
        self.total = len(images) * epochs
        if num_classes is None:
            num_classes = int(labels.max()) + 1 if len(labels) else 0
        self.num_classes = num_classes
        self.files = files

    def identity(self) -> dict:
        """The files (or, built from arrays, their contents) and the order: a position means nothing in another order."""
        if self.files:
            content = [[os.path.realpath(f), os.stat(f).st_size, os.stat(f).st_mtime_ns] for f in self.files]
        else:
            content = hashlib.blake2b(self.images.tobytes() + self.labels.tobytes(), digest_size=16).hexdigest()
        return {"kind": "idx", "content": content, "seed": self.seed, "shuffle": self.shuffle}

    def _frames(self) -> Iterator[Frame]:
        rng = np.random.default_rng(self.seed)  # a new pass replays the same orders
        n, start = len(self.images), self.start
        index = start.epoch * n + start.offset
        for epoch in range(self.epochs):
            order = rng.permutation(n) if self.shuffle else np.arange(n)  # drawn for skipped passes too: same orders
            if epoch < start.epoch:
                continue
            for offset in range(start.offset if epoch == start.epoch else 0, n):
                if self._closed:
                    return
                i = order[offset]
                self.position = Position(epoch, offset + 1)
                yield Frame(self.preprocess(self.images[i]), int(self.labels[i]), index, time.time())
                index += 1


def load_split(directory: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The `split` (train|test) of the IDX set in `directory` -> (uint8 (N, H, W), int64 (N,))."""
    if not os.path.isdir(directory):
        raise SourceError(f"IDX directory not found: {directory}; {INSTALL_HINT}")
    return load_idx(*split_paths(directory, split))


def open_idx(
    directory: str, split: str, preprocess: Preprocess, *, name: str, fashion: bool = False, **kw
) -> IdxSource:
    """An `IdxSource` over one split; fashion-mnist always has 10 classes. `kw`: IdxSource's seed/epochs/shuffle."""
    images, labels = load_split(directory, split)
    files = split_paths(directory, split)
    return IdxSource(images, labels, preprocess, name=name, num_classes=10 if fashion else None, files=files, **kw)
