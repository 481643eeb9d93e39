"""eval_ngram.py: pack/unpack a parameter-golf artifact and score it.

The base of the two scripts: train_gpt.py imports this file, this file never imports train_gpt.py. A model comes
in as an object (its .cfg the typed Config, .lora_parameters() and .attach_adapters() for test-time training); an
artifact loaded alone is rebuilt by the function its metadata names (model_builder), found in this checkout.

Sections: shards, the training stream and byte accounting; artifact packing (with the random bases a loader
regenerates from seeds); training state (rolling checkpoints, the record folder, the loss curve); sliding-window evaluation; score-first
n-gram mixture; sampling; score-first test-time training; command line.
"""
from __future__ import annotations

import argparse
import base64
import dataclasses
import datetime
import glob
import hashlib
import importlib
import json
import lzma
import math
import os
import random
import struct
import sys
import tempfile
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

# ---------------------------------------------------------------- shards and byte accounting
SHARD_MAGIC, SHARD_VERSION, HEADER_INTS = 20240520, 1, 256


class UsageError(ValueError):
    """A bad option, argument or config value; the message names it and what to use instead."""


def in_interval(value: float, spec: str) -> bool:
    """Whether value lies in an interval written like "[0,1)" or "(0,inf)" (NaN never does)."""
    lo, hi = (float(x) for x in spec[1:-1].split(","))
    return (lo <= value if spec[0] == "[" else lo < value) and (value <= hi if spec[-1] == "]" else value < hi)


class DataError(Exception):
    """Missing, corrupt or unusable data; the message names the file and what to do."""


