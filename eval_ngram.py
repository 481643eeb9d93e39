"""eval_ngram.py: pack/unpack a parameter-golf artifact and score it.

Sections: shards and byte accounting, artifact packing, sliding-window evaluation,
score-first n-gram mixture, command line.
"""
from __future__ import annotations

import glob
import hashlib
import json
import lzma
import math
import os
import struct
import sys
import time

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


def load_val_tokens(data_dir: str) -> torch.Tensor:
    """Every validation token of a directory, in shard order (training never calls this)."""
    return torch.from_numpy(np.concatenate([read_shard(p) for p in find_shards(data_dir, "val")]).astype(np.int64))


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
        import sentencepiece as spm
        if not os.path.isfile(tokenizer):
            raise DataError(f"{tokenizer}: tokenizer model not found; pass tokenizer=PATH (or 'bytes')")
        sp = spm.SentencePieceProcessor(model_file=tokenizer)
        if sp.vocab_size() > vocab_size:
            raise DataError(f"{tokenizer}: {sp.vocab_size()} pieces do not fit vocab_size={vocab_size}")
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
    base, space, boundary = (t.to(target.device) for t in tables)
    return base[target] + (space[target] & ~boundary[prev]).long()


# ---------------------------------------------------------------- artifact packing
ARTIFACT_MAGIC, ARTIFACT_FORMAT = b"PGOLF\x00", 1
ARTIFACT_LIMIT = 16_000_000
HERE = os.path.dirname(os.path.abspath(__file__))
CODE_FILES = [os.path.join(HERE, "train_gpt.py"), os.path.join(HERE, "eval_ngram.py")]  # what an artifact needs


class ArtifactError(Exception):
    """A truncated, corrupt, foreign or oversized artifact."""


