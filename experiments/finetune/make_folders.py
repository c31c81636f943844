#!/usr/bin/env python3
"""Builds the two ImageFolder datasets of the fine-tuning experiment from the Fashion-MNIST IDX
files of Debian's dataset-fashion-mnist package (Python's standard library only):

  pretrain/  classes 0-4 (T-shirt/top, Trouser, Pullover, Dress, Coat): the first 1,200 training
             images of each class in train/, the first 200 test images of each in val/;
  target/    classes 5-9 (Sandal, Shirt, Sneaker, Bag, Ankle boot), which pretraining never
             sees: the first SHOTS training images of each class in train/, the first 200 test
             images of each in val/.

Usage: make_folders.py OUT [SHOTS]   (default SHOTS = 20; OUT gets pretrain/ and target/)
"""

import gzip
import struct
import sys
import zlib
from pathlib import Path

IDX = Path("/usr/share/datasets/fashion-mnist")
NAMES = ["tshirt_top", "trouser", "pullover", "dress", "coat",
         "sandal", "shirt", "sneaker", "bag", "ankle_boot"]


def read_idx(stem):
    with gzip.open(IDX / f"{stem}-images-idx3-ubyte.gz") as f:
        magic, n, rows, cols = struct.unpack(">IIII", f.read(16))
        assert magic == 2051, f"{stem}: not an IDX image file"
        pixels = f.read(n * rows * cols)
    with gzip.open(IDX / f"{stem}-labels-idx1-ubyte.gz") as f:
        magic, m = struct.unpack(">II", f.read(8))
        assert magic == 2049 and m == n, f"{stem}: labels do not match the images"
        labels = f.read(m)
    size = rows * cols
    return [(pixels[i * size:(i + 1) * size], labels[i]) for i in range(n)], rows, cols


def png(gray, width, height):
    """An 8-bit grayscale PNG."""
    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))
    raw = b"".join(b"\x00" + gray[y * width:(y + 1) * width] for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b""))


def write(records, rows, cols, out, classes, per_class):
    counts = {c: 0 for c in classes}
    for index, (pixels, label) in enumerate(records):
        if label in counts and counts[label] < per_class:
            folder = out / NAMES[label]
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{index:05d}.png").write_bytes(png(pixels, cols, rows))
            counts[label] += 1
    short = [c for c, k in counts.items() if k < per_class]
    assert not short, f"classes {short} have fewer than {per_class} images"


def main():
    out = Path(sys.argv[1])
    shots = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    train, rows, cols = read_idx("train")
    test, _, _ = read_idx("t10k")
    seen, unseen = range(0, 5), range(5, 10)
    write(train, rows, cols, out / "pretrain" / "train", seen, 1200)
    write(test, rows, cols, out / "pretrain" / "val", seen, 200)
    write(train, rows, cols, out / "target" / "train", unseen, shots)
    write(test, rows, cols, out / "target" / "val", unseen, 200)
    print(f"{out}/pretrain: 5 x 1200 train, 5 x 200 val; {out}/target: 5 x {shots} train, 5 x 200 val")


if __name__ == "__main__":
    main()
