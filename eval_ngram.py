"""eval_ngram.py: pack/unpack a parameter-golf artifact and score it.

Sections: shards and byte accounting, artifact packing, sliding-window evaluation,
score-first n-gram mixture, command line.
"""
from __future__ import annotations

import glob
import os

import numpy as np
import torch

# ---------------------------------------------------------------- shards and byte accounting
SHARD_MAGIC, SHARD_VERSION, HEADER_INTS = 20240520, 1, 256


class DataError(Exception):
    """Missing, corrupt or unusable data; the message names the file and what to do."""


def write_shard(path: str, tokens: np.ndarray) -> None:
    """Write tokens (< 65536) as a challenge shard: 256 int32 header, then uint16 tokens."""
    tokens = np.asarray(tokens)
    if tokens.size and (tokens.min() < 0 or tokens.max() >= 2**16):
        raise DataError(f"{path}: token ids must fit uint16")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:3] = (SHARD_MAGIC, SHARD_VERSION, tokens.size)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(header.tobytes())
        f.write(tokens.astype("<u2").tobytes())
    os.replace(tmp, path)


def read_shard(path: str) -> np.ndarray:
    """Read and validate one shard; any mismatch is a DataError naming the file."""
    try:
        size = os.path.getsize(path)
    except OSError:
        raise DataError(f"{path}: shard not found") from None
    if size < HEADER_INTS * 4:
        raise DataError(f"{path}: {size} bytes is shorter than the {HEADER_INTS * 4}-byte shard header")
    header = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
    if header[0] != SHARD_MAGIC or header[1] != SHARD_VERSION:
        raise DataError(f"{path}: not a shard (magic {header[0]}, version {header[1]}; "
                        f"expected {SHARD_MAGIC}, {SHARD_VERSION})")
    expected = HEADER_INTS * 4 + 2 * int(header[2])
    if size != expected:
        raise DataError(f"{path}: header says {header[2]} tokens ({expected} bytes) but the file has {size} bytes; "
                        "re-create or re-download it")
    return np.fromfile(path, dtype="<u2", count=int(header[2]), offset=HEADER_INTS * 4)


def find_shards(data_dir: str, split: str) -> list[str]:
    """All `*_{split}_*.bin` shards of a directory, sorted; DataError when there are none."""
    paths = sorted(glob.glob(os.path.join(data_dir, f"*_{split}_*.bin")))
    if not paths:
        raise DataError(f"{data_dir}: no *_{split}_*.bin shards; create them with data/export.py "
                        "or download them with data/fineweb.py")
    return paths

# ---------------------------------------------------------------- artifact packing

# ---------------------------------------------------------------- sliding-window evaluation

# ---------------------------------------------------------------- n-gram mixture (score-first)

# ---------------------------------------------------------------- command line