def code_sha256(paths: list[str]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()


def quantize_rows(w: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row quantization to `bits`, stored as int8, with the clip ratio chosen per row by MSE."""
    w = w.float()
    qmax = 2 ** (bits - 1) - 1
    absmax = w.abs().amax(dim=1, keepdim=True).clamp_min(1e-12)
    best_q, best_scale, best_err = None, None, None
    for ratio in (1.0, 0.95, 0.9, 0.85, 0.8, 0.7):  # clipping outliers often lowers the error of the bulk
        scale = (absmax * ratio / qmax).half().float()
        q = torch.clamp(torch.round(w / scale), -qmax, qmax)
        err = (q * scale - w).square().sum(dim=1, keepdim=True)
        if best_err is None:
            best_q, best_scale, best_err = q, scale, err
        else:
            better = err < best_err
            best_q = torch.where(better, q, best_q)
            best_scale = torch.where(better, scale, best_scale)
            best_err = torch.minimum(err, best_err)
    return best_q.to(torch.int8), best_scale.squeeze(1).half()


def pack_artifact(state: dict[str, torch.Tensor], meta: dict, quant_bits: dict[str, int],
                  tables: dict[str, bytes] | None = None) -> bytes:
    """Serialize tensors as our own byte format: header JSON + LZMA payload + raw tables (already compressed).

    Tensors named in quant_bits are stored as per-row int8 (values limited to that many bits, which LZMA
    then squeezes); every other tensor is stored as fp16. No pickle anywhere, so loading executes nothing.
    """
    index, chunks, offset = [], [], 0
    for name, tensor in state.items():
        tensor = tensor.detach().cpu()
        if name in quant_bits:
            q, scale = quantize_rows(tensor.reshape(tensor.shape[0], -1), quant_bits[name])
            parts, kind = [q.numpy().tobytes(), scale.numpy().tobytes()], "int8_rows"
        else:
            parts, kind = [tensor.to(torch.float16).numpy().tobytes()], "fp16"
        nbytes = sum(len(p) for p in parts)
        index.append({"name": name, "shape": list(tensor.shape), "kind": kind, "offset": offset, "nbytes": nbytes})
        chunks.extend(parts)
        offset += nbytes
    payload = lzma.compress(b"".join(chunks), preset=9 | lzma.PRESET_EXTREME)
    tables = tables or {}
    header = json.dumps({"format": ARTIFACT_FORMAT, "meta": meta, "tensors": index, "payload_raw": offset,
                         "payload_lzma": len(payload), "tables": {k: len(v) for k, v in tables.items()}}).encode()
    return b"".join([ARTIFACT_MAGIC, struct.pack("<I", len(header)), header, payload, *tables.values()])


def unpack_artifact(blob: bytes) -> tuple[dict[str, torch.Tensor], dict, dict[str, bytes]]:
    """Inverse of pack_artifact: (float32 tensors, meta, tables). Any inconsistency is an ArtifactError."""
    if blob[:len(ARTIFACT_MAGIC)] != ARTIFACT_MAGIC:
        raise ArtifactError("not a parameter-golf artifact (bad magic bytes)")
    start = len(ARTIFACT_MAGIC) + 4
    if len(blob) < start:
        raise ArtifactError("artifact is truncated inside its header")
    (header_len,) = struct.unpack("<I", blob[len(ARTIFACT_MAGIC):start])
    try:
        header = json.loads(blob[start:start + header_len].decode())
        index, table_sizes = header["tensors"], header["tables"]
        payload_end = start + header_len + int(header["payload_lzma"])
        if header["format"] != ARTIFACT_FORMAT:
            raise ArtifactError(f"artifact format {header['format']} is not {ARTIFACT_FORMAT}; use the matching code")
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise ArtifactError("artifact header is truncated or corrupt") from None
    if len(blob) != payload_end + sum(table_sizes.values()):
        raise ArtifactError(f"artifact has {len(blob)} bytes, its header promises "
                            f"{payload_end + sum(table_sizes.values())}: truncated or padded")
    try:
        decompressor = lzma.LZMADecompressor()
        payload = decompressor.decompress(blob[start + header_len:payload_end], max_length=int(header["payload_raw"]))
    except lzma.LZMAError:
        raise ArtifactError("artifact payload is corrupt (LZMA failed)") from None
    if len(payload) != header["payload_raw"] or not decompressor.eof:
        raise ArtifactError("artifact payload size does not match its header")
    state = {}
    for entry in index:
        shape, raw = entry["shape"], payload[entry["offset"]:entry["offset"] + entry["nbytes"]]
        numel = math.prod(shape)
        if entry["kind"] == "int8_rows":
            rows = shape[0]
            if len(raw) != numel + 2 * rows:
                raise ArtifactError(f"artifact tensor {entry['name']} has the wrong size")
            q = torch.frombuffer(bytearray(raw[:numel]), dtype=torch.int8).float().reshape(rows, -1)
            scale = torch.frombuffer(bytearray(raw[numel:]), dtype=torch.float16).float()
            state[entry["name"]] = (q * scale[:, None]).reshape(shape)
        elif entry["kind"] == "fp16" and len(raw) == 2 * numel:
            state[entry["name"]] = torch.frombuffer(bytearray(raw), dtype=torch.float16).float().reshape(shape)
        else:
            raise ArtifactError(f"artifact tensor {entry['name']} is corrupt")
    tables, offset = {}, payload_end
    for name, size in table_sizes.items():
        tables[name], offset = blob[offset:offset + size], offset + size
    return state, header["meta"], tables


def check_artifact_size(artifact_bytes: int, code_bytes: int, limit: int = ARTIFACT_LIMIT) -> int:
    """Total counted bytes; raises ArtifactError when code + artifact is over the challenge's cap."""
    total = artifact_bytes + code_bytes
    if total > limit:
        raise ArtifactError(f"artifact {artifact_bytes} + code {code_bytes} = {total} bytes is "
                            f"{total - limit} over the {limit}-byte cap; shrink the model or lower quant_bits")
    return total


# ---------------------------------------------------------------- sliding-window evaluation
def sliding_windows(n_tokens: int, seq_len: int, stride: int) -> list[tuple[int, int, int]]:
    """Windows (start, lo, hi) over a token stream: inputs tokens[start:start+L], scored targets tokens[lo:hi].

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


def score_chunks(windows, chunk_tokens: int) -> list[list[tuple[int, int, int]]]:
    """Consecutive windows grouped so each group scores at least chunk_tokens targets (score-first unit)."""
    chunks, current, count = [], [], 0
    for window in windows:
        current.append(window)
        count += window[2] - window[1]
        if count >= chunk_tokens:
            chunks.append(current)
            current, count = [], 0
    return chunks + ([current] if current else [])


@torch.no_grad()
def evaluate(forward_logits, tokens: torch.Tensor, tables, seq_len: int, stride: int, *, batch_windows: int = 16,
             chunk_tokens: int = 65536, mixer=None, learners=(), audit: int = 0, rank: int = 0, world: int = 1,
             device="cpu", log=None) -> dict:
    """Score every target of `tokens` with sliding windows; returns val_loss (nats/token) and val_bpb.

    forward_logits(x[B, L]) -> (logits[B, L, V], aux{name: [B, L]}). Validation is walked in chunks: each chunk
    is scored by all ranks (window i of the chunk on rank i % world) before `mixer.observe` and every learner's
    `observe(start, end)` may learn from it, so nothing is ever scored by something that has seen it.
    audit=K checks that the full scoring distribution sums to 1 at about K evenly spaced positions.
    """
    windows = sliding_windows(tokens.numel(), seq_len, stride)
    chunks = score_chunks(windows, chunk_tokens)
    tokens_dev = tokens.to(device)
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # nll, bytes, targets
    audit_stats = torch.zeros(2, dtype=torch.float64, device=device)  # max |sum p - 1|, positions audited
    audit_every = max(1, (tokens.numel() - 1) // audit) if audit else 0
    length = min(seq_len, tokens.numel() - 1)
    started = time.perf_counter()
    for chunk_index, chunk in enumerate(chunks):
        mine = chunk[rank::world]
        for b in range(0, len(mine), batch_windows):
            batch = mine[b:b + batch_windows]
            starts = torch.tensor([w[0] for w in batch], device=device)
            offsets = torch.arange(length + 1, device=device)
            grid = tokens_dev[starts[:, None] + offsets]
            logits, aux = forward_logits(grid[:, :-1])
            keep = torch.zeros(len(batch), length, dtype=torch.bool, device=device)
            for i, (start, lo, hi) in enumerate(batch):
                keep[i, lo - start - 1:hi - start - 1] = True
            positions = (starts[:, None] + 1 + torch.arange(length, device=device))[keep]
            flat_logits = logits[keep].float()
            targets = tokens_dev[positions]
            if audit_every:
                picked = positions % audit_every == 0
                if picked.any():
                    sel_aux = {k: v[keep][picked].float() for k, v in aux.items()}
                    err = (mixer.audit(flat_logits[picked], positions[picked], sel_aux) if mixer is not None else
                           (torch.softmax(flat_logits[picked].double(), -1).sum(-1) - 1).abs().max().item())
                    audit_stats[0] = max(audit_stats[0].item(), err)
                    audit_stats[1] += int(picked.sum())
            if mixer is None:
                nll = torch.nn.functional.cross_entropy(flat_logits, targets, reduction="sum")
            else:
                nll = mixer.nll(flat_logits, targets, positions, {k: v[keep].float() for k, v in aux.items()}).sum()
            sums += torch.stack([nll.double(), target_bytes(tokens_dev[positions - 1], targets, tables).sum().double(),
                                 torch.tensor(float(targets.numel()), dtype=torch.float64, device=device)])
        lo, hi = chunk[0][1], chunk[-1][2]
        for learner in ([mixer] if mixer is not None else []) + list(learners):
            learner.observe(lo, hi)
        if log and (chunk_index + 1) % max(1, len(chunks) // 10) == 0:
            log(f"eval chunk={chunk_index + 1}/{len(chunks)} scored_to={hi} elapsed_s={time.perf_counter() - started:.1f}")
    if world > 1:
        torch.distributed.all_reduce(sums)
        torch.distributed.all_reduce(audit_stats[1:])
        torch.distributed.all_reduce(audit_stats[:1], op=torch.distributed.ReduceOp.MAX)
    nll, n_bytes, n_targets = sums.tolist()
    return {"val_loss": nll / n_targets, "val_bpb": nll / math.log(2) / n_bytes, "targets": int(n_targets),
            "bytes": int(n_bytes), "eval_time_s": time.perf_counter() - started,
            "audit_max_err": audit_stats[0].item(), "audit_count": int(audit_stats[1].item())}


# ---------------------------------------------------------------- n-gram mixture (score-first)

# ---------------------------------------------------------------- command line
def load_artifact(path: str):
    """(model, meta, tables) from an artifact file; the model class comes from train_gpt.py beside this file."""
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except OSError as error:
        raise ArtifactError(f"{path}: cannot read artifact ({error.strerror})") from None
    state, meta, tables = unpack_artifact(blob)
    if meta.get("code_sha256") != code_sha256(CODE_FILES):
        print(f"warning: {path} was packed by different code (sha256 mismatch); scores may differ", file=sys.stderr)
    import train_gpt
    return train_gpt.model_from_artifact(state, meta), meta, tables, len(blob)


def score(model, val_tokens: torch.Tensor, tables, *, seq_len: int, stride: int, ngram_order: int = 0,
          artifact_tables: dict | None = None, audit: int = 0, batch_windows: int = 32, rank: int = 0,
          world: int = 1, device="cpu", log=None) -> dict:
    """Evaluate a model (neural alone, or mixed with the score-first n-gram cache) on validation tokens."""
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=torch.device(device).type == "cuda")

    def forward_logits(x):
        with autocast:
            return model.forward_logits(x)

    mixer = None
    if ngram_order > 0:
        blob = (artifact_tables or {}).get("ngram")
        prior = NGramCounts.from_bytes(blob, device) if blob else None
        mixer = NGramMixer(val_tokens.to(device), ngram_order, model.cfg.vocab_size, device, prior=prior)
    return evaluate(forward_logits, val_tokens, tables, seq_len, stride, batch_windows=batch_windows, mixer=mixer,
                    audit=audit, rank=rank, world=world, device=device, log=log)


def main(argv: list[str]) -> int:
    import argparse
    parser = argparse.ArgumentParser(description="Score a packed parameter-golf artifact on validation shards.")
    parser.add_argument("artifact")
    parser.add_argument("--data-dir", help="shard folder (default: the one the artifact was trained on)")
    parser.add_argument("--tokenizer", help="sentencepiece model or 'bytes' (default: the artifact's)")
    parser.add_argument("--ngram-order", type=int, help="n-gram mixture order (default: the artifact's config)")
    parser.add_argument("--no-ngram", action="store_true", help="neural model alone")
    parser.add_argument("--stride", type=int, help="sliding-window stride (default: the artifact's eval_stride)")
    parser.add_argument("--audit", type=int, default=0, metavar="K",
                        help="check sum p = 1 over the whole vocabulary at K positions; fail if any is off by > 1e-6")
    parser.add_argument("--max-tokens", type=int, default=0, help="score only the first N validation tokens")
    parser.add_argument("--batch-windows", type=int, default=32)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    world, rank = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else torch.device("cpu")
    if world > 1:
        torch.distributed.init_process_group("nccl" if cuda else "gloo")
    model, meta, artifact_tables, artifact_bytes = load_artifact(args.artifact)
    cfg = meta["config"]
    val_tokens = load_val_tokens(args.data_dir or cfg["data_dir"])
    if args.max_tokens:
        val_tokens = val_tokens[:args.max_tokens]
    order = 0 if args.no_ngram else (args.ngram_order if args.ngram_order is not None else cfg.get("ngram_order", 0))
    result = score(model.to(device).eval(), val_tokens, byte_tables(args.tokenizer or cfg["tokenizer"], cfg["vocab_size"]),
                   seq_len=cfg["seq_len"], stride=args.stride or cfg["eval_stride"], ngram_order=order,
                   artifact_tables=artifact_tables, audit=args.audit, batch_windows=args.batch_windows,
                   rank=rank, world=world, device=device)
    code_bytes = sum(os.path.getsize(p) for p in CODE_FILES)
    if rank == 0:
        if args.audit:
            print(f"audit positions={result['audit_count']} max_abs_sum_err={result['audit_max_err']:.3e} "
                  f"{'PASS' if result['audit_max_err'] <= 1e-6 else 'FAIL'}")
        print(f"final val_bpb={result['val_bpb']:.6f} val_loss={result['val_loss']:.6f} "
              f"bytes_total={artifact_bytes + code_bytes} bytes_code={code_bytes} "
              f"train_time_s={meta.get('train_time_s', 0.0):.1f} eval_time_s={result['eval_time_s']:.1f}")
    if args.audit and result["audit_max_err"] > 1e-6:
        raise ArtifactError(f"normalization audit failed: max |sum p - 1| = {result['audit_max_err']:.3e} > 1e-6")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except (ArtifactError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