def write_atomic(path: str, data: bytes | str) -> None:
    """Write a file whole or not at all: a temporary file beside it, then one rename. A full disk or a kill
    leaves the previous file (or none) under the name, never half a file."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def unused_path(base: str) -> str:
    """base, or base_2, base_3, ... : the first that does not exist yet (a new run never writes into an old one)."""
    path, n = base, 2
    while os.path.exists(path):
        path, n = f"{base}_{n}", n + 1
    return path


def write_all_or_none(folder: str, files: dict[str, bytes | str]) -> None:
    """Write files into folder in order, each atomically; when one fails, those already written are removed."""
    written = []
    try:
        for name, data in files.items():
            write_atomic(os.path.join(folder, name), data)
            written.append(os.path.join(folder, name))
    except BaseException:
        for path in written:
            os.remove(path)
        raise


def write_shard(path: str, tokens: np.ndarray) -> None:
    """Write tokens (< 65536) as a challenge shard: 256 int32 header, then uint16 tokens."""
    tokens = np.asarray(tokens)
    if tokens.size and (tokens.min() < 0 or tokens.max() >= 2**16):
        raise DataError(f"{path}: token ids must fit uint16")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:3] = (SHARD_MAGIC, SHARD_VERSION, tokens.size)
    write_atomic(path, header.tobytes() + tokens.astype("<u2").tobytes())


def shard_length(path: str) -> int:
    """A shard's token count, from its header checked against the file's size; any mismatch is a DataError naming
    the file."""
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
    return int(header[2])


def read_shard(path: str, vocab_size: int | None = None) -> np.ndarray:
    """Read and validate one shard (with vocab_size, also that every token id is below it)."""
    tokens = np.fromfile(path, dtype="<u2", count=shard_length(path), offset=HEADER_INTS * 4)
    if vocab_size is not None and tokens.size and int(tokens.max()) >= vocab_size:
        raise DataError(f"{path}: token id {int(tokens.max())} >= vocab_size {vocab_size}; the shards were made "
                        "with another tokenizer: pass its vocab_size, or re-export the text")
    return tokens


def find_shards(data_dir: str, split: str) -> list[str]:
    """All `*_{split}_*.bin` shards of a directory, sorted; DataError when there are none."""
    paths = sorted(glob.glob(os.path.join(data_dir, f"*_{split}_*.bin")))
    if not paths:
        raise DataError(f"{data_dir}: no *_{split}_*.bin shards; create them with data/export.py "
                        "or download them with data/fineweb.py")
    return paths


def train_split(data_dir: str, holdout_tokens: int) -> list[tuple[str, int, int]]:
    """(path, start, end) of every training shard, in shard order, with the split's last holdout_tokens tokens marked
    off: training reads tokens [0, start) of each shard, the held-out split [start, end)."""
    paths = find_shards(data_dir, "train")
    lengths = [shard_length(p) for p in paths]
    if not 0 <= holdout_tokens < sum(lengths):
        raise DataError(f"{data_dir}: train_holdout_tokens={holdout_tokens} must be in 0..{sum(lengths) - 1}: the "
                        f"training split holds {sum(lengths)} tokens and training needs at least one; hold out fewer (0: none, and no "
                        "packing-loss report)")
    keep, spans = sum(lengths) - holdout_tokens, []
    for path, length in zip(paths, lengths):
        spans.append((path, min(max(keep, 0), length), length))
        keep -= length
    return spans


def holdout_tokens(data_dir: str, n: int, vocab_size: int | None = None) -> torch.Tensor:
    """The last n tokens of the training split (of its last shards, in shard order), which a TrainStream made with
    holdout_tokens=n never yields: text to choose evaluation settings on without touching the validation tokens."""
    if n <= 0:
        raise UsageError(f"holdout tokens {n}: must be >= 1")
    parts = [read_shard(path, vocab_size)[start:end] for path, start, end in train_split(data_dir, n) if start < end]
    return torch.from_numpy(np.concatenate(parts).astype(np.int64))


class TrainStream:
    """The training split as batches, forever; validation shards are never opened here, nor the split's last
    holdout_tokens tokens (see holdout_tokens).

    order="sequential" reads the shards in order, wrapping to the first after the last; each step's tokens are one
    span, and every rank takes its own slice of it. order="shuffled" cuts the split into windows of `window` tokens
    (plus the next one, the last target) at an offset drawn anew every epoch and visits them in a random order drawn
    from (seed, epoch), each once per epoch; a batch's rows are windows, or consecutive pieces of one when sequences
    are shorter, and every rank takes its own rows. Text converted in order (one corpus after another, as
    data/export.py writes it) then trains on its whole mixture at every step rather than on one part at a time.
    Either way every rank draws the same tokens, so ranks see disjoint data, and N ranks x 1 micro-step = 1 rank x N.
    """

    def __init__(self, data_dir: str, vocab_size: int, holdout_tokens: int = 0, order: str = "sequential",
                 window: int = 0, seed: int = 0):
        if order not in ("sequential", "shuffled") or (order == "shuffled" and window < 1):
            raise UsageError(f"TrainStream order={order!r} window={window}: sequential, or shuffled with a window >= 1")
        # (shard, tokens trained on) of every shard with any: wholly held-out shards are left out
        self.spans = [(path, trained) for path, trained, _ in train_split(data_dir, holdout_tokens) if trained]
        self.vocab_size, self.order, self.window, self.seed = vocab_size, order, window, seed
        self.shard_index, self.position, self.epoch, self.cursor = 0, 0, 0, 0
        if order == "sequential":
            self.tokens = self._load(0)
        else:
            self._draw_epoch()

    @classmethod
    def for_config(cls, cfg, holdout_tokens: int | None = None) -> TrainStream:
        """The stream a run of this config (train_gpt's Config) trains on; holdout_tokens replaces its held-out tail."""
        holdout = cfg.train_holdout_tokens if holdout_tokens is None else holdout_tokens
        return cls(cfg.data_dir, cfg.vocab_size, holdout, cfg.train_order, cfg.seq_len, cfg.seed)

    def _load(self, index: int) -> np.ndarray:
        path, trained = self.spans[index]
        return read_shard(path, self.vocab_size)[:trained]  # a bad id in a later shard halts the run

    def take(self, n: int) -> np.ndarray:
        """The next n tokens in shard order (order="sequential")."""
        parts = []
        while n > 0:
            if self.position >= self.tokens.size:
                self.shard_index = (self.shard_index + 1) % len(self.spans)
                self.epoch += self.shard_index == 0
                self.position, self.tokens = 0, self._load(self.shard_index)
            part = self.tokens[self.position:self.position + n]
            parts.append(part)
            self.position += part.size
            n -= part.size
        return np.concatenate(parts)

    def _draw_epoch(self) -> None:
        """This epoch's window offset and visiting order (order="shuffled"); each window has a next token to predict."""
        rng = np.random.default_rng([self.seed, self.epoch])
        for phase in (int(rng.integers(self.window)), 0):  # a phase that leaves no whole window: start at 0
            counts = [max(0, (trained - 1 - phase) // self.window) for _, trained in self.spans]
            if sum(counts):
                break
        else:
            raise DataError(f"the training split holds {sum(t for _, t in self.spans)} tokens in "
                            f"{len(self.spans)} shard(s), none with {self.window + 1}: too few for one sequence of seq_len "
                            f"{self.window} and its targets; hold out fewer tokens, or use more text")
        self.phase, self.first_window = phase, np.cumsum([0] + counts)
        self.visit, self.cursor = rng.permutation(self.first_window[-1]), 0

    def _next_place(self) -> tuple[str, int]:
        """(shard, first token) of the next window in the visiting order, drawing the next epoch's order at its end."""
        if self.cursor == self.visit.size:
            self.epoch += 1
            self._draw_epoch()
        window = int(self.visit[self.cursor])
        self.cursor += 1
        shard = int(np.searchsorted(self.first_window, window, side="right")) - 1
        return self.spans[shard][0], self.phase + (window - int(self.first_window[shard])) * self.window

    def _read_window(self, path: str, start: int) -> np.ndarray:
        tokens = np.fromfile(path, dtype="<u2", count=self.window + 1, offset=HEADER_INTS * 4 + 2 * start)
        if tokens.size < self.window + 1:
            shard_length(path)  # a damaged shard: its error names the file and the size
            raise DataError(f"{path}: holds fewer tokens than when the run started (a shorter shard replaced it); "
                            "restore the data the run started with")
        if tokens.size and int(tokens.max()) >= self.vocab_size:
            raise DataError(f"{path}: token id {int(tokens.max())} >= vocab_size {self.vocab_size}; the shards were made "
                            "with another tokenizer: pass its vocab_size, or re-export the text")
        return tokens

    def next_batch(self, micro_tokens: int, seq_len: int, rank: int, world: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """One micro-step's (inputs, targets) of this rank: micro_tokens // seq_len rows of seq_len tokens."""
        if self.order == "sequential":
            span = self.take(world * micro_tokens + 1)  # one extra token so the last target exists ...
            self.position -= 1  # ... and is the next span's first input, so N ranks x 1 micro-step = 1 rank x N
            mine = span[rank * micro_tokens: (rank + 1) * micro_tokens + 1]
            rows = np.lib.stride_tricks.sliding_window_view(mine, seq_len + 1)[::seq_len]
        else:
            if seq_len > self.window:
                raise UsageError(f"sequences of {seq_len} tokens from a stream of {self.window}-token windows")
            per_window, n = self.window // seq_len, micro_tokens // seq_len
            places = [self._next_place() for _ in range(-(-world * n // per_window))]  # every rank's windows ...
            rows = []
            for w in range(rank * n // per_window, ((rank + 1) * n - 1) // per_window + 1):  # ... but it reads its own
                tokens = self._read_window(*places[w])
                rows += [tokens[i * seq_len:(i + 1) * seq_len + 1] for i in range(per_window)
                         if rank * n <= w * per_window + i < (rank + 1) * n]
        mine = host_to_device(np.stack(rows).astype(np.int32), device).long()
        return mine[:, :-1].contiguous(), mine[:, 1:].contiguous()

    def state(self) -> dict:
        spans = [[os.path.basename(path), trained] for path, trained in self.spans]
        return {"order": self.order, "shard_index": self.shard_index, "position": self.position, "epoch": self.epoch,
                "cursor": self.cursor, "spans": spans, "window": self.window, "seed": self.seed}

    def restore(self, state: dict) -> None:
        """Continue where a checkpoint's stream stopped, on the same training split (checkpoints since 2026-12-01)."""
        spans = self.state()["spans"]
        if state.get("spans", spans) != spans:
            raise DataError("the checkpoint trained on another split of the training shards (data_dir or "
                            "train_holdout_tokens changed since): resume with the config it was made with")
        if state.get("order", "sequential") != self.order:
            raise DataError(f"the checkpoint read the training shards in {state.get('order', 'sequential')} order, not "
                            f"{self.order}: resume with the train_order it was made with")
        if self.order == "shuffled" and (state["window"], state["seed"]) != (self.window, self.seed):
            raise DataError(f"the checkpoint drew {state['window']}-token windows from seed {state['seed']}, not "
                            f"{self.window} from seed {self.seed}: resume with the seq_len and seed it was made with")
        self.shard_index, self.position, self.epoch = state["shard_index"], state["position"], state["epoch"]
        if self.order == "sequential":
            self.tokens = self._load(self.shard_index)
        else:
            self._draw_epoch()
            if not 0 <= state["cursor"] <= self.visit.size:
                raise DataError(f"the checkpoint's position {state['cursor']} is past the epoch's {self.visit.size} "
                                "windows: it was made on other data")
            self.cursor = state["cursor"]


def load_val_tokens(data_dir: str, max_tokens: int = 0, vocab_size: int | None = None) -> torch.Tensor:
    """The validation tokens of a directory in shard order, the first max_tokens of them (0 = all), each checked
    against vocab_size when given; training never calls this."""
    tokens = np.concatenate([read_shard(p, vocab_size) for p in find_shards(data_dir, "val")])
    return torch.from_numpy((tokens[:max_tokens] if max_tokens else tokens).astype(np.int64))


def check_data(data_dir: str, tokenizer: str, splits: tuple[str, ...] = ("train", "val")) -> None:
    """What can be known about the data before any step: every shard of the splits whole and non-empty, a folder made by
    data/export.py made with this very tokenizer file (its export.json records the tokenizer's sha256). A
    sentencepiece model's size is checked against vocab_size by byte_tables, token ids by read_shard."""
    for path in [p for split in splits for p in find_shards(data_dir, split)]:
        if shard_length(path) == 0:
            raise DataError(f"{path}: the shard holds no tokens; delete it or re-export the folder")
    info_path = os.path.join(data_dir, "export.json")
    if not os.path.exists(info_path):
        return  # e.g. the challenge's own download: its tokenizer is checked by byte_tables and the token ids
    try:
        with open(info_path) as f:
            info = json.load(f)
        made_with = (info["tokenizer"], info["tokenizer_sha256"])
    except (ValueError, KeyError, TypeError):
        raise DataError(f"{info_path} is corrupt; re-export the folder with data/export.py") from None
    given = (tokenizer, None) if tokenizer == "bytes" else (tokenizer, files_sha256([tokenizer]))
    if (made_with[0] == "bytes") != (tokenizer == "bytes") or made_with[1] != given[1]:
        raise DataError(f"{data_dir} was exported with tokenizer {made_with[0]} (sha256 {made_with[1]}), not with "
                        f"{tokenizer}; pass the tokenizer it was made with, or re-export it with this one")


def load_sentencepiece(path: str):
    """A sentencepiece model file, loaded; a missing or foreign file is a DataError."""
    import sentencepiece as spm
    if not os.path.isfile(path):
        raise DataError(f"{path}: tokenizer model not found; download it with data/fineweb.py, "
                        "or use the byte-level tokenizer 'bytes'")
    try:
        return spm.SentencePieceProcessor(model_file=path)
    except (OSError, RuntimeError) as e:
        raise DataError(f"{path}: not a sentencepiece model ({e})") from None


def byte_tables(tokenizer: str, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token UTF-8 byte counts, counted the way the challenge counts them.

    Returns (base_bytes, leading_space, is_boundary). A token's bytes are base_bytes, plus one for a leading
    "▁" unless the previous token is a boundary (BOS/control). tokenizer="bytes" is byte-level: id = byte, 0 = BOS.
    """
    base = np.zeros(vocab_size, dtype=np.int64)
    space = np.zeros(vocab_size, dtype=bool)
    boundary = np.ones(vocab_size, dtype=bool)
    if tokenizer == "bytes":
        base[1:256], boundary[1:256] = 1, False
    else:
        sp = load_sentencepiece(tokenizer)
        if sp.vocab_size() != vocab_size:
            raise DataError(f"{tokenizer} has {sp.vocab_size()} pieces but vocab_size={vocab_size}; make them agree")
        for i in range(sp.vocab_size()):
            if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
                continue
            boundary[i] = False
            if sp.is_byte(i):
                base[i] = 1
                continue
            piece = sp.id_to_piece(i)
            space[i] = piece.startswith("\u2581")
            base[i] = len(piece.removeprefix("\u2581").encode("utf-8"))
    return torch.from_numpy(base), torch.from_numpy(space), torch.from_numpy(boundary)


def target_bytes(prev: torch.Tensor, target: torch.Tensor, tables) -> torch.Tensor:
    """UTF-8 bytes that each target token adds to the text, given the token before it."""
    base, space, boundary = (t.to(target.device) for t in tables)  # a no-op for tables already on that device
    return base[target] + (space[target] & ~boundary[prev]).long()


def host_to_device(array: np.ndarray, device) -> torch.Tensor:
    """A host array on the device without waiting for the GPU: on CUDA pinned, then copied asynchronously (a copy
    from pageable memory would first wait for everything queued on the GPU)."""
    t = torch.from_numpy(np.ascontiguousarray(array))
    return t.pin_memory().to(device, non_blocking=True) if torch.device(device).type == "cuda" else t.to(device)


# ---------------------------------------------------------------- artifact packing
ARTIFACT_MAGIC, ARTIFACT_FORMAT = b"PGOLF\x00", 4
HEADER_LIMIT = 1 << 20  # bytes the stored header may inflate to (a record's: ~20 kB): a hostile one cannot exhaust memory
PAYLOAD_LIMIT = 1 << 30  # bytes a payload may claim to inflate to (a 16 MB artifact's: ~30 MB)
LZMA_CHUNK = 4 << 20  # independent streams: compressed in parallel, and LZMA preset 9 is ~5x faster on 4 MiB than on 23 MiB
ARTIFACT_LIMIT = 16_000_000
HERE = os.path.dirname(os.path.abspath(__file__))
CODE_FILES = [os.path.join(HERE, "train_gpt.py"), os.path.join(HERE, "eval_ngram.py")]  # what an artifact needs
AUDIT_TOLERANCE = 1e-6  # largest |sum p - 1| an audited scoring distribution may show
AUDIT_MATCH_TOLERANCE = 1e-4  # largest |nll - (-log p[target])| in nats: float32 scoring vs the float64 audit


class ArtifactError(Exception):
    """A truncated, corrupt, foreign or oversized artifact."""


# A self-extracting script: its exact source, LZMA-compressed and base85-encoded (ASCII, so any byte count of the file
# agrees), run in the module's own namespace; linecache gets the source so tracebacks show the real lines.
SELF_EXTRACTING_HEAD = b"import base64,linecache,lzma;s=lzma.decompress(base64.b85decode(b'"
SELF_EXTRACTING_TAIL = (b"')).decode();linecache.cache[__file__]=(len(s),None,s.splitlines(True),__file__);"
                        b"exec(compile(s,__file__,'exec'))\n")


def self_extracting(source: bytes) -> bytes:
    """A runnable copy of a script in about a third of its bytes (the record folder's counted code)."""
    packed = lzma.compress(source, format=lzma.FORMAT_ALONE, preset=9 | lzma.PRESET_EXTREME)
    return SELF_EXTRACTING_HEAD + base64.b85encode(packed) + SELF_EXTRACTING_TAIL


def script_source(path: str) -> bytes:
    """The source a script runs: the file itself, or what a self-extracting copy unpacks to."""
    with open(path, "rb") as f:
        data = f.read()
    if data.startswith(SELF_EXTRACTING_HEAD):
        return lzma.decompress(base64.b85decode(data[len(SELF_EXTRACTING_HEAD):data.index(b"'", len(SELF_EXTRACTING_HEAD))]))
    return data


def code_size(self_extract: bool = False) -> int:
    """Bytes of code the challenge counts against the cap: the scripts an artifact needs, as they are or as the
    self-extracting copies a record folder carries when self_extract."""
    return sum(len(self_extracting(script_source(p))) if self_extract else os.path.getsize(p) for p in CODE_FILES)


def files_sha256(paths: list[str]) -> str:
    """sha256 of the files' bytes, one after the other (a self-extracting script hashes as the source it runs)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(script_source(path))
    return digest.hexdigest()


CLIP_RATIOS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.7)  # clipping outliers often lowers the error of the bulk


def round_rows(w: torch.Tensor, bits: int, sigmas: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row round-to-nearest at `bits`: (integer levels as float, fp16-representable scale [rows, 1]).
    The scale: with sigmas > 0, that many row RMS (the standard deviation of a zero-mean row; an offset row keeps its
    offset) over the largest level (SDClip, PR #1394: the grid step, not the bit width, sets how few bits the entropy
    coder needs per weight); else the row's absolute maximum times the clip ratio that gives the row the least
    squared error. Pure tensor ops, so QAT can call it inside a compiled forward."""
    w = w.float()
    qmax = 2 ** (bits - 1) - 1
    if sigmas > 0:
        scale = (w.square().mean(dim=1, keepdim=True).sqrt() * sigmas / qmax).half().float().clamp_min(2 ** -24)
        return torch.clamp(torch.round(w / scale), -qmax, qmax), scale
    absmax = w.abs().amax(dim=1, keepdim=True)
    best_q = best_scale = best_err = None
    for ratio in CLIP_RATIOS:
        scale = (absmax * ratio / qmax).half().float().clamp_min(2 ** -24)  # fp16 as stored; an all-zero row stays 0
        q = torch.clamp(torch.round(w / scale), -qmax, qmax)
        err = (q * scale - w).square().sum(dim=1, keepdim=True)
        if best_err is None:
            best_q, best_scale, best_err = q, scale, err
        else:
            better = err < best_err
            best_q = torch.where(better, q, best_q)
            best_scale = torch.where(better, scale, best_scale)
            best_err = torch.minimum(err, best_err)
    return best_q, best_scale


def quantize_rows(w: torch.Tensor, bits: int, sigmas: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """round_rows as stored: int8 levels and one fp16 scale per row."""
    q, scale = round_rows(w, bits, sigmas)
    return q.to(torch.int8), scale.squeeze(1).half()


def fake_quantize(w: torch.Tensor, bits: int, on: torch.Tensor, sigmas: float = 0.0) -> torch.Tensor:
    """QAT: `w` where on == 0, else the weight the artifact will hold (round_rows dequantized), with a straight-through
    gradient. `on` is a 0/1 tensor, so switching QAT on changes data, not the compiled graph."""
    with torch.no_grad():
        q, scale = round_rows(w, bits, sigmas)
        shown = torch.where(on > 0, (q * scale).to(w.dtype), w)
    return shown + (w - w.detach())  # exactly `shown` (w + (wq - w) could round), with the gradient of w


def gptq_rows(w: torch.Tensor, hessian: torch.Tensor, bits: int, sigmas: float = 0.0, block: int = 128,
              damp: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """Hessian-aware rounding (GPTQ): the scales of round_rows, then columns rounded one at a time in order of
    decreasing activation energy, each one's error pushed onto the columns not yet rounded through the Cholesky
    factor of the damped inverse Hessian (H = E[x x^T] of the layer's inputs), so the layer's output error
    ||X W^T - X Q^T|| rather than the weight error is what is kept small. Returns what quantize_rows returns."""
    w = w.float().clone()
    qmax = 2 ** (bits - 1) - 1
    scale = round_rows(w, bits, sigmas)[1]
    h = hessian.to(w.device, torch.float64).clone()  # float64: a Cholesky of a near-singular H in fp32 can fail
    dead = torch.diagonal(h) == 0  # inputs that never fire: their weights cannot matter
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    order = torch.argsort(torch.diagonal(h), descending=True)
    w, h = w[:, order], h[order][:, order]
    damping = torch.diagonal(h).mean() * torch.eye(len(h), device=h.device, dtype=h.dtype)
    for attempt in range(6):  # rounding can leave H indefinite: damp 10x harder until it factors
        factor, failed = torch.linalg.cholesky_ex(h + damp * 10 ** attempt * damping)
        if not failed:
            break
    else:
        raise ArtifactError("GPTQ: a layer's calibration Hessian will not factor (non-finite activations?)")
    u = torch.linalg.cholesky(torch.cholesky_inverse(factor), upper=True).float()
    q = torch.zeros_like(w)
    for start in range(0, w.shape[1], block):
        end = min(start + block, w.shape[1])
        errors = torch.zeros(w.shape[0], end - start, device=w.device)
        for i in range(start, end):
            column = w[:, i:i + 1]
            q[:, i:i + 1] = torch.clamp(torch.round(column / scale), -qmax, qmax)
            error = (column - q[:, i:i + 1] * scale) / u[i, i]
            w[:, i:end] -= error * u[i:i + 1, i:end]
            errors[:, i - start:i - start + 1] = error
        w[:, end:] -= errors @ u[start:end, end:]
    q = q[:, torch.argsort(order)]
    return q.to(torch.int8), scale.squeeze(1).half()


@torch.no_grad()
def collect_hessians(model: torch.nn.Module, batches, names: list[str], device) -> dict[str, torch.Tensor]:
    """E[x x^T] of the inputs of the weights called names ("<linear module>.weight"), over calibration batches
    (x, y) of TRAINING tokens; forward hooks add each call's inputs, so a module called twice counts twice. With no
    names (a model too small to pack any matrix) no batch is drawn and nothing runs."""
    if not names:
        return {}
    sums = {name: None for name in names}
    counts = dict.fromkeys(names, 0)

    def hook(name):
        def add(module, inputs):
            x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).float()
            with torch.autocast(x.device.type, enabled=False):  # a bf16 x^T x is not even positive semi-definite
                sums[name] = x.T @ x if sums[name] is None else sums[name] + x.T @ x
            counts[name] += x.shape[0]
        return add
    handles = [model.get_submodule(n.removesuffix(".weight")).register_forward_pre_hook(hook(n)) for n in names]
    try:
        with autocast(device):
            for x, y in batches:
                model(x, y)
    finally:
        for handle in handles:
            handle.remove()
    return {n: sums[n] / max(counts[n], 1) for n in names if sums[n] is not None}


def pack_artifact(state: dict[str, torch.Tensor], meta: dict, quant_bits: dict[str, int],
                  tables: dict[str, bytes] | None = None, hessians: dict[str, torch.Tensor] | None = None,
                  clip_sigmas: dict[str, float] | None = None) -> bytes:
    """Serialize tensors as our own byte format: LZMA'd header JSON + compressed payload + raw tables (already
    compressed).

    Tensors named in quant_bits are stored as per-row int8 (values limited to that many bits, which the entropy
    coder then squeezes) on the grid round_rows picks (clip_sigmas: per name, 0 or absent = absmax), rounded with
    gptq_rows where `hessians` has their input Hessian, else to nearest; every other tensor is stored as fp16. The
    payload holds every tensor's quantized levels first, then the side data (fp16 row scales, fp16 tensors), each
    section coded on its own: scales amid the levels cost the levels' Huffman tables ~77 kB on trained 11-layer
    weights. No pickle anywhere, so loading executes nothing.
    """
    index, levels, side, n_levels, n_side = [], [], [], 0, 0
    hessians, clip_sigmas = hessians or {}, clip_sigmas or {}
    for name, tensor in state.items():
        tensor = tensor.detach()
        entry = {"name": name, "shape": list(tensor.shape)}
        if name in quant_bits:
            rows = tensor.reshape(tensor.shape[0], -1)
            bits, sigmas = quant_bits[name], clip_sigmas.get(name, 0.0)
            q, scale = (gptq_rows(rows, hessians[name], bits, sigmas) if name in hessians else
                        quantize_rows(rows, bits, sigmas))
            levels.append(q.cpu().numpy().tobytes())
            side.append(scale.cpu().numpy().tobytes())
            entry.update(kind="int8_rows", offset=n_levels, nbytes=len(levels[-1]), scale_offset=n_side)
            n_levels, n_side = n_levels + len(levels[-1]), n_side + len(side[-1])
        else:
            side.append(tensor.cpu().to(torch.float16).numpy().tobytes())
            entry.update(kind="fp16", offset=n_side, nbytes=len(side[-1]))
            n_side += len(side[-1])
        index.append(entry)
    for entry in index:  # side data follows all levels
        entry["scale_offset" if entry["kind"] == "int8_rows" else "offset"] += n_levels
    pieces = [raw[i:i + LZMA_CHUNK] for raw in (b"".join(levels), b"".join(side)) for i in range(0, len(raw), LZMA_CHUNK)]
    with ThreadPoolExecutor(os.cpu_count()) as pool:  # lzma and zlib release the GIL while they compress
        streams = list(pool.map(compress_stream, pieces))
    tables = tables or {}
    header = lzma.compress(json.dumps({"format": ARTIFACT_FORMAT, "meta": meta, "tensors": index,
                                       "payload_raw": n_levels + n_side, "payload_streams": [[codec, len(s)] for codec, s in streams],
                                       "tables": {k: len(v) for k, v in tables.items()}}).encode(), preset=9)
    return b"".join([ARTIFACT_MAGIC, struct.pack("<I", len(header)), header, *(s for _, s in streams), *tables.values()])


def artifact_parts(state: dict[str, torch.Tensor], quant_bits: dict[str, int], basis_seeds: dict[str, int],
                   frozen_weights: int) -> str:
    """Artifact bytes by part before entropy coding, as pack_artifact lays them out (int8 rows + fp16 row scales,
    else fp16), and what random bases cost: their seeds, never their weights."""
    parts = dict.fromkeys(("adapters", "row_scales", "other"), 0)
    for name, t in state.items():
        part = "adapters" if name.endswith(("lora_a", "lora_b")) else "row_scales" if name.endswith("row_scale") else "other"
        parts[part] += t.numel() + 2 * t.shape[0] if name in quant_bits else 2 * t.numel()
    return (f"artifact parts raw_bytes: seeds={8 * len(basis_seeds)} ({len(basis_seeds)} x 8 bytes, "
            f"{len(json.dumps(basis_seeds))} as header JSON) " + " ".join(f"{k}={v}" for k, v in parts.items()) +
            f" frozen_bases=0 ({frozen_weights:,} weights regenerated at load, not stored)")


def compress_stream(data: bytes) -> tuple[str, bytes]:
    """The smaller of deflate's Huffman stage alone, which codes quantized levels within ~1% of their order-0
    entropy (their bytes hold no repeats for LZMA's matching, which costs ~3% there), and LZMA (fp16 tensors)."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, 15, 9, zlib.Z_HUFFMAN_ONLY)  # zlib framing: an Adler-32 check
    huffman = deflate.compress(data) + deflate.flush()
    packed = lzma.compress(data, preset=9)
    return ("huffman", huffman) if len(huffman) <= len(packed) else ("lzma", packed)


STREAM_CODECS = {"lzma": lzma.LZMADecompressor, "huffman": zlib.decompressobj}  # codec name -> its decompressor


def decompress_stream(codec: str, data: bytes, max_length: int) -> bytes:
    """Inverse of compress_stream, bounded by max_length so that a hostile blob cannot exhaust memory."""
    try:
        decompressor = STREAM_CODECS[codec]()
        piece = decompressor.decompress(data, max_length)
    except (KeyError, lzma.LZMAError, zlib.error):
        raise ArtifactError(f"artifact payload is corrupt ({codec} stream failed)") from None
    if not decompressor.eof or decompressor.unused_data:
        raise ArtifactError("artifact payload stream is truncated or padded")
    return piece


TENSOR_BYTES = {  # kind -> (levels bytes, side bytes) of a stored tensor of that shape (None: it cannot have the kind)
    "int8_rows": lambda shape: (math.prod(shape), 2 * shape[0]) if shape else None,  # int8 levels; fp16 row scales
    "fp16": lambda shape: (0, 2 * math.prod(shape)),
}


def check_header(header, stored_bytes: int) -> None:
    """Every field of an artifact header has the right type and agrees with the others and with the stored_bytes
    that follow the header, before anything is decompressed or allocated; ArtifactError naming the field if not."""
    def need(ok: bool, what: str) -> None:
        if not ok:
            raise ArtifactError(f"artifact header is corrupt: {what}; re-pack it with train_gpt.py")
    is_count = lambda v: type(v) is int and v >= 0  # noqa: E731 (JSON true/false are no counts)
    need(isinstance(header, dict) and {"format", "meta", "tensors", "payload_raw", "payload_streams", "tables"} <= set(header),
         "fields are missing")
    if header["format"] != ARTIFACT_FORMAT:
        raise ArtifactError(f"artifact format {header['format']} is not {ARTIFACT_FORMAT}; use the matching code")
    need(isinstance(header["meta"], dict) and isinstance(header["meta"].get("config"), dict), "no config in meta")
    streams, tables = header["payload_streams"], header["tables"]
    need(is_count(header["payload_raw"]) and header["payload_raw"] <= PAYLOAD_LIMIT, "payload sizes are not byte counts "
         f"of at most {PAYLOAD_LIMIT}")
    need(isinstance(streams, list) and all(isinstance(st, list) and len(st) == 2 and isinstance(st[0], str) and
                                           st[0] in STREAM_CODECS and is_count(st[1]) for st in streams),
         "payload streams are not [codec, bytes] pairs")
    stream_sizes = [size for _, size in streams]
    need(isinstance(tables, dict) and all(map(is_count, tables.values())), "table sizes are not byte counts")
    if stored_bytes != sum(stream_sizes) + sum(tables.values()):
        raise ArtifactError(f"artifact has {stored_bytes} bytes after its header, the header promises "
                            f"{sum(stream_sizes) + sum(tables.values())}: truncated or padded")
    need(isinstance(header["tensors"], list), "the tensor index is not a list")
    names, sizes = set(), []
    for entry in header["tensors"]:
        need(isinstance(entry, dict) and isinstance(entry.get("name"), str) and entry["name"] not in names,
             "a tensor without a name, or a name twice")
        name, shape, kind = entry["name"], entry.get("shape"), entry.get("kind")
        names.add(name)
        need(isinstance(kind, str) and kind in TENSOR_BYTES, f"tensor {name} has unknown kind {kind!r}")  # JSON lists do not hash
        need(isinstance(shape, list) and all(is_count(d) and d > 0 for d in shape), f"tensor {name} has shape {shape!r}")
        sizes.append(TENSOR_BYTES[kind](shape))
        need(sizes[-1] is not None, f"tensor {name} cannot be stored as {kind} with shape {shape}")
    levels_at = 0
    side_at = sum(levels for levels, _ in sizes)  # the layout pack_artifact writes: all levels, then the side data
    for entry, (levels, side) in zip(header["tensors"], sizes):
        placed = [entry.get(k) for k in ("offset", "nbytes", "scale_offset")[:3 if entry["kind"] == "int8_rows" else 2]]
        at = all(map(is_count, placed)) and placed == ([levels_at, levels, side_at] if entry["kind"] == "int8_rows" else [side_at, side])
        need(at, f"tensor {entry['name']}'s offset or size disagrees with its shape {entry['shape']}")
        levels_at, side_at = levels_at + levels, side_at + side
    need(side_at == header["payload_raw"], f"its tensors hold {side_at} bytes but the payload {header['payload_raw']}")


def read_header(blob: bytes) -> tuple[object, int]:
    """(the artifact's header JSON as stored, unchecked; where its payload starts)."""
    if blob[:len(ARTIFACT_MAGIC)] != ARTIFACT_MAGIC:
        raise ArtifactError("not a parameter-golf artifact (bad magic bytes)")
    start = len(ARTIFACT_MAGIC) + 4
    if len(blob) < start:
        raise ArtifactError("artifact is truncated inside its header")
    (header_len,) = struct.unpack("<I", blob[len(ARTIFACT_MAGIC):start])
    try:
        decompressor = lzma.LZMADecompressor()
        text = decompressor.decompress(blob[start:start + header_len], HEADER_LIMIT)
        if not decompressor.eof or decompressor.unused_data:
            raise lzma.LZMAError("truncated, padded or too large")
        return json.loads(text.decode()), start + header_len
    except (lzma.LZMAError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        try:  # formats before 4 stored their header as plain JSON
            older = json.loads(blob[start:start + header_len].decode()).get("format")
        except (UnicodeDecodeError, json.JSONDecodeError, AttributeError, RecursionError):
            older = None
        if older is not None and older != ARTIFACT_FORMAT:
            raise ArtifactError(f"artifact format {older} is not {ARTIFACT_FORMAT}: older code packed it; evaluate it with "
                                "the train_gpt.py and eval_ngram.py of its record folder") from None
        raise ArtifactError("artifact header is truncated or corrupt") from None


def unpack_artifact(blob: bytes) -> tuple[dict[str, torch.Tensor], dict, dict[str, bytes]]:
    """Inverse of pack_artifact: (float32 tensors, meta, tables). Any inconsistency is an ArtifactError."""
    header, offset = read_header(blob)
    check_header(header, len(blob) - offset)
    raw_size, pieces = header["payload_raw"], []
    for codec, size in header["payload_streams"]:
        # at least 1: zlib reads a max_length of 0 as no limit, after a stream that overshot the header's size by 1
        pieces.append(decompress_stream(codec, blob[offset:offset + size], max(raw_size, 0) + 1))
        offset, raw_size = offset + size, raw_size - len(pieces[-1])
    payload = b"".join(pieces)
    if len(payload) != header["payload_raw"]:
        raise ArtifactError("artifact payload size does not match its header")
    state = {}
    for entry in header["tensors"]:
        shape, raw = entry["shape"], payload[entry["offset"]:entry["offset"] + entry["nbytes"]]
        if entry["kind"] == "int8_rows":
            q = torch.frombuffer(bytearray(raw), dtype=torch.int8).float().reshape(shape[0], -1)
            scales = payload[entry["scale_offset"]:entry["scale_offset"] + 2 * shape[0]]
            state[entry["name"]] = (q * torch.frombuffer(bytearray(scales), dtype=torch.float16).float()[:, None]).reshape(shape)
        else:
            state[entry["name"]] = torch.frombuffer(bytearray(raw), dtype=torch.float16).float().reshape(shape)
    tables = {}
    for name, size in header["tables"].items():
        tables[name], offset = blob[offset:offset + size], offset + size
    return state, header["meta"], tables


def save_artifact(path: str, blob: bytes) -> None:
    """Write the artifact whole or not at all; when that fails, the packed weights go to the temp folder and the
    error says where, so a full disk or a vanished folder never throws a trained model away."""
    try:
        write_atomic(path, blob)
    except OSError as error:
        rescue = os.path.join(tempfile.gettempdir(), f"artifact_{os.getpid()}.pgolf")
        try:
            write_atomic(rescue, blob)
            saved = f"the packed weights were saved to {rescue} instead"
        except OSError:
            saved = f"and could not be saved to {rescue} either"
        raise OSError(error.errno, f"{error.strerror}; {saved}", error.filename) from None


def check_artifact_size(artifact_bytes: int, code_bytes: int, limit: int = ARTIFACT_LIMIT) -> int:
    """Total counted bytes; raises ArtifactError when code + artifact is over the challenge's cap."""
    total = artifact_bytes + code_bytes
    if total > limit:
        raise ArtifactError(f"artifact {artifact_bytes} + code {code_bytes} = {total} bytes is "
                            f"{total - limit} over the {limit}-byte cap; shrink the model or lower quant_bits")
    return total


# ---- random bases (non-record PR #2058): frozen orthogonal matrices regenerated from 8-byte seeds, never stored
def splitmix64(seed: int, n: int) -> np.ndarray:
    """n pseudo-random 64-bit words from `seed` by plain integer arithmetic: the same on every machine and library
    version (torch's and numpy's generators promise no stable stream across versions)."""
    z = np.arange(1, n + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(seed % 2**64)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def basis_seed(seed: int, name: str) -> int:
    """A matrix's 63-bit (8-byte) basis seed, derived from the run seed and the module name."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{name}".encode()).digest()[:8], "little") >> 1


def basis_sha256(model: torch.nn.Module, names) -> str:
    """Digest of the named modules' regenerated bases, so a loading process proves it rebuilt exactly what was trained."""
    digest = hashlib.sha256()
    for name in names:
        digest.update(model.get_submodule(name).weight.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


def semi_orthogonal(rows: int, cols: int, seed: int) -> torch.Tensor:
    """A random rows x cols matrix with orthonormal rows (rows <= cols) or columns, bit-identical everywhere.

    With n = max(rows, cols) and b the largest power of two dividing n (b >= 16), it is the first min(rows, cols)
    columns (transposed when rows < cols) of the n x n orthogonal matrix prod_r (I_{n/b} (x) H_b) P_r D_r / b^(rounds/2):
    random signs D, random permutations P (which mix the n/b Hadamard blocks) and unnormalized Walsh-Hadamard
    butterflies H. Until the one final scaling every value is an integer below 2^53 held in float64, so each step is
    exact whatever the order of operations, thread count, BLAS or device; the scaling and the cast to fp32 are single
    correctly-rounded operations.
    """
    n, m = max(rows, cols), min(rows, cols)
    block = min(n & -n, 1 << 13)
    bits = block.bit_length() - 1
    rounds = max(3, -(-(n.bit_length() - 1) // bits) + 1)  # enough rounds that every output mixes every input
    if block < 16 or bits * rounds > 52:  # 52: the largest integer reached, b^rounds, must stay exact in float64
        raise UsageError(f"random_bases: a {rows}x{cols} matrix needs its larger side divisible by 16")
    x = np.eye(n, m)  # numpy, not torch: single-threaded, so it stays fast on a busy CPU
    for r in range(rounds):
        words = splitmix64(seed * 2 * rounds + 2 * r, n), splitmix64(seed * 2 * rounds + 2 * r + 1, n)
        signs = 1.0 - 2.0 * (words[0] >> np.uint64(63)).astype(np.float64)
        x = (signs[:, None] * x)[np.argsort(words[1], kind="stable")]
        h = 1
        while h < block:  # in-place butterflies (a, b) -> (a + b, a - b) on every block of b rows
            a, b = x.reshape(n // (2 * h), 2, h, m).transpose(1, 0, 2, 3)
            total = a + b
            np.subtract(a, b, out=b)
            a[...] = total
            h *= 2
    x = x * 2.0 ** -(bits * rounds // 2) * (math.sqrt(0.5) if bits * rounds % 2 else 1.0)
    return torch.from_numpy(x if rows >= cols else x.T).float().contiguous()


# ---------------------------------------------------------------- training state: rolling checkpoints
def checkpoint_paths(folder: str, rank: int) -> list[str]:
    """current, prev, prev2: newest first; each rank has its own, as the ranks' RNG streams differ."""
    return [os.path.join(folder, f"checkpoint_{n}{f'.rank{rank}' if rank else ''}.pt") for n in ("current", "prev", "prev2")]


def rng_states() -> dict:
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state() if torch.cuda.is_initialized() else None,
            "numpy": [torch.from_numpy(keys.view(np.uint8).copy()), pos, has_gauss, gauss], "python": random.getstate()}


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] is not None and torch.cuda.is_initialized():
        torch.cuda.set_rng_state(states["cuda"])
    keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state(("MT19937", keys.numpy().view(np.uint32), pos, has_gauss, gauss))
    random.setstate(states["python"])


def save_checkpoint(folder: str, state: dict, rank: int, log) -> str:
    """Write to a temp file, then rotate current -> prev -> prev2 and rename the temp file to current; each
    step is an atomic rename, so a kill at any moment leaves every existing checkpoint whole."""
    started = time.perf_counter()
    os.makedirs(folder, exist_ok=True)
    paths = checkpoint_paths(folder, rank)
    torch.save(state, paths[0] + ".tmp")  # no fsync: after a machine crash, a torn current falls back to prev
    for newer, older in zip(paths[1::-1], paths[:0:-1]):  # prev -> prev2, then current -> prev
        if os.path.exists(newer):
            os.replace(newer, older)
    os.replace(paths[0] + ".tmp", paths[0])
    log(f"checkpoint saved path={paths[0]} bytes={os.path.getsize(paths[0])} seconds={time.perf_counter() - started:.2f}")
    return paths[0]


def load_checkpoint(cfg, folder: str, rank: int, log) -> dict | None:
    """resume=PATH loads that file; resume=auto the newest of current/prev/prev2 that reads back whole (None if none)."""
    paths = checkpoint_paths(folder, rank) if cfg.resume == "auto" else [
        cfg.resume if rank == 0 else cfg.resume.removesuffix(".pt") + f".rank{rank}.pt"]
    for path in filter(os.path.exists, paths):
        try:
            return torch.load(path, map_location="cpu", weights_only=True) | {"path": path}
        except Exception as error:  # truncated or corrupt (any unpickling or zip error)
            log(f"warning: checkpoint {path} is unreadable ({type(error).__name__}); trying the previous one")
    if cfg.resume != "auto":
        raise DataError(f"resume={cfg.resume}: no readable checkpoint there; pass a checkpoint_*.pt or resume=auto")
    return None


def record_folder(cfg, preset: str) -> str:
    """records_dir/track/<date>_<run name>, suffixed if taken."""
    name = cfg.run_name or f"{preset}_seed{cfg.seed}"
    return unused_path(os.path.join(cfg.records_dir, cfg.track, f"{datetime.date.today().isoformat()}_{name}"))


def write_record(folder: str, cfg, preset: str, result: dict, facts: dict, hardware: str, argv: list[str],
                 world: int) -> None:
    """A training run's record files (cfg: train_gpt's Config), all or none (the artifact and log stay either way),
    submission.json last: a folder is a record once it has one."""
    submission = {"author": cfg.author, "github_id": cfg.github_id, "name": os.path.basename(folder),
                  "blurb": f"preset {preset}: {cfg.num_layers}x{cfg.model_dim} GQA {cfg.num_heads}/{cfg.num_kv_heads}, "
                           f"{facts['steps']} steps in {facts['train_time_s']:.0f} s, int{cfg.quant_bits} artifact",
                  "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  "val_loss": result["val_loss"], "val_bpb": result["val_bpb"], "bytes_total": result["bytes_total"],
                  "bytes_code": result["bytes_code"], "config": dataclasses.asdict(cfg), "preset": preset,
                  "hardware": hardware, "seed": cfg.seed, "train_time_s": facts["train_time_s"],
                  "eval_time_s": result["eval_time_s"], "eval_budget_steps": result.get("budget_steps", []),
                  "steps": facts["steps"], "tokens_per_s": facts["tok_s"],
                  "peak_mem_mib": facts["peak_mem_mib"], "mfu": facts["mfu"], "ngram_order": cfg.ngram_order,
                  "packing_loss": facts["packing_loss"],  # held-out training text, network alone
                  "egt": facts["egt"]}  # wake/sleep history (critic accuracy, fraction in band, time) or None
    overrides = " ".join(a for a in argv if "=" in a)
    launcher = f"torchrun --standalone --nproc_per_node={world}" if world > 1 else "python"
    command = f"{launcher} {os.path.join(folder, 'train_gpt.py')} --preset {preset} {overrides}".strip()
    sources = {os.path.basename(p): script_source(p) for p in CODE_FILES}
    files = {name: self_extracting(source) if cfg.self_extracting_code else source
             for name, source in sources.items()} | {
        "config.json": json.dumps(dataclasses.asdict(cfg), indent=2),
        "loss_curve.svg": loss_curve_svg(facts["losses"], f"train loss, {os.path.basename(folder)}"),
        "README.md": f"# {os.path.basename(folder)}\n\nval_bpb **{result['val_bpb']:.4f}** (val_loss {result['val_loss']:.4f}), "
                     f"{result['bytes_total']:,} bytes in total ({result['bytes_code']:,} of code), {facts['steps']} steps in "
                     f"{facts['train_time_s']:.1f} s on {hardware}; evaluation {result['eval_time_s']:.1f} s.\n\n"
                     f"Reproduce with the scripts copied here, from the repository root (no environment variables):"
                     f"\n\n```\n{command}\n```\n\n"
                     f"`config.json` is the full resolved config; `train_seed{cfg.seed}.log` the log; `loss_curve.svg` the curve.\n",
        "submission.json": json.dumps(submission, indent=2)}
    try:
        write_all_or_none(folder, files)
    except OSError as error:
        raise OSError(error.errno, f"{error.strerror}; no record was written (val_bpb={result['val_bpb']:.6f}), the "
                                   f"artifact stays at {os.path.join(folder, 'artifact.pgolf')}", error.filename) from None


def loss_curve_svg(losses: list[tuple[int, float]], title: str) -> str:
    """A dependency-free SVG line plot of train loss against step."""
    w, h, pad, losses = 640, 360, 48, losses or [(0, 0.0)]
    steps, values = [s for s, _ in losses], [v for _, v in losses]
    s0, s1, v0, v1 = min(steps), max(steps) or 1, min(values), max(values)
    sx = lambda s: pad + (w - 2 * pad) * (s - s0) / max(s1 - s0, 1)
    sy = lambda v: h - pad - (h - 2 * pad) * (v - v0) / max(v1 - v0, 1e-9)
    points = " ".join(f"{sx(s):.1f},{sy(v):.1f}" for s, v in losses)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">'
            f'<rect width="{w}" height="{h}" fill="white"/><text x="{pad}" y="24">{title}</text>'
            f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="black"/>'
            f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="black"/>'
            f'<text x="{pad}" y="{h - 16}">step {s0}</text><text x="{w - pad - 60}" y="{h - 16}">step {s1}</text>'
            f'<text x="4" y="{pad}">{v1:.3f}</text><text x="4" y="{h - pad}">{v0:.3f}</text>'
            f'<polyline fill="none" stroke="steelblue" stroke-width="2" points="{points}"/></svg>')


# ---------------------------------------------------------------- sliding-window evaluation
def autocast(device) -> torch.autocast:
    """bf16 autocast on CUDA; on any other device a no-op, so CPU runs stay in fp32."""
    device = torch.device(device)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def model_logits(model, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """model.forward_logits(x) under autocast for x's device: (logits [B, L, V], aux)."""
    with autocast(x.device):
        return model.forward_logits(x)


def compile_graph(fn):
    """torch.compile as training and evaluation use it: one graph, static shapes, and inductor's mix-order reduction
    off (torch 2.11 asserted in FusedMixOrderReductions compiling the record's backward on an H200)."""
    if hasattr(torch._inductor.config.triton, "mix_order_reduction"):
        torch._inductor.config.triton.mix_order_reduction = False
    return torch.compile(fn, dynamic=False, fullgraph=True)


def compiled_logits(model, batch_windows: int):
    """model_logits through one compiled graph: a batch of fewer windows is padded to batch_windows rows (copies of
    its last window, dropped from the output) and every batch is contiguous, so each forward has the shape and
    strides the graph was compiled for."""
    graph = compile_graph(model.forward_logits)

    def forward(x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        n = x.shape[0]
        padded = torch.cat([x, x[-1:].expand(batch_windows - n, -1)]) if n < batch_windows else x.contiguous()
        with autocast(x.device):
            logits, aux = graph(padded)
        return logits[:n], {k: v[:n] for k, v in aux.items()}
    return forward


def sliding_windows(n_tokens: int, seq_len: int, stride: int) -> list[tuple[int, int, int]]:
    """Windows (start, lo, hi) over a token stream: inputs tokens[start:start+L], scored targets tokens[lo:hi]
    (sliding-window evaluation: PR #50).

    The first window scores all its targets; each later one slides by `stride` and scores only the targets
    no earlier window scored, so every target 1..n-1 is scored exactly once with up to L-stride tokens of context.
    """
    if n_tokens < 2:
        raise DataError("need at least 2 validation tokens to score anything")
    if not 0 < stride <= seq_len:
        raise ValueError(f"stride must be in 1..seq_len ({seq_len}), got {stride}")
    length = min(seq_len, n_tokens - 1)
    his = list(range(length + 1, n_tokens, stride)) + [n_tokens]
    los = [1] + his[:-1]
    return [(hi - 1 - length, lo, hi) for lo, hi in zip(los, his)]


def score_chunks(items: list[tuple], chunk_tokens: int, targets=lambda window: window[2] - window[1]) -> list[list[tuple]]:
    """Consecutive items (sliding windows (start, lo, hi), or documents with another `targets` count) grouped so each
    group scores at least chunk_tokens targets (score-first unit)."""
    chunks, current, count = [], [], 0
    for item in items:
        current.append(item)
        count += targets(item)
        if count >= chunk_tokens:
            chunks.append(current)
            current, count = [], 0
    return chunks + ([current] if current else [])


class Tally:
    """What every scorer sums: NLL (of the model alone, or mixed with the n-gram cache) and bytes of each scored
    target, and the audit: at about `audit` evenly spaced positions the whole scoring distribution must sum to 1
    and give the target the probability it was scored with."""

    def __init__(self, tokens: torch.Tensor, tables, mixer, audit: int, device):
        self.tokens, self.tables, self.mixer, self.device = tokens, tables, mixer, device
        self.audit_every = max(1, (tokens.numel() - 1) // audit) if audit else 0
        self.sums = torch.zeros(2, dtype=torch.float64, device=device)  # nll, bytes
        self.audit_stats = torch.zeros(2, dtype=torch.float64, device=device)  # max |sum p - 1|, max mismatch
        self.n_targets = self.n_audited = 0

    def add(self, logits: torch.Tensor, aux: dict, positions: torch.Tensor, places: np.ndarray) -> None:
        """Score targets tokens[positions] (places: the same positions on the host) from logits [N, V] (float)."""
        targets = self.tokens[positions]
        if self.mixer is None:
            nll = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
        else:
            nll = self.mixer.nll(logits, targets, positions, aux)
        picked_host = np.flatnonzero(places % self.audit_every == 0) if self.audit_every else places[:0]
        if picked_host.size:
            picked = host_to_device(picked_host, self.device)
            distribution = (torch.softmax(logits[picked].double(), -1) if self.mixer is None else self.mixer.mixed_distribution(
                logits[picked], positions[picked], {k: v[picked] for k, v in aux.items()}))
            self.audit_stats = torch.maximum(self.audit_stats, audit_errors(distribution, targets[picked], nll[picked]))
            self.n_audited += picked_host.size
        self.sums += torch.stack([nll.sum().double(), target_bytes(self.tokens[positions - 1], targets, self.tables).sum().double()])
        self.n_targets += places.size

    def result(self, world: int, eval_time_s: float, budget_steps: list[str]) -> dict:
        sums = torch.cat([self.sums, torch.tensor([self.n_targets, self.n_audited], dtype=torch.float64, device=self.device)])
        audit_stats = self.audit_stats.clone()
        if world > 1:
            torch.distributed.all_reduce(sums)
            torch.distributed.all_reduce(audit_stats, op=torch.distributed.ReduceOp.MAX)
        nll, n_bytes, n_targets, n_audited = sums.tolist()
        return {"val_loss": nll / n_targets, "val_bpb": nll / math.log(2) / n_bytes, "targets": int(n_targets),
                "bytes": int(n_bytes), "eval_time_s": eval_time_s, "budget_steps": budget_steps,
                "audit_max_err": audit_stats[0].item(), "audit_max_mismatch": audit_stats[1].item(),
                "audit_count": int(n_audited)}


def note_budget_step(budget_steps: list[str], step: str, target: int, projected: float, budget_s: float, log) -> None:
    """Record (and log as `eval budget: ...`) a cheaper way an evaluation takes from `target` on to end in time."""
    budget_steps.append(f"{step} from target {target} (projected {projected:.0f} s > eval_budget_s {budget_s:g})")
    if log:
        log(f"eval budget: {budget_steps[-1]}")


def projected_end(budget_s: float, elapsed: float, chunk_seconds: float, chunk_targets: int, remaining: int,
                  world: int, device) -> float:
    """Seconds an evaluation will have taken at the last chunk's pace when that passes budget_s, else 0 (the
    slowest rank's clock decides, so every rank takes the same cheaper step)."""
    if budget_s <= 0 or remaining <= 0:
        return 0.0
    elapsed, pace = (all_reduce_max(v, world, device) for v in (elapsed, chunk_seconds / max(1, chunk_targets)))
    projected = elapsed + pace * remaining
    return projected if projected > budget_s else 0.0


@torch.no_grad()
def evaluate(forward_logits, tokens: torch.Tensor, tables, seq_len: int, stride: int, *, batch_windows: int,
             chunk_tokens: int, mixer=None, learners=(), audit: int = 0, rank: int = 0, world: int = 1,
             device="cpu", log=None, budget_s: float = 0.0, clock=time.perf_counter) -> dict:
    """Score every target of `tokens` with sliding windows; returns val_loss (nats/token) and val_bpb.

    forward_logits(x[B, L]) -> (logits[B, L, V], aux{name: [B, L]}). Validation is walked in chunks: each chunk
    is scored by all ranks (window i of the chunk on rank i % world) before `mixer.observe` and every learner's
    `observe(start, end)` may learn from it, so nothing is ever scored by something that has seen it.
    audit=K checks that the full scoring distribution sums to 1 at about K evenly spaced positions.
    budget_s > 0: when the time so far plus the rest at the last chunk's pace would pass budget_s (the challenge
    allows 600 s), the rest is scored cheaper: first without the learners (the mixer stays), then at twice the
    stride, again as needed (less context per target; every target is still scored once). Each step is logged
    and listed in the result's "budget_steps".
    """
    chunks = score_chunks(sliding_windows(tokens.numel(), seq_len, stride), chunk_tokens)
    learners, budget_steps = list(learners), []
    tokens_dev = tokens.to(device)
    tally = Tally(tokens_dev, tuple(t.to(device) for t in tables), mixer, audit, device)
    length = min(seq_len, tokens.numel() - 1)
    offsets = torch.arange(length + 1, device=device)  # window j reads tokens[start + j]
    started = chunk_started = clock()
    chunk_index = -1
    while chunk_index + 1 < len(chunks):
        chunk_index += 1
        chunk = chunks[chunk_index]
        mine = chunk[rank::world]
        for b in range(0, len(mine), batch_windows):
            batch = mine[b:b + batch_windows]
            # Which logits score which targets is known on the host: no device-side masks, no syncs per batch.
            # Window i predicts target p (lo <= p < hi) from its row i, column p - start - 1.
            row = np.concatenate([np.full(hi - lo, i) for i, (_, lo, hi) in enumerate(batch)])
            places = np.concatenate([np.arange(lo, hi) for _, lo, hi in batch])
            starts_host = np.array([start for start, _, _ in batch])
            starts, positions, flat = host_to_device(np.concatenate(
                [starts_host, places, row * length + places - starts_host[row] - 1]), device).split([len(batch), places.size, places.size])
            grid = tokens_dev[starts[:, None] + offsets]
            logits, aux = forward_logits(grid[:, :-1])
            tally.add(logits.flatten(0, 1).index_select(0, flat).float(),
                      {k: v.flatten(0, 1).index_select(0, flat).float() for k, v in aux.items()}, positions, places)
        lo, hi = chunk[0][1], chunk[-1][2]
        if chunk_index < len(chunks) - 1:  # nothing is scored after the last chunk: learning from it is waste
            for learner in ([mixer] if mixer is not None else []) + learners:
                learner.observe(lo, hi)
        if log and (chunk_index + 1) % max(1, len(chunks) // 10) == 0:
            log(f"eval chunk={chunk_index + 1}/{len(chunks)} scored_to={hi} elapsed_s={clock() - started:.1f}")
        now = clock()
        projected = chunk_index > 0 and projected_end(  # the first chunk's pace holds compilation
            budget_s, now - started, now - chunk_started, hi - lo, tokens.numel() - hi, world, device)
        if projected and (learners or stride < length):
            if learners:
                learners, step = [], "learners stopped"
            else:
                stride = min(length, 2 * stride)
                tail = [(start, max(w_lo, hi), w_hi) for start, w_lo, w_hi in sliding_windows(tokens.numel(), seq_len, stride) if w_hi > hi]
                chunks, step = chunks[:chunk_index + 1] + score_chunks(tail, chunk_tokens), f"stride {stride}"
            note_budget_step(budget_steps, step, hi, projected, budget_s, log)
        chunk_started = now
    return tally.result(world, clock() - started, budget_steps)


def audit_errors(distribution: torch.Tensor, targets: torch.Tensor, nll: torch.Tensor) -> torch.Tensor:
    """[max |sum p - 1| (inf if any p is negative or not finite), max |nll - (-log p[target])| in nats]: the
    distributions must be proper, and each target must have been scored with its own distribution's entry (a
    scorer that peeks at the target gives it a probability its distribution does not)."""
    proper = bool(torch.isfinite(distribution).all() and (distribution >= 0).all())
    sum_err = (distribution.sum(-1) - 1).abs().max() if proper else torch.tensor(math.inf, device=distribution.device)
    mismatch = (nll.double() + distribution.gather(1, targets[:, None]).squeeze(1).log()).abs().max()
    return torch.nan_to_num(torch.stack([sum_err.double(), mismatch.double()]), nan=math.inf, posinf=math.inf)


# ---------------------------------------------------------------- n-gram mixture (score-first)
# (Interpolated Witten-Bell backoff, Witten & Bell 1991. Unlike the hashed caches the challenge ruled out in
# PR #720's review, the mixture is a distribution over the whole vocabulary before the target is looked at.)
# A cache of n-gram counts learns from validation tokens only after they have been scored, and is mixed into
# the neural distribution by interpolated backoff. With p_1 = softmax(logits), for orders n = 2..N, counts
# c(v) of each continuation v of the context (the n-1 tokens before the target) and their total C = sum_v c(v):
#     p_n(v) = (1 - lam_n) p_{n-1}(v) + lam_n c(v) / C,     lam_n = gate_n * C / (C + beta * D)
# where D is the number of distinct continuations seen (Witten-Bell) and gate_n in (0, 1) is a sigmoid of what
# is known before the target: the order, the model's entropy and the pre-enrichment change. Each step mixes
# two distributions that sum to 1 over the whole vocabulary, so every p_n does: normalized by construction.
# Counts are exact per (context, next token); context totals are kept as exactly the sum of those counts.
# With `recent` = w > 0, the n-grams of the chunk being scored that end before the target (already scored, in the
# order of the text) join the counts with weight w: c = c_observed + w c_recent, C likewise, D counts the
# continuations new to both; C is still the sum of c, so the mixture stays normalized, and nothing at or after
# the target is read. w = 1 is the sequential cache, as if it learned after every token.
# Only the context is hashed (to 63 - log2(V) bits, so hash * V + token fits an int64 key): a collision
# merges two contexts into one whose counts still sum to its total.
# Tables are sorted int64 keys searched with torch.searchsorted; updates are sort-based merges with integer
# sums, so every rank that observes the same tokens holds bit-identical tables.

# Chosen with records/tune_mix.py on the 262,144 held-out training tokens of a `record` run, never on validation
# tokens (records/bench/2026-12-01_shuffled_order_h200): gate_bias -7 beat -6 by 0.005 bpb there, at the edge of
# that grid; the other weights are the values of 2026-11-26, which that grid kept. recent 1 (the sequential cache) beat
# 0 by 0.0081 bpb on the held-out tail in document order of a 300 s `record` run, with 2-step TTT, where the grid
# also kept gate_bias -7; order 9 added 0.0016 more, under the 0.002 bar (records/bench/2026-12-02_pair300s_ordered).
MIX_DEFAULTS = {
    "beta": 1.0,          # Witten-Bell: pseudo-count per distinct continuation given to the lower order
    "gate_bias": -7.0,    # gate logit at order 2 for a model with zero entropy
    "gate_order": 0.75,   # added per order above 2: longer matches are more specific
    "gate_entropy": 0.5,  # per nat of model entropy: an unsure model leans on the cache
    "gate_enrich": 0.0,   # per unit of pre-enrichment change (aux["enrich_delta"]); 0 ignores it
    "recent": 1.0,        # weight of the n-grams of the chunk being scored that end before the target: 0 = the
                          # cache learns after each chunk only, 1 = the sequential cache (every scored token at once)
}
_HASH_MULT = 0x9E3779B97F4A7C15 - (1 << 64)  # odd 64-bit constants as signed int64; torch wraps on overflow
_MIX_MULT = 0xBF58476D1CE4E5B9 - (1 << 64)


def _shift_right(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's >> copies the sign bit)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def context_hash_bits(vocab_size: int) -> int:
    """Bits of a context hash such that hash * vocab_size + token < 2**63."""
    return 63 - max(vocab_size - 1, 1).bit_length()


def context_hashes(tokens: torch.Tensor, positions: torch.Tensor, max_context: int, bits: int,
                   row_length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Hashes of the 1..max_context tokens before each position of a 1-D token sequence.

    Returns (hashes, valid), both [max_context, len(positions)]; row k-1 is the context of length k, valid
    where that many tokens precede the position (within its row when the sequence is rows of row_length).
    """
    positions = positions.long()
    offset = positions if row_length is None else positions % row_length
    h = torch.zeros_like(positions)
    hashes = []
    for k in range(1, max_context + 1):
        h = (h ^ (tokens[(positions - k).clamp(min=0)] + 1)) * _HASH_MULT
        x = (h ^ _shift_right(h, 31)) * _MIX_MULT  # finalizer: every output bit depends on every token
        hashes.append(_shift_right(x ^ _shift_right(x, 29), 64 - bits))
    depth = torch.arange(1, max_context + 1, device=positions.device)
    return torch.stack(hashes), offset >= depth[:, None]


def _lookup(keys: torch.Tensor, values: list[torch.Tensor], queries: torch.Tensor) -> list[torch.Tensor]:
    """values at each query's key in a sorted table, 0 where the key is absent."""
    if len(keys) == 0:
        return [torch.zeros(queries.shape, dtype=v.dtype, device=queries.device) for v in values]
    at = torch.searchsorted(keys, queries).clamp(max=len(keys) - 1)
    hit = keys[at] == queries
    return [torch.where(hit, v[at], 0) for v in values]


def _merge_add(keys: torch.Tensor, values: list[torch.Tensor], new_keys: torch.Tensor,
               new_values: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """Add new_values (sorted unique new_keys) into a sorted table, inserting unseen keys in place.

    Costs one pass over the table instead of a re-sort. Returns (keys, values, fresh) where fresh marks
    the new_keys that were not in the table before.
    """
    at = torch.searchsorted(keys, new_keys)
    fresh = torch.ones_like(new_keys, dtype=torch.bool)
    if len(keys):
        fresh = keys[at.clamp(max=len(keys) - 1)] != new_keys
    found = at[~fresh]
    for value, add in zip(values, new_values):
        value[found] += add[~fresh].to(value.dtype)  # found positions are distinct: no accumulation order
    n_fresh = int(fresh.sum())
    if n_fresh == 0:
        return keys, values, fresh
    dest = at[fresh] + torch.arange(n_fresh, device=keys.device)
    is_old = torch.ones(len(keys) + n_fresh, dtype=torch.bool, device=keys.device)
    is_old[dest] = False
    old_dest = is_old.nonzero().squeeze(1)  # once for all columns of the table
    merged = []
    for old, add in zip([keys, *values], [new_keys, *new_values]):
        out = torch.empty(len(is_old), dtype=old.dtype, device=old.device)
        out[dest] = add[fresh].to(old.dtype)
        out[old_dest] = old
        merged.append(out)
    return merged[0], merged[1:], fresh


def _unique_sum(keys: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sorted unique keys, their summed counts, and for each the index of its first occurrence in keys."""
    keys, order = torch.sort(keys, stable=True)
    first = torch.ones_like(keys, dtype=torch.bool)
    first[1:] = keys[1:] != keys[:-1]
    group = torch.cumsum(first, 0) - 1
    sums = torch.zeros(int(first.sum()), dtype=counts.dtype, device=keys.device)
    sums.index_add_(0, group, counts[order])  # integer sums: the same on every device and run
    return keys[first], sums, order[first]


def _combine_ngrams(parts: list[tuple]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One sorted table from several (keys, counts, grams) parts, counts of equal keys summed."""
    keys, counts, grams = (torch.cat(column) for column in zip(*parts))
    keys, counts, first = _unique_sum(keys, counts)
    return keys, counts, grams[first]


def entropy_of(logp: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of each row of log-probabilities [N, V] (float32, as the gates read it)."""
    return -(logp.exp() * logp).sum(-1)


def model_side(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What the mixture reads of the model: log p_model(target) and the model's entropy, both float32."""
    logp = torch.log_softmax(logits.float(), -1)
    return logp.gather(1, targets[:, None]).squeeze(1), entropy_of(logp)


def check_mix(options: dict[str, float]) -> None:
    """Raise UsageError unless every key is a MIX_DEFAULTS key and every value one the mixture stays normalized with."""
    unknown = set(options) - set(MIX_DEFAULTS)
    if unknown:
        raise UsageError(f"unknown n-gram weighting option(s) {sorted(unknown)}; known: {sorted(MIX_DEFAULTS)}")
    bad = {k: v for k, v in options.items() if not math.isfinite(v) or (k == "beta" and v <= 0) or (k == "recent" and v < 0)}
    if bad:  # beta <= 0 can push lam past 1 (negative probabilities) or to 1 (zero ones), a negative recent weight
        # counts below zero; inf/nan gates are no gates
        raise UsageError(f"n-gram weighting {bad}: every option must be finite, beta > 0 and recent >= 0")


class NGramMixer:
    """Score-first n-gram cache over a validation sequence, mixed into the model's distribution.

    nll() scores positions with the counts observed so far; observe() then adds the n-grams ending at
    scored positions. Weighting options are the keys of MIX_DEFAULTS.
    """

    def __init__(self, val_tokens: torch.Tensor, order: int, vocab_size: int, device,
                 prior: NGramCounts | None = None, **weighting_options):
        check_mix(weighting_options)
        if order < 2:
            raise UsageError(f"n-gram order {order} must be at least 2 (or evaluate with --no-ngram)")
        self.tokens = val_tokens.to(device=device, dtype=torch.long)
        if len(self.tokens) and (int(self.tokens.min()) < 0 or int(self.tokens.max()) >= vocab_size):
            raise ValueError(f"validation tokens fall outside the vocabulary of {vocab_size}")
        self.order, self.vocab_size, self.device = order, vocab_size, torch.device(device)
        self.bits, self.observed_to = context_hash_bits(vocab_size), 0
        self.weights = {**MIX_DEFAULTS, **weighting_options}
        self.chunk_span, self.recent_built = 0, None  # _recent's tables, kept until the next observe()
        empty = lambda dtype: torch.zeros(0, dtype=dtype, device=self.device)
        # per order n: pairs (context hash * V + token -> count), contexts (hash -> total, distinct)
        self.pairs = {n: (empty(torch.long), [empty(torch.int32)]) for n in range(2, order + 1)}
        self.contexts = {n: (empty(torch.long), [empty(torch.long), empty(torch.int32)]) for n in range(2, order + 1)}
        if prior is not None:
            if prior.vocab_size != vocab_size:
                raise ValueError(f"n-gram prior has vocab {prior.vocab_size}, the model {vocab_size}")
            for n in range(2, min(order, prior.order) + 1):
                keys, counts = prior.table(n)
                self._add_pairs(n, keys.to(self.device), counts.to(self.device))

    def _add_pairs(self, n: int, keys: torch.Tensor, counts: torch.Tensor) -> None:
        """Add counts of (context, token) keys of order n; contexts get the same sums, so totals stay exact."""
        keys, counts, _ = _unique_sum(keys, counts)
        pair_keys, pair_values = self.pairs[n]
        pair_keys, pair_values, fresh = _merge_add(pair_keys, pair_values, keys, [counts])
        self.pairs[n] = (pair_keys, pair_values)
        contexts = keys // self.vocab_size  # sorted, since keys are sorted and token < vocab_size
        first = torch.ones_like(contexts, dtype=torch.bool)
        first[1:] = contexts[1:] != contexts[:-1]
        group = torch.cumsum(first, 0) - 1
        totals = torch.zeros(int(first.sum()), dtype=torch.long, device=self.device).index_add_(0, group, counts)
        distinct = torch.zeros_like(totals).index_add_(0, group, fresh.long())
        ctx_keys, ctx_values = self.contexts[n]
        ctx_keys, ctx_values, _ = _merge_add(ctx_keys, ctx_values, contexts[first], [totals, distinct])
        self.contexts[n] = (ctx_keys, ctx_values)

    def observe(self, start: int, end: int) -> None:
        """Add the n-grams whose last token is at val_tokens[start:end] (all of them already scored)."""
        if not 0 <= start <= end <= len(self.tokens):
            raise ValueError(f"observe({start}, {end}) is outside the {len(self.tokens)} validation tokens")
        self.observed_to, self.chunk_span, self.recent_built = max(self.observed_to, end), end - start, None
        positions = torch.arange(start, end, device=self.device)
        hashes, valid = context_hashes(self.tokens, positions, self.order - 1, self.bits)
        targets = self.tokens[positions]
        for n in range(2, self.order + 1):
            keys = hashes[n - 2][valid[n - 2]] * self.vocab_size + targets[valid[n - 2]]
            self._add_pairs(n, keys, torch.ones_like(keys))

    def _mixing(self, entropy: torch.Tensor, positions: torch.Tensor, aux: dict):
        """Per order: (context hashes, lam, context total, recent pairs or None), from nothing but what precedes each
        target; recent pairs count (hash * V + token) keys at the offsets before a position (_Occurrences)."""
        w = self.weights
        gate_logit = w["gate_bias"] + w["gate_entropy"] * entropy.double()
        if w["gate_enrich"]:
            if "enrich_delta" not in aux:
                raise ValueError("gate_enrich is set but the model gave no enrich_delta (it has no pre-enrichment)")
            gate_logit = gate_logit + w["gate_enrich"] * aux["enrich_delta"].double()
        positions = positions.to(self.device)
        hashes, valid = context_hashes(self.tokens, positions, self.order - 1, self.bits)
        recent = self._recent(positions) if w["recent"] and len(positions) else {}
        for n in range(2, self.order + 1):
            ctx_keys, ctx_values = self.contexts[n]
            total, distinct = (v.double() for v in _lookup(ctx_keys, ctx_values, hashes[n - 2]))
            pairs = None
            if n in recent:
                pairs, contexts = recent[n]
                seen, fresh = contexts.before(hashes[n - 2], positions - self.observed_to)
                total, distinct = total + w["recent"] * seen, distinct + fresh
            total = torch.where(valid[n - 2], total, 0)
            gate = torch.sigmoid(gate_logit + w["gate_order"] * (n - 2))
            lam = gate * total / (total + w["beta"] * distinct).clamp(min=1e-300)
            yield n, hashes[n - 2], lam, torch.where(total > 0, total, 1), pairs

    def _recent(self, positions: torch.Tensor) -> dict[int, tuple[_Occurrences, _Occurrences]]:
        """Per order, the n-grams ending in [observed_to, hi): (pairs, contexts weighted by whether the pair is new
        to the observed counts), each queried at a position's offset for what lies strictly before it, so n-grams
        at or after a position never count for it, however far hi reaches. hi covers the batch's last position and
        as many tokens as the last observe() added: the tables are built once per chunk, not once per batch (on 8
        GPUs each rank would otherwise rebuild them for each of its batches), until the next observe()."""
        lo, needed = self.observed_to, int(positions.max()) + 1
        if int(positions.min()) < lo:
            raise ValueError(f"position {int(positions.min())} was observed already (up to {lo}): score before observing")
        if self.recent_built is None or self.recent_built[0] < needed:
            hi = min(len(self.tokens), max(needed, lo + self.chunk_span))
            self.recent_built = (hi, self._recent_tables(lo, hi))
        return self.recent_built[1]

    def _recent_tables(self, lo: int, hi: int) -> dict[int, tuple[_Occurrences, _Occurrences]]:
        span = torch.arange(lo, hi, device=self.device)
        hashes, valid = context_hashes(self.tokens, span, self.order - 1, self.bits)
        recent = {}
        for n in range(2, self.order + 1):
            ok = valid[n - 2]
            offsets, contexts = span[ok] - lo, hashes[n - 2][ok]
            pair_keys = contexts * self.vocab_size + self.tokens[span[ok]]
            pairs = _Occurrences(pair_keys, offsets, hi - lo)
            (observed,) = _lookup(*self.pairs[n], pair_keys)
            recent[n] = pairs, _Occurrences(contexts, offsets, hi - lo, weights=pairs.first & (observed == 0))
        return recent

    def _count(self, n: int, keys: torch.Tensor, pairs, offsets: torch.Tensor) -> torch.Tensor:
        """c(v) of (context hash * V + token) keys: observed counts plus `recent` x those before each offset."""
        (count,) = _lookup(*self.pairs[n], keys)
        if pairs is None:
            return count.double()
        return count.double() + self.weights["recent"] * pairs.before(keys, offsets)[0]

    def nll(self, logits: torch.Tensor, targets: torch.Tensor, positions: torch.Tensor, aux: dict) -> torch.Tensor:
        """-log p(target) in nats under the mixed distribution (float64). Targets only select the value."""
        return self.target_nll(*model_side(logits, targets.to(self.device)), targets.to(self.device), positions, aux)

    def target_nll(self, logp_target: torch.Tensor, entropy: torch.Tensor, targets: torch.Tensor, positions: torch.Tensor,
                   aux: dict) -> torch.Tensor:
        """nll() from what it reads of the model: log p_model(target) and the model's entropy (model_side)."""
        prob = logp_target.double().exp()
        offsets = positions.to(self.device) - self.observed_to
        for n, context, lam, total, pairs in self._mixing(entropy, positions, aux):
            prob = (1 - lam) * prob + lam * self._count(n, context * self.vocab_size + targets, pairs, offsets) / total
        return -prob.log()

    def mixed_distribution(self, logits: torch.Tensor, positions: torch.Tensor, aux: dict) -> torch.Tensor:
        """The whole mixed distribution [N, V] (float64): the same mixture as nll, for every token."""
        prob = torch.softmax(logits.double(), -1)
        every_token = torch.arange(self.vocab_size, device=self.device)
        offsets = (positions.to(self.device) - self.observed_to)[:, None].expand(-1, self.vocab_size)
        for n, context, lam, total, pairs in self._mixing(entropy_of(torch.log_softmax(logits.float(), -1)), positions, aux):
            counts = self._count(n, context[:, None] * self.vocab_size + every_token, pairs, offsets)
            prob = (1 - lam[:, None]) * prob + lam[:, None] * counts / total[:, None]
        return prob


class _Occurrences:
    """Keys met at increasing offsets of a span of `span` positions: for a query key and offset, how many of them
    equal the key at offsets strictly before it, and the sum of a 0/1 weight over those."""

    def __init__(self, keys: torch.Tensor, offsets: torch.Tensor, span: int, weights: torch.Tensor | None = None):
        order = torch.sort(keys, stable=True).indices  # equal keys stay in offset order
        self.keys, group, sizes = torch.unique_consecutive(keys[order], return_inverse=True, return_counts=True)
        self.starts, self.stride = torch.cumsum(sizes, 0) - sizes, span + 1
        self.sorted = group * self.stride + offsets[order]  # ascending: by key, then by offset
        self.first = torch.zeros_like(keys, dtype=torch.bool)
        self.first[order[self.starts]] = True  # each key's first occurrence in the span
        counted = torch.zeros(1, dtype=torch.long, device=keys.device)
        self.cumulative = None if weights is None else torch.cat([counted, torch.cumsum(weights[order].long(), 0)])

    def before(self, queries: torch.Tensor, offsets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if len(self.keys) == 0:
            zero = torch.zeros(queries.shape, dtype=torch.float64, device=queries.device)
            return zero, zero
        at = torch.searchsorted(self.keys, queries).clamp(max=len(self.keys) - 1)
        hit = self.keys[at] == queries
        end = torch.searchsorted(self.sorted, at * self.stride + offsets)
        start = self.starts[at]
        count = torch.where(hit, end - start, 0).double()
        weighted = None if self.cumulative is None else torch.where(hit, self.cumulative[end] - self.cumulative[start], 0).double()
        return count, weighted


class MixerTrace:
    """Stands in for the mixer during one scoring pass: scores with the model alone and keeps what a mixer reads of
    the model (each target's log-probability and the model's entropy, aux) and when it would have observed. replay()
    then gives exactly the nll a real NGramMixer of any order and weights would have summed in that pass: test-time
    training learns from tokens, never from the mixture, so the model's side of a pass is the same for every mixer
    setting, and one pass serves a whole grid of them. One device, one rank."""

    def __init__(self):
        self.steps: list[tuple] = []

    def nll(self, logits: torch.Tensor, targets: torch.Tensor, positions: torch.Tensor, aux: dict) -> torch.Tensor:
        logp_target, entropy = model_side(logits, targets)
        self.steps.append((positions, targets, logp_target, entropy, aux))
        return -logp_target.double()

    def mixed_distribution(self, logits: torch.Tensor, positions: torch.Tensor, aux: dict) -> torch.Tensor:
        return torch.softmax(logits.double(), -1)

    def observe(self, start: int, end: int) -> None:
        self.steps.append((start, end))

    def replay(self, tokens: torch.Tensor, order: int, vocab_size: int, prior: NGramCounts | None = None,
               **weighting_options) -> float:
        """Total nll (nats) of the pass mixed by NGramMixer(tokens, order, ..., **weighting_options), summed as
        Tally sums it (float64, batch by batch), so it equals that mixer's own pass to the last bit."""
        device = next((step[0].device for step in self.steps if len(step) != 2), torch.device("cpu"))
        mixer = NGramMixer(tokens, order, vocab_size, device, prior=prior, **weighting_options)
        total = torch.zeros((), dtype=torch.float64, device=device)
        for step in self.steps:
            if len(step) == 2:
                mixer.observe(*step)
            else:
                positions, targets, logp_target, entropy, aux = step
                total += mixer.target_nll(logp_target, entropy, targets, positions, aux).sum().double()
        return total.item()


# Training-time counts: every rank counts the n-grams of the batches it trained on, within a memory bound
# (lowest counts are dropped when a table outgrows max_entries), then all-reduces and packs them. The packed
# form stores the n-grams' tokens, not hashes: sorted token columns compress well and stay valid if the hash
# ever changes. Counts are 16-bit minifloats (exact below 4096, < 0.025% error up to 1.3e8).
NGRAM_MAGIC, NGRAM_FORMAT = b"NGRAMCNT", 1
_COUNT_STEPS = np.array([1 << b for b in range(12, 27)], dtype=np.int64)


def encode_counts(counts: np.ndarray) -> np.ndarray:
    """int counts >= 1 -> uint16 codes: exact below 4096, then 12 significant bits per power of two."""
    counts = np.minimum(counts.astype(np.int64), (1 << 27) - 1)
    band = np.searchsorted(_COUNT_STEPS, counts, side="right")
    shift = np.maximum(band - 1, 0)
    mantissa = np.where(band > 0, (counts >> shift) - 4096, counts)
    return ((band << 12) | mantissa).astype("<u2")


def decode_counts(codes: np.ndarray) -> np.ndarray:
    codes = codes.astype(np.int64)
    band, mantissa = codes >> 12, codes & 4095
    return np.where(band > 0, (4096 + mantissa) << np.maximum(band - 1, 0), mantissa)


class NGramCounts:
    """Counts of the n-grams (orders 2..order) seen in training, for NGramMixer's prior."""

    def __init__(self, order: int, vocab_size: int, device, max_entries: int = 1 << 21):
        if order < 2 or not 2 <= vocab_size <= 1 << 16:
            raise ValueError(f"n-gram counts need order >= 2 and a vocabulary of 2..65536 (got {order}, {vocab_size})")
        self.order, self.vocab_size, self.device = order, vocab_size, torch.device(device)
        self.bits, self.max_entries = context_hash_bits(vocab_size), max_entries
        # per order n: sorted keys (context hash * V + token), counts, and the n tokens of each n-gram
        empty = torch.zeros(0, dtype=torch.long, device=self.device)
        self.tables = {n: (empty, empty, torch.zeros(0, n, dtype=torch.int32, device=self.device))
                       for n in range(2, order + 1)}
        self.pending = {n: [] for n in range(2, order + 1)}

    def add(self, tokens: torch.Tensor) -> None:
        """Count the n-grams inside each row of a [B, T] batch."""
        tokens = tokens.to(device=self.device, dtype=torch.long)
        flat = tokens.reshape(-1)
        positions = torch.arange(len(flat), device=self.device)
        hashes, valid = context_hashes(flat, positions, self.order - 1, self.bits, row_length=tokens.shape[-1])
        for n in range(2, self.order + 1):
            ends = positions[valid[n - 2]]
            keys = hashes[n - 2][valid[n - 2]] * self.vocab_size + flat[ends]
            grams = flat[ends[:, None] + torch.arange(1 - n, 1, device=self.device)].int()
            self.pending[n].append(_combine_ngrams([(keys, torch.ones_like(keys), grams)]))
            if sum(len(part[0]) for part in self.pending[n]) > self.max_entries:
                self._flush(n)

    def _flush(self, n: int) -> None:
        """Fold pending batches into the table; past max_entries keep the highest counts (ties: lower key)."""
        if self.pending[n]:
            self.tables[n] = _combine_ngrams([self.tables[n], *self.pending[n]])
            self.pending[n] = []
        keys, counts, grams = self.tables[n]
        if len(keys) > self.max_entries:
            keep = torch.sort(counts, descending=True, stable=True).indices[:self.max_entries].sort().values
            self.tables[n] = keys[keep], counts[keep], grams[keep]

    def table(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(sorted keys, counts) of order n, everything added so far."""
        self._flush(n)
        return self.tables[n][:2]

    def num_entries(self) -> int:
        return sum(len(self.table(n)[0]) for n in self.tables)

    def all_reduce(self) -> None:
        """Sum the counts of all ranks (when torch.distributed is initialized); the same result on each."""
        for n in self.tables:
            self._flush(n)
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return
        world = torch.distributed.get_world_size()
        for n in self.tables:
            size = torch.tensor([len(self.tables[n][0])], device=self.device)
            sizes = [torch.zeros_like(size) for _ in range(world)]
            torch.distributed.all_gather(sizes, size)
            longest = int(max(sizes))
            gathered = []
            for column in self.tables[n]:
                padded = torch.zeros((longest, *column.shape[1:]), dtype=column.dtype, device=self.device)
                padded[:len(column)] = column
                parts = [torch.zeros_like(padded) for _ in range(world)]
                torch.distributed.all_gather(parts, padded)
                gathered.append([part[:int(s)] for part, s in zip(parts, sizes)])
            self.tables[n] = _combine_ngrams(list(zip(*gathered)))

    def _serialize(self, keep: dict[int, np.ndarray]) -> bytes:
        header = struct.pack(f"<IB{self.order - 1}I", self.vocab_size, self.order, *(len(keep[n]) for n in keep))
        body = []
        for n, rows in keep.items():
            _, counts, grams = (c.cpu().numpy() for c in self.tables[n])
            grams, counts = grams[rows], counts[rows]
            lexical = np.lexsort(grams.T[::-1])  # sorted token columns: long runs that LZMA squeezes
            body += [grams[lexical].T.astype("<u2").tobytes(), encode_counts(counts[lexical]).tobytes()]
        payload = lzma.compress(header + b"".join(body), preset=9)
        return NGRAM_MAGIC + struct.pack("<H", NGRAM_FORMAT) + payload

    def to_bytes(self, max_bytes: int) -> bytes:
        """Packed counts of at most max_bytes: the lowest counts (higher orders first on ties) are dropped."""
        counts = torch.cat([self.table(n)[1] for n in self.tables]).cpu()
        order_of = torch.cat([torch.full((len(self.tables[n][0]),), n) for n in self.tables]).numpy()
        row_of = torch.cat([torch.arange(len(self.tables[n][0])) for n in self.tables]).numpy()
        ranking = torch.sort(counts, descending=True, stable=True).indices.numpy()

        def pack_top(keep_total: int) -> bytes:
            kept = ranking[:keep_total]
            return self._serialize({n: np.sort(row_of[kept][order_of[kept] == n]) for n in self.tables})

        # LZMA is slow, so size the table from a first guess of a few bytes per entry, then shrink until it fits
        keep_total = min(len(ranking), max_bytes // 2)
        blob = pack_top(keep_total)
        if len(blob) <= max_bytes and keep_total < len(ranking):
            keep_total = min(len(ranking), int(keep_total * 0.98 * max_bytes / len(blob)))
            blob = pack_top(keep_total)
        while len(blob) > max_bytes:
            if keep_total == 0:
                raise ValueError(f"max_bytes={max_bytes} cannot hold even an empty n-gram table ({len(blob)} bytes)")
            keep_total = int(keep_total * min(0.97, 0.99 * max_bytes / len(blob)))
            blob = pack_top(keep_total)
        return blob

    @classmethod
    def from_bytes(cls, blob: bytes, device) -> NGramCounts:
        """Inverse of to_bytes; anything truncated, corrupt or foreign is an ArtifactError."""
        start = len(NGRAM_MAGIC) + 2
        if blob[:len(NGRAM_MAGIC)] != NGRAM_MAGIC or len(blob) < start:
            raise ArtifactError("n-gram table is not an NGramCounts blob (bad magic); re-pack the artifact")
        (version,) = struct.unpack("<H", blob[len(NGRAM_MAGIC):start])
        if version != NGRAM_FORMAT:
            raise ArtifactError(f"n-gram table format {version} is not {NGRAM_FORMAT}; use the code that packed it")
        try:
            decompressor = lzma.LZMADecompressor()  # bounded, so a hostile blob cannot exhaust memory
            payload = decompressor.decompress(blob[start:], max_length=256 * len(blob) + (1 << 20))
            vocab_size, order = struct.unpack("<IB", payload[:5])
            sizes = struct.unpack(f"<{order - 1}I", payload[5:5 + 4 * (order - 1)])
        except (lzma.LZMAError, struct.error):
            raise ArtifactError("n-gram table is truncated or corrupt; re-pack the artifact") from None
        expected = 5 + 4 * (order - 1) + sum(2 * (n + 1) * m for n, m in zip(range(2, order + 1), sizes))
        if order < 2 or not 2 <= vocab_size <= 1 << 16 or len(payload) != expected or not decompressor.eof:
            raise ArtifactError("n-gram table is truncated or corrupt (sizes disagree with its header); re-pack it")
        counts_table = cls(order, vocab_size, device, max_entries=max(max(sizes), 1 << 21))
        offset = 5 + 4 * (order - 1)
        for n, m in zip(range(2, order + 1), sizes):
            grams = np.frombuffer(payload, "<u2", n * m, offset).reshape(n, m).T.astype(np.int64)
            counts = decode_counts(np.frombuffer(payload, "<u2", m, offset + 2 * n * m))
            offset += 2 * (n + 1) * m
            if m and (grams.max() >= vocab_size or counts.min() < 1):
                raise ArtifactError("n-gram table holds tokens outside its vocabulary or zero counts; re-pack it")
            grams = torch.from_numpy(grams).to(counts_table.device)
            ends = torch.arange(m, device=grams.device) * n + n - 1  # each row read as a sequence of its own
            hashes, _ = context_hashes(grams.reshape(-1), ends, n - 1, counts_table.bits)
            keys = hashes[n - 2] * vocab_size + grams[:, -1]
            counts_table.tables[n] = _combine_ngrams([(keys, torch.from_numpy(counts).to(grams.device), grams.int())])
        return counts_table


# ---------------------------------------------------------------- sampling
def top_p_filter(probs: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter: keep the smallest set of most probable tokens whose probability reaches p, renormalized."""
    if p >= 1.0:
        return probs
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    needed = (sorted_probs.cumsum(-1) - sorted_probs) < p  # the more probable tokens alone do not reach p yet
    kept = probs * torch.zeros_like(needed).scatter(-1, order, needed)
    return kept / kept.sum(-1, keepdim=True)


def blocked_tokens(tokens: list[int], n: int) -> set[int]:
    """Tokens that would complete an n-gram already in `tokens` (n <= 0 blocks nothing, n = 1 every seen token)."""
    if n <= 0 or len(tokens) < n - 1:
        return set()
    prefix = tokens[len(tokens) - n + 1:]
    return {tokens[i + n - 1] for i in range(len(tokens) - n + 1) if tokens[i:i + n - 1] == prefix}


@torch.no_grad()
def generate(model, prompt: list[int], max_new_tokens: int, *, temperature: float = 1.0, top_p: float = 1.0,
             no_repeat_ngram: int = 0, seed: int = 0, stop_token: int | None = None) -> list[int]:
    """Continue `prompt` one token at a time (temperature 0 = greedy) until max_new_tokens or stop_token."""
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)  # draws happen on the CPU: the same seed, the same tokens
    tokens = list(prompt)
    for _ in range(max_new_tokens):
        x = torch.tensor([tokens[-model.cfg.seq_len:]], device=device)
        logits = model_logits(model, x)[0][0, -1].float().cpu()
        logits[list(blocked_tokens(tokens, no_repeat_ngram))] = -math.inf
        if torch.isinf(logits).all():
            break  # every token would repeat an n-gram
        if temperature <= 0:
            token = int(logits.argmax())
        else:
            token = int(torch.multinomial(top_p_filter(torch.softmax(logits / temperature, -1), top_p), 1, generator=generator))
        if token == stop_token:
            break
        tokens.append(token)
    return tokens[len(prompt):]


def text_codec(tokenizer: str):
    """(encode, decode, bos_id) for 'bytes' (id = UTF-8 byte value, 0 = BOS) or a sentencepiece model file."""
    if tokenizer == "bytes":
        return (lambda text: [b for b in text.encode("utf-8") if b],
                lambda ids: bytes(i for i in ids if 0 < i < 256).decode("utf-8", errors="replace"), 0)
    sp = load_sentencepiece(tokenizer)
    return sp.encode, sp.decode, sp.bos_id()


def sample_text(model, prompt: str, tokenizer: str, **options) -> str:
    """The text a model writes after `prompt` (which starts a document, as in training)."""
    encode, decode, bos = text_codec(tokenizer)
    ids = [bos] + encode(prompt)
    head, full = decode(ids), decode(ids + generate(model, ids, stop_token=bos, **options))
    return full[len(head):] if full.startswith(head) else full  # decoded whole, so a split character stays whole


# ---------------------------------------------------------------- test-time training (score-first)
def all_reduce_(tensors: list[torch.Tensor], world: int, average: bool = False) -> None:
    """Sum (average=True: average) tensors in place over all ranks in one flat all-reduce: gradients, so that every
    rank takes the same step (test-time training here, EGT's sleep in train_gpt.py), or GPTQ's Hessians (none when a
    model is too small to have packed matrices: every rank then has none)."""
    if world == 1 or not tensors:
        return
    flat = torch.cat([t.flatten() for t in tensors])
    torch.distributed.all_reduce(flat)
    if average:
        flat /= world
    for t, reduced in zip(tensors, flat.split([t.numel() for t in tensors])):
        t.copy_(reduced.view_as(t))


def all_reduce_max(value: float, world: int, device) -> float:
    if world == 1:
        return value
    t = torch.tensor(value, device=device, dtype=torch.float64)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return t.item()


class AgreedClock:
    """Training seconds as all ranks agree (the max of their clocks), so schedule and stop match on every rank.
    Reading an all-reduce each step would make the host wait for the GPU each step (the GPU idles while the next
    batch is read), so each step's all-reduce is read one step later, on CUDA through a pinned copy and an event,
    and extrapolated by a step: the shorter of the last two (one slow step is not counted twice), never going back."""

    def __init__(self, world: int, device):
        self.world, self.device, self.cuda, self.sent = world, device, torch.device(device).type == "cuda", None
        self.agreed, self.steps, self.reading = None, (0.0, 0.0), 0.0
        if self.cuda and world > 1:
            self.host, self.done = torch.zeros((), dtype=torch.float64).pin_memory(), torch.cuda.Event()

    def __call__(self, local: float) -> float:
        if self.world == 1:
            return local
        if self.sent is None:  # the first reading: one agreement that waits
            agreed = all_reduce_max(local, self.world, self.device)
        elif self.cuda:
            self.done.synchronize()  # the copy queued after last step's all-reduce, before that step's kernels
            agreed = self.host.item()
        else:
            agreed = self.sent.item()
        self.sent = torch.full((), local, dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(self.sent, op=torch.distributed.ReduceOp.MAX)
        if self.cuda:
            self.host.copy_(self.sent, non_blocking=True)
            self.done.record()
        self.steps = (self.steps[1], agreed - (agreed if self.agreed is None else self.agreed))
        self.agreed, self.reading = agreed, max(self.reading, agreed + min(self.steps))
        return self.reading


TTT_WEIGHTS = ("lora", "all")  # what score-first TTT trains: LoRA adapters (Adam) | every weight (SGD)


class ScoreFirstTTT:
    """A learner for evaluate(): after each chunk of validation targets has been scored, the model's LoRA adapters
    take `steps` Adam steps on that chunk, so no token is ever scored by a model that has trained on it.
    (Score-first TTT: the public record line's "legal TTT", PR #461 recipe, record PR #549.) weights="all" trains
    every weight instead, with SGD and momentum 0.9 (as the public SP8192 records' score-first TTT does).

    The model provides its adapters: model.lora_parameters(), and for a model without any (the record preset)
    model.attach_adapters(rank, seed), which gives every block matrix fresh LoRA whose B starts at zero, so scores are
    unchanged until the first step. A chunk's targets are cut into sequences of at most seq_len, each read with up to
    seq_len tokens of (already scored) context; rank r takes sequences r, r + N, ... and the gradients are summed over
    ranks before each step, so all ranks hold the same adapters. evaluate() runs under no_grad; the update turns
    gradients back on for itself.
    """

    def __init__(self, model, tokens: torch.Tensor, *, seq_len: int, steps: int, lr: float, lora_rank: int,
                 weights: str = "lora", batch_seqs: int = 8, rank: int = 0, world: int = 1, device="cpu"):
        if weights == "lora" and not model.lora_parameters():
            model.attach_adapters(lora_rank, seed=0)  # the same seed on every rank: the same adapters
        self.params = list(model.parameters()) if weights == "all" else model.lora_parameters()
        model.requires_grad_(False)
        for p in self.params:
            p.requires_grad_(True)
            p.grad = torch.zeros_like(p)  # a rank with no sequence in a chunk still joins the all-reduce
        self.optimizer = (torch.optim.SGD(self.params, lr=lr, momentum=0.9) if weights == "all" else
                          torch.optim.Adam(self.params, lr=lr, betas=(0.9, 0.95)))
        self.model, self.tokens, self.seq_len, self.steps, self.batch_seqs = model, tokens.to(device), seq_len, steps, batch_seqs
        self.rank, self.world, self.device, self.seconds = rank, world, torch.device(device), 0.0

    def backward(self, pieces: list[tuple[int, int]], total: int) -> None:
        """Backpropagate the summed NLL of targets tokens[s:e] of each piece, divided by the chunk's target count."""
        length = min(self.seq_len, pieces[0][1] - 1)  # every piece of a batch has this much context
        ends = torch.tensor([e for _, e in pieces], device=self.device)
        grid = self.tokens[ends[:, None] - length - 1 + torch.arange(length + 1, device=self.device)]
        logits, _ = model_logits(self.model, grid[:, :-1])
        nll = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), grid[:, 1:].flatten(), reduction="none")
        positions = ends[:, None] - length + torch.arange(length, device=self.device)
        new = positions >= torch.tensor([s for s, _ in pieces], device=self.device)[:, None]
        ((nll.view_as(positions) * new).sum() / total).backward()

    def observe(self, start: int, end: int) -> None:
        started = time.perf_counter()
        pieces = [(s, min(s + self.seq_len, end)) for s in range(start, end, self.seq_len)][self.rank::self.world]
        by_context = {}
        for s, e in pieces:
            by_context.setdefault(min(self.seq_len, e - 1), []).append((s, e))
        with torch.enable_grad():
            for _ in range(self.steps):
                self.optimizer.zero_grad(set_to_none=False)
                for group in by_context.values():
                    for b in range(0, len(group), self.batch_seqs):
                        self.backward(group[b:b + self.batch_seqs], end - start)
                all_reduce_([p.grad for p in self.params], self.world)
                self.optimizer.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # so `seconds` is the time TTT really took
        self.seconds += time.perf_counter() - started


def document_segments(tokens: torch.Tensor, bos: int) -> list[tuple[int, int]]:
    """(start, end) of each document: tokens[start:end] run from its BOS to the next one, which is its last target
    (predicted from the document alone), so every target 1..n-1 of the stream falls in exactly one segment."""
    starts = [0] + [p for p in (tokens == bos).nonzero().flatten().tolist() if p > 0]
    ends = [s + 1 for s in starts[1:]] + [tokens.numel()]
    return [(s, e) for s, e in zip(starts, ends) if e - s >= 2]


MAX_DOCUMENT_ROWS = 256  # each row holds its own adapters and their Adam state: ~2.7 GB for the record's 669,696 a row


def length_groups(segments: list[tuple[int, int]], window: int, group_tokens: int,
                  max_rows: int = MAX_DOCUMENT_ROWS) -> list[list[tuple[int, int]]]:
    """Segments sorted by length and cut into groups of at most group_tokens (rows x the longest row's window) and
    max_rows rows, so rows that run together need about as many chunks as each other."""
    groups, current = [], []
    for segment in sorted(segments, key=lambda se: (se[1] - se[0], se[0])):
        if current and (len(current) == max_rows or (len(current) + 1) * min(window, segment[1] - segment[0] - 1) > group_tokens):
            groups.append(current)
            current = []
        current.append(segment)
    return groups + ([current] if current else [])


class DocumentTTT:
    """Score-first test-time training per document (the public records' LoRA TTT, PR #77 and its successors): each
    document gets its own adapters, copies of the model's own LoRA or fresh ones with B = 0 (no change until
    trained), on the matrices ScoreFirstTTT adapts. A document is read in chunks of `chunk` targets: each chunk is
    scored with up to `window` tokens of the document before it, then its adapters take `steps` Adam steps on that
    chunk's loss, so a target is only ever scored by adapters trained on earlier targets of its own document.
    Documents run in rows of one batch, each row with its own adapters ([rows, r, in] LoRA factors: rows never
    mix, Adam is elementwise), and are padded after their end with token 0, which causal attention never reads."""

    def __init__(self, model, *, window: int, chunk: int, steps: int, lr: float, lora_rank: int, device="cpu"):
        model.requires_grad_(False)
        own = [m for m in model.modules() if getattr(m, "lora_a", None) is not None]
        self.fresh = not own
        self.adapted = model.attach_adapters(lora_rank, seed=0) if self.fresh else own
        self.shared = [(m.lora_a.detach().clone(), m.lora_b.detach().clone()) for m in self.adapted]
        self.model, self.window, self.chunk, self.steps, self.lr = model, window, min(chunk, window), steps, lr
        self.device, self.seconds, self.adapter_params = torch.device(device), 0.0, sum(a.numel() + b.numel() for a, b in self.shared)

    def close(self) -> None:
        """The model as it came: its own adapters back, or none."""
        for m, (a, b) in zip(self.adapted, self.shared):
            m.lora_a, m.lora_b = (None, None) if self.fresh else (torch.nn.Parameter(a), torch.nn.Parameter(b))

    def batch(self, tokens: torch.Tensor, starts: np.ndarray, firsts: np.ndarray, ends: np.ndarray, live: np.ndarray,
              scored_from: int):
        """Row i reads segment i's tokens [firsts[i], ends[i]) (0 after them, and in rows not `live`); its targets
        scored_from + 1 .. ends[i] are picked out. Returns (inputs [rows, length], picks into the flattened logits,
        their target positions on the device and on the host, each pick's weight in its row's mean loss)."""
        length = int((ends - firsts)[live].max())
        cols = [np.arange(scored_from - firsts[i], ends[i] - firsts[i]) for i in live]
        places = np.concatenate([starts[i] + firsts[i] + c + 1 for i, c in zip(live, cols)])
        flat = np.concatenate([i * length + c for i, c in zip(live, cols)])
        weight = np.concatenate([np.full(c.size, 1.0 / c.size, dtype=np.float32) for c in cols])
        read = (np.arange(length) < (ends - firsts)[:, None]) & np.isin(np.arange(len(starts)), live)[:, None]
        index = np.where(read, (starts + firsts)[:, None] + np.arange(length), 0)
        positions, flat_dev, index_dev = host_to_device(np.concatenate([places, flat, index.ravel()]), self.device).split(
            [places.size, flat.size, index.size])
        x = torch.where(host_to_device(read, self.device), tokens[index_dev.view(read.shape)], 0)
        return x, flat_dev, positions, places, host_to_device(weight, self.device)

    def score(self, tokens: torch.Tensor, group: list[tuple[int, int]], tally: Tally, learn: bool = True) -> None:
        """Score every target of the group's segments into the tally, learning after each chunk when `learn`. A
        chunk is scored with up to `window` tokens of its document; it is learned from with up to one chunk of
        context before it (2 x chunk tokens per row), so learning costs the same however long the window."""
        started, rows = time.perf_counter(), len(group)
        params = []
        for m, (a, b) in zip(self.adapted, self.shared):
            m.lora_a, m.lora_b = (torch.nn.Parameter(f.expand(rows, *f.shape).clone()) for f in (a, b))
            params += [m.lora_a, m.lora_b]
        optimizer = torch.optim.Adam(params, lr=self.lr, betas=(0.9, 0.95))
        starts = np.array([s for s, _ in group])
        targets = np.array([e - s - 1 for s, e in group])
        chunks = -(-targets.max() // self.chunk)
        for k in range(chunks):
            ends = np.minimum((k + 1) * self.chunk, targets)
            live = np.flatnonzero(targets > k * self.chunk)
            learning = bool(learn and self.steps > 0 and k + 1 < chunks)
            firsts, train_firsts = (np.maximum(0, ends - w) for w in (self.window, min(self.window, 2 * self.chunk)))
            one_forward = learning and np.array_equal(firsts[live], train_firsts[live])  # scores and trains alike
            scored = self.batch(tokens, starts, firsts, ends, live, k * self.chunk)
            with torch.set_grad_enabled(one_forward):
                logits, aux = model_logits(self.model, scored[0])
                picked = logits.flatten(0, 1).index_select(0, scored[1]).float()
            tally.add(picked.detach(), {n: v.flatten(0, 1).index_select(0, scored[1]).float() for n, v in aux.items()},
                      *scored[2:4])
            if not learning:
                continue
            trained = scored if one_forward else self.batch(tokens, starts, train_firsts, ends, live, k * self.chunk)
            for step in range(self.steps):
                with torch.enable_grad():
                    if step > 0 or not one_forward:
                        logits, _ = model_logits(self.model, trained[0])
                        picked = logits.flatten(0, 1).index_select(0, trained[1]).float()
                    nll = torch.nn.functional.cross_entropy(picked, tokens[trained[2]], reduction="none")
                    (nll * trained[4]).sum().backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # so `seconds` is the time TTT really took
        self.seconds += time.perf_counter() - started


@torch.no_grad()
def evaluate_documents(model, tokens: torch.Tensor, tables, *, bos: int, window: int, chunk: int, steps: int, lr: float,
                       lora_rank: int, group_tokens: int, chunk_tokens: int, mixer=None, audit: int = 0, rank: int = 0,
                       world: int = 1, device="cpu", log=None, budget_s: float = 0.0, clock=time.perf_counter) -> dict:
    """Score every target of `tokens` document by document with DocumentTTT; returns what evaluate() returns, plus
    ttt_time_s and adapter_params. Consecutive documents form score-first chunks of at least chunk_tokens targets
    (the n-gram mixer learns after each); a chunk's documents are dealt to the ranks longest first and batched in
    groups of similar length. budget_s > 0: on pace to pass it, the rest is scored without learning."""
    segments = document_segments(tokens, bos)
    if not segments:
        raise DataError("need at least 2 validation tokens to score anything")
    chunks = score_chunks(segments, chunk_tokens, targets=lambda segment: segment[1] - segment[0] - 1)
    tokens_dev = tokens.to(device)
    tally = Tally(tokens_dev, tuple(t.to(device) for t in tables), mixer, audit, device)
    ttt = DocumentTTT(model, window=window, chunk=chunk, steps=steps, lr=lr, lora_rank=lora_rank, device=device)
    learn, budget_steps = steps > 0, []
    started = chunk_started = clock()
    try:
        for index, chunk_segments in enumerate(chunks):
            mine = sorted(chunk_segments, key=lambda se: se[0] - se[1])[rank::world]
            for group in length_groups(mine, window, group_tokens):
                ttt.score(tokens_dev, group, tally, learn)
            lo, hi = chunk_segments[0][0] + 1, chunk_segments[-1][1]
            if mixer is not None and index < len(chunks) - 1:
                mixer.observe(lo, hi)
            if log and (index + 1) % max(1, len(chunks) // 10) == 0:
                log(f"eval chunk={index + 1}/{len(chunks)} scored_to={hi} elapsed_s={clock() - started:.1f}")
            now = clock()
            projected = index > 0 and learn and projected_end(
                budget_s, now - started, now - chunk_started, hi - lo, tokens.numel() - hi, world, device)
            if projected:
                learn = False
                note_budget_step(budget_steps, "learners stopped", hi, projected, budget_s, log)
            chunk_started = now
    finally:
        ttt.close()
    return {**tally.result(world, clock() - started, budget_steps), "ttt_time_s": ttt.seconds, "adapter_params": ttt.adapter_params}


# ---------------------------------------------------------------- command line
def card_name(index: int = 0) -> str:
    """The GPU by name and UUID ("cpu" without one): two H200s read alike by name, and figures of different cards are
    not comparable (records/bench.py --append refuses a table measured on another card)."""
    if not torch.cuda.is_available():
        return "cpu"
    uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
    return torch.cuda.get_device_name(index) + (f" (GPU-{uuid})" if uuid else "")


def setup_distributed(device: str = "auto") -> tuple[int, int, torch.device]:
    """(rank, world size, device) of this process as torchrun started it, (0, 1, device) alone; with more than one
    process it joins the group (NCCL on CUDA, else gloo). device: auto (CUDA when visible) | cuda | cpu. fp32 matrix
    products use TF32 on CUDA, in training and in evaluation alike."""
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("device=cuda but no CUDA GPU is visible; use device=cpu")
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    where = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(where)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    if world > 1:
        torch.distributed.init_process_group("nccl" if cuda else "gloo", device_id=where if cuda else None)
    return rank, world, where


def audit_failure(result: dict) -> str | None:
    """Why an audited score is void, or None when it stands."""
    if not result["audit_max_err"] <= AUDIT_TOLERANCE:  # `not <=`: a NaN fails too
        return (f"normalization audit failed: max |sum p - 1| = {result['audit_max_err']:.3e} > {AUDIT_TOLERANCE} "
                "(inf: a probability was negative or not finite)")
    if not result["audit_max_mismatch"] <= AUDIT_MATCH_TOLERANCE:
        return (f"audit failed: a target was scored {result['audit_max_mismatch']:.3e} nats away from its own "
                "distribution's probability (the scorer looks at the target)")
    return None


def audit_line(result: dict) -> str:
    return (f"audit positions={result['audit_count']} max_abs_sum_err={result['audit_max_err']:.3e} "
            f"max_nll_mismatch={result['audit_max_mismatch']:.3e} {'FAIL' if audit_failure(result) else 'PASS'}")


def check_score(result: dict, audited: bool) -> None:
    """A score that is not finite, or fails its audit, is void: ArtifactError, and no record is written."""
    if not (math.isfinite(result["val_bpb"]) and math.isfinite(result["val_loss"])):
        raise ArtifactError(f"the score is val_bpb={result['val_bpb']} val_loss={result['val_loss']}: the model or the "
                            "mixer gave a zero or non-finite probability; nothing was recorded")
    if audited and audit_failure(result):
        raise ArtifactError(audit_failure(result))


def report_audit(result: dict, log, audited: bool = True) -> None:
    """Log the audit's line (when there was an audit), then void a score that is not finite or fails its audit:
    ArtifactError before any final line or record."""
    if audited:
        log(audit_line(result))
    check_score(result, audited)


def final_line(result: dict, bytes_total: int, bytes_code: int, train_time_s: float) -> str:
    """A run's last line (SPEC.md), the same from train_gpt.py and eval_ngram.py."""
    return (f"final val_bpb={result['val_bpb']:.6f} val_loss={result['val_loss']:.6f} bytes_total={bytes_total} "
            f"bytes_code={bytes_code} train_time_s={train_time_s:.1f} eval_time_s={result['eval_time_s']:.1f}")


def error_line(error: BaseException, *errors: type[BaseException]) -> str | None:
    """The one `error: ...` line for a failure a user can cause (bad input, data, artifact, disk, memory, or one of
    `errors`); None for anything else, an internal bug that deserves its traceback."""
    if isinstance(error, OSError) and not isinstance(error, (DataError, ArtifactError)):
        where = f"{error.filename}: " if error.filename else ""
        return f"error: {where}{error.strerror or error}; check the path, its permissions and the free disk space"
    if isinstance(error, (MemoryError, torch.OutOfMemoryError)):
        return (f"error: out of memory ({str(error).splitlines()[0] if str(error) else type(error).__name__}); "
                "lower train_batch_tokens / eval_batch_windows or the model's size, or use more devices")
    if isinstance(error, (DataError, ArtifactError, UsageError, *errors)):
        return f"error: {error}"
    return None


def file_logger(path: str):
    """log(line) for rank 0: prints it and appends it to the run's log file at once (nothing is lost on a crash); a
    log file that cannot be written (a full disk) must not kill a run whose model is still in memory."""
    target = [path]

    def log(line: str) -> None:
        print(line, flush=True)
        try:
            if target[0]:
                with open(target[0], "a") as f:
                    f.write(line + "\n")
        except OSError as error:
            print(f"warning: cannot append to {target[0]} ({error.strerror}); logging to stdout only", file=sys.stderr)
            target[0] = None
    return log


def run_script(main, *errors: type[Exception]) -> None:
    """Run main(sys.argv[1:]) as a script, the one place where failures become messages: a failure a user can
    cause (see error_line) ends in one `error: ...` line on stderr and exit code 2; an int that main returns is
    the exit code."""
    try:
        code = main(sys.argv[1:])
    except Exception as error:
        line = error_line(error, *errors)
        if line is None:
            raise
        print(line, file=sys.stderr)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)


def model_builder(name: str):
    """The function that rebuilds an artifact's model, named "module:function" in its metadata (e.g.
    "train_gpt:model_from_artifact") and found in this checkout, beside this file: an artifact names code, it never
    carries any."""
    module_name, _, function = name.partition(":")
    local = {os.path.splitext(os.path.basename(p))[0]: p for p in CODE_FILES if os.path.abspath(p) != os.path.abspath(__file__)}
    if module_name not in local or not function.isidentifier():
        raise ArtifactError(f"artifact names model builder {name!r}; expected one of {sorted(local)} as MODULE:FUNCTION")
    module = importlib.import_module(module_name)
    if os.path.abspath(module.__file__) != os.path.abspath(local[module_name]):
        raise ArtifactError(f"{module_name} was imported from {module.__file__}, not from this checkout ({HERE})")
    if not callable(getattr(module, function, None)):
        raise ArtifactError(f"{local[module_name]} has no {function}(); the artifact was made by other code")
    return getattr(module, function)


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose complaints are UsageErrors, so they end like every other failure: one `error:` line, exit 2."""

    def error(self, message: str):
        raise UsageError(f"{message} (see {self.prog} --help)")


def load_artifact(path: str):
    """(model, meta, tables, artifact bytes) from an artifact file; the model is rebuilt by the builder its metadata
    names (model_builder), whose model carries the artifact's config as its typed `cfg`."""
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except OSError as error:
        raise ArtifactError(f"{path}: cannot read artifact ({error.strerror})") from None
    state, meta, tables = unpack_artifact(blob)
    if meta.get("code_sha256") != files_sha256(CODE_FILES):
        print(f"warning: {path} was packed by different code (sha256 mismatch); scores may differ", file=sys.stderr)
    if not isinstance(meta.get("model_builder"), str):
        raise ArtifactError(f"{path} names no model builder in its metadata; re-pack it with the current train_gpt.py")
    return model_builder(meta["model_builder"])(state, meta), meta, tables, len(blob)


def eval_window(cfg) -> int:
    """Tokens per evaluation window (and TTT sequence): eval_seq_len, or the training seq_len when that is 0."""
    return cfg.eval_seq_len or cfg.seq_len


def ngram_prior(artifact_tables: dict | None, device) -> NGramCounts | None:
    """The training-time n-gram counts an artifact packed (ngram_cache_bytes), or None."""
    blob = (artifact_tables or {}).get("ngram")
    return NGramCounts.from_bytes(blob, device) if blob else None


def score(model, val_tokens: torch.Tensor, tables, *, artifact_tables: dict | None = None, rank: int = 0, world: int = 1,
          device="cpu", log=None, mix: dict | None = None, trace: MixerTrace | None = None, **settings) -> dict:
    """Evaluate a model (neural alone, or mixed with the score-first n-gram cache, with or without score-first
    test-time training of its adapters) on validation tokens, as its config says: model.cfg's eval_seq_len (or seq_len), eval_stride,
    eval_batch_windows, eval_compile, eval_chunk_tokens, eval_audit, ngram_order, ttt_steps, ttt_lr, ttt_rank, ttt_weights and
    ttt_doc_chunk, any of which a keyword of the same name replaces. ttt_doc_chunk > 0 scores document by document
    (evaluate_documents: no sliding windows, stride or compiled graph; TTT per document, or none with ttt_steps 0).
    A trace takes the mixer's place (whatever ngram_order says) and the score is the model's alone: trace.replay()
    then scores the pass with any mixer."""
    cfg = dataclasses.replace(model.cfg, **settings)
    if cfg.ttt_doc_chunk > 0 and cfg.ttt_weights != "lora":
        raise UsageError(f"ttt_weights={cfg.ttt_weights} with ttt_doc_chunk={cfg.ttt_doc_chunk}: per-document TTT trains "
                         "adapters of its own for each document (ttt_weights=lora)")
    mixer = trace
    if cfg.ngram_order > 0 and trace is None:
        mixer = NGramMixer(val_tokens.to(device), cfg.ngram_order, cfg.vocab_size, device,
                           prior=ngram_prior(artifact_tables, device), **(mix or {}))
    length = eval_window(cfg)
    if cfg.ttt_doc_chunk > 0:
        result = evaluate_documents(model, val_tokens, tables, bos=text_codec(cfg.tokenizer)[2], window=length,
                                    chunk=cfg.ttt_doc_chunk, steps=cfg.ttt_steps, lr=cfg.ttt_lr, lora_rank=cfg.ttt_rank,
                                    group_tokens=cfg.eval_batch_windows * length, chunk_tokens=cfg.eval_chunk_tokens,
                                    mixer=mixer, audit=cfg.eval_audit, rank=rank, world=world, device=device, log=log,
                                    budget_s=cfg.eval_budget_s)
        if log:
            log(f"ttt per document: chunk={cfg.ttt_doc_chunk} steps={cfg.ttt_steps} lr={cfg.ttt_lr} adapter_params="
                f"{result['adapter_params']} seconds={result['ttt_time_s']:.1f} of eval_time_s={result['eval_time_s']:.1f}")
        return result
    ttt = [ScoreFirstTTT(model, val_tokens, seq_len=length, steps=cfg.ttt_steps, lr=cfg.ttt_lr, lora_rank=cfg.ttt_rank,
                         weights=cfg.ttt_weights, rank=rank, world=world, device=device)] if cfg.ttt_steps > 0 else []
    forward = compiled_logits(model, cfg.eval_batch_windows) if cfg.eval_compile else lambda x: model_logits(model, x)
    result = evaluate(forward, val_tokens, tables, length, cfg.eval_stride, budget_s=cfg.eval_budget_s,
                      batch_windows=cfg.eval_batch_windows, chunk_tokens=cfg.eval_chunk_tokens, mixer=mixer,
                      learners=ttt, audit=cfg.eval_audit, rank=rank, world=world, device=device, log=log)
    if ttt:
        result["ttt_time_s"] = ttt[0].seconds
        if log:
            trained = sum(p.numel() for p in ttt[0].params)
            log(f"ttt steps={cfg.ttt_steps} lr={cfg.ttt_lr} " + (f"adapter_params={trained}" if cfg.ttt_weights == "lora" else
                f"weights={cfg.ttt_weights} params={trained}") + f" seconds={ttt[0].seconds:.1f} of eval_time_s={result['eval_time_s']:.1f}")
    return result


def parse_mix(items: list[str]) -> dict[str, float]:
    mix = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            if not sep or key not in MIX_DEFAULTS:
                raise ValueError
            mix[key] = float(value)
        except ValueError:
            raise UsageError(f"--mix {item!r}: expected KEY=NUMBER with KEY one of {', '.join(MIX_DEFAULTS)}") from None
    return mix


def main(argv: list[str]) -> int:
    parser = ArgumentParser(description="Score a packed parameter-golf artifact on validation shards.")
    parser.add_argument("artifact")
    parser.add_argument("--data-dir", help="shard folder (default: the one the artifact was trained on)")
    parser.add_argument("--tokenizer", help="sentencepiece model or 'bytes' (default: the artifact's)")
    parser.add_argument("--ngram-order", type=int, help="n-gram mixture order (default: the artifact's config)")
    parser.add_argument("--no-ngram", action="store_true", help="neural model alone")
    parser.add_argument("--mix", action="append", default=[], metavar="KEY=VALUE",
                        help=f"n-gram weighting option, repeatable; keys and defaults: {MIX_DEFAULTS}")
    parser.add_argument("--stride", type=int, help="sliding-window stride (default: the artifact's eval_stride)")
    parser.add_argument("--seq-len", type=int, help="window length (default: the artifact's eval_seq_len, else its "
                        "training seq_len); longer windows give each token more context than training had")
    parser.add_argument("--audit", type=int, metavar="K",
                        help="check at K positions that p sums to 1 over the whole vocabulary (fail if off by > 1e-6), "
                        "has no negative or non-finite entry, and gave the target the probability it was scored with "
                        "(default: the artifact's eval_audit, as the training run checked it; 0 = off)")
    parser.add_argument("--max-tokens", type=int, help="score only the first N validation tokens (default: the "
                        "artifact's eval_max_tokens; 0 = all)")
    parser.add_argument("--batch-windows", type=int, help="windows per forward (default: the artifact's eval_batch_windows)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, help="the forward as one compiled graph "
                        "(default: the artifact's eval_compile)")
    parser.add_argument("--budget", type=float, metavar="S", help="seconds the evaluation must end within; on pace to "
                        "pass them, the rest is scored without TTT, then at 2x the stride (default: the artifact's "
                        "eval_budget_s; 0 = never)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--ttt-steps", type=int, help="score-first test-time training steps per chunk (default: the "
                        "artifact's ttt_steps; 0 = off)")
    parser.add_argument("--ttt-lr", type=float, help="test-time training learning rate, Adam or SGD (default: the artifact's)")
    parser.add_argument("--ttt-rank", type=int, help="LoRA rank added for test-time training when the model has none")
    parser.add_argument("--ttt-weights", choices=TTT_WEIGHTS, help="what test-time training trains: LoRA adapters "
                        "(Adam) or every weight (SGD, momentum 0.9) (default: the artifact's ttt_weights)")
    parser.add_argument("--chunk-tokens", type=int, metavar="N", help="targets per score-first chunk: the n-gram cache and "
                        "TTT learn after each (default: the artifact's eval_chunk_tokens)")
    parser.add_argument("--ttt-doc-chunk", type=int, metavar="N", help="N > 0: score document by document, each with its "
                        "own adapters trained after every N scored tokens (default: the artifact's ttt_doc_chunk; 0 = "
                        "sliding windows over the stream, TTT on whole chunks)")
    parser.add_argument("--generate", metavar="PROMPT", help="print the model's continuation of PROMPT instead of scoring")
    parser.add_argument("--max-new-tokens", type=int, default=200)
    parser.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    parser.add_argument("--top-p", type=float, default=0.95, help="sample from the smallest set of tokens with mass >= P")
    parser.add_argument("--no-repeat-ngram", type=int, default=0, metavar="K", help="never repeat a K-gram of the text")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--allow-over-cap", action="store_true", help=f"score an artifact over the {ARTIFACT_LIMIT}-byte "
                        "cap (with code) and exit 0; without it the score is printed but the exit code is 2")
    args = parser.parse_args(argv)
    ranges = {"top_p": "(0,1]", "temperature": "[0,inf)", "audit": "[0,inf)", "max_tokens": "[0,inf)", "seed": "[0,inf)",
              "batch_windows": "[1,inf)", "max_new_tokens": "[0,inf)", "no_repeat_ngram": "[0,inf)", "ngram_order": "[0,inf)",
              "ttt_steps": "[0,inf)", "ttt_rank": "[1,inf)", "ttt_doc_chunk": "[0,inf)", "chunk_tokens": "[1,inf)", "ttt_lr": "[0,inf)", "stride": "[1,inf)", "seq_len": "[1,inf)",
              "budget": "[0,inf)"}
    for name, spec in ranges.items():
        value = getattr(args, name)
        if value is not None and not in_interval(value, spec):
            raise UsageError(f"--{name.replace('_', '-')} {value}: must be in {spec}")
    if args.device not in ("auto", "cuda", "cpu"):
        raise UsageError(f"--device {args.device}: choose auto, cuda or cpu")
    rank, world, device = setup_distributed(args.device)
    model, meta, artifact_tables, artifact_bytes = load_artifact(args.artifact)
    model = model.to(device).eval()
    # The artifact's config (the model's typed cfg), amended by the options given here under their config names.
    settings = {key: value for key, value in dict(
        data_dir=args.data_dir, tokenizer=args.tokenizer, eval_max_tokens=args.max_tokens, eval_stride=args.stride, eval_seq_len=args.seq_len,
        eval_batch_windows=args.batch_windows, eval_compile=args.compile, ngram_order=0 if args.no_ngram else args.ngram_order,
        ttt_steps=args.ttt_steps, ttt_lr=args.ttt_lr, ttt_rank=args.ttt_rank, ttt_weights=args.ttt_weights, ttt_doc_chunk=args.ttt_doc_chunk,
        eval_chunk_tokens=args.chunk_tokens, eval_budget_s=args.budget, eval_audit=args.audit).items()
        if value is not None}
    cfg = dataclasses.replace(model.cfg, **settings)
    if not 1 <= cfg.eval_stride <= eval_window(cfg):
        raise UsageError(f"--stride {cfg.eval_stride}: must be in 1..{eval_window(cfg)} (the window length)")
    if args.generate is not None:
        print(sample_text(model, args.generate, cfg.tokenizer, seed=args.seed, max_new_tokens=args.max_new_tokens,
                          temperature=args.temperature, top_p=args.top_p, no_repeat_ngram=args.no_repeat_ngram))
        return 0
    tables = byte_tables(cfg.tokenizer, cfg.vocab_size)
    check_data(cfg.data_dir, cfg.tokenizer, splits=("val",))
    val_tokens = load_val_tokens(cfg.data_dir, cfg.eval_max_tokens, cfg.vocab_size)
    say = print if rank == 0 else lambda line: None
    result = score(model, val_tokens, tables, artifact_tables=artifact_tables, rank=rank, world=world, device=device,
                   mix=parse_mix(args.mix), log=say, **settings)
    code_bytes = code_size(cfg.self_extracting_code)  # as train_gpt.py counted it: what the record folder holds
    over_cap = artifact_bytes + code_bytes - ARTIFACT_LIMIT
    report_audit(result, say, audited=cfg.eval_audit > 0)  # as in train_gpt.py
    if rank == 0:
        print(final_line(result, artifact_bytes + code_bytes, code_bytes, meta.get("train_time_s", 0.0)) +
              (f" over_cap_bytes={over_cap}" if over_cap > 0 else ""))
    if world > 1:
        torch.distributed.barrier()  # no rank tears the group down while another is still inside a collective
        torch.distributed.destroy_process_group()
    if over_cap > 0 and not args.allow_over_cap:
        raise ArtifactError(f"{args.artifact}: {artifact_bytes} bytes + code {code_bytes} is {over_cap} bytes over the "
                            f"{ARTIFACT_LIMIT}-byte cap, so this score is no record; pass --allow-over-cap to accept it")
    return 0


if __name__ == "__main__":
    import eval_ngram  # run as the module that train_gpt.py imports: one copy of every class, ArtifactError included
    eval_ngram.run_script(eval_ngram.main)
