"""data/export.py: turn real text into token shards in the challenge format.

    python data/export.py TEXT... --tokenizer MODEL --out DIR [--val-fraction F | --val-files VAL...]
        [--shuffle-train SEED [--ordered-tail TOKENS]]

Input files are UTF-8 text, plain or .xz, with documents separated by one blank line ("\\n\\n"), the format of
../shared/data/ and data/sample/. Each document is tokenized on its own and starts with BOS: sentencepiece's
bos_id (1 for sp1024), or 0 with `--tokenizer bytes` (token = UTF-8 byte value 1..255, NUL bytes dropped,
vocab 256). Output: DIR/<prefix>_train_NNNNNN.bin and DIR/<prefix>_val_NNNNNN.bin (see eval_ngram.write_shard),
plus DIR/export.json describing what went in; export.json is written last, so its presence means a complete export.
Training documents keep the order of the inputs unless --shuffle-train SEED shuffles them across all the files (as
FineWeb's shards hold one kind of web text throughout); the val split keeps its order either way. --ordered-tail
TOKENS keeps the last training documents of the inputs, at least TOKENS tokens of them, out of the shuffle and in
their order at the end of the training split: the held-out tail (train_holdout_tokens <= TOKENS) then reads like the
val split, document after related document, which is what a score-first cache across documents learns from.
"""
from __future__ import annotations

import codecs
import glob
import json
import lzma
import os
import sys
import time

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)
from eval_ngram import ArgumentParser, DataError, files_sha256, load_sentencepiece, run_script, write_atomic, write_shard  # noqa: E402

DEFAULT_SHARD_TOKENS = 100_000_000  # the challenge's shard size
ENCODE_BATCH_CHARS = 4_000_000  # text per sentencepiece batch: big enough for its threads, small enough for progress
PROGRESS_EVERY_S = 5.0

# ---------------------------------------------------------------- reading documents


def read_text(path: str, max_bytes: int | None = None) -> str:
    """A file's text (.xz decompressed), at most max_bytes of it, cut back to whole documents."""
    opener = lzma.open if path.endswith(".xz") else open
    try:
        with opener(path, "rb") as f:
            if max_bytes is None:
                data, truncated = f.read(), False
            else:
                data = f.read(max_bytes)
                truncated = bool(f.read(1))
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (lzma.LZMAError, EOFError) as e:
        raise DataError(f"{path}: not a valid .xz file ({e}); re-copy or re-compress it") from None
    if truncated:
        # Only whole documents, unless the first document alone is longer than max_bytes.
        cut = data.rfind(b"\n\n")
        if cut > 0:
            data = data[:cut]
    try:
        # final=False lets a slice that ends inside a multi-byte character drop that character instead of failing.
        text = codecs.getincrementaldecoder("utf-8")().decode(data, final=not truncated)
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); "
                        "convert it to UTF-8 first") from None
    return text


def split_documents(text: str) -> list[str]:
    """Documents are separated by a blank line; NUL is dropped because the byte tokenizer reserves 0 for BOS."""
    docs = (doc.strip("\n") for doc in text.replace("\x00", "").split("\n\n"))
    return [doc for doc in docs if doc]


# ---------------------------------------------------------------- tokenizers


class ByteTokenizer:
    """Token id = UTF-8 byte (1..255), BOS = 0: no model file, nothing to download."""
    name, vocab_size, bos_id = "bytes", 256, 0

    def encode_docs(self, docs: list[str]) -> np.ndarray:
        joined = b"".join(b"\x00" + doc.encode("utf-8") for doc in docs)
        return np.frombuffer(joined, dtype=np.uint8).astype(np.uint16)


class SentencePieceTokenizer:
    def __init__(self, model_path: str, threads: int):
        self.sp = load_sentencepiece(model_path)
        self.name, self.threads = model_path, threads
        self.vocab_size, self.bos_id = self.sp.vocab_size(), self.sp.bos_id()
        if self.bos_id < 0:
            raise DataError(f"{model_path}: the model has no BOS piece, but every document must start with one")
        if self.vocab_size > 2**16:
            raise DataError(f"{model_path}: {self.vocab_size} pieces do not fit the shards' uint16 tokens")

    def encode_docs(self, docs: list[str]) -> np.ndarray:
        pieces = self.sp.encode(docs, add_bos=True, num_threads=self.threads)
        return np.concatenate([np.asarray(ids, dtype=np.uint16) for ids in pieces])


def load_tokenizer(spec: str, threads: int):
    return ByteTokenizer() if spec == "bytes" else SentencePieceTokenizer(spec, threads)


# ---------------------------------------------------------------- shards


class ShardWriter:
    """Collects one split's tokens and writes them as fixed-size shards (the last one shorter)."""

    def __init__(self, out_dir: str, prefix: str, split: str, shard_tokens: int):
        self.out_dir, self.prefix, self.split, self.shard_tokens = out_dir, prefix, split, shard_tokens
        self.pending: list[np.ndarray] = []
        self.pending_tokens, self.paths = 0, []
        self.docs = self.bytes = self.tokens = 0

    def add(self, docs: list[str], tokens: np.ndarray) -> None:
        self.docs += len(docs)
        self.bytes += sum(len(doc.encode("utf-8")) for doc in docs)
        self.tokens += tokens.size
        self.pending.append(tokens)
        self.pending_tokens += tokens.size
        while self.pending_tokens >= self.shard_tokens:
            buffer = np.concatenate(self.pending)
            self._write(buffer[:self.shard_tokens])
            self.pending, self.pending_tokens = [buffer[self.shard_tokens:]], buffer.size - self.shard_tokens

    def close(self) -> None:
        if self.pending_tokens:
            self._write(np.concatenate(self.pending))
        self.pending, self.pending_tokens = [], 0

    def _write(self, tokens: np.ndarray) -> None:
        path = os.path.join(self.out_dir, f"{self.prefix}_{self.split}_{len(self.paths):06d}.bin")
        write_shard(path, tokens)
        self.paths.append(path)

    def summary(self) -> dict:
        return {"docs": self.docs, "bytes": self.bytes, "tokens": self.tokens,
                "shards": [os.path.basename(p) for p in self.paths]}


# ---------------------------------------------------------------- export


def encode_in_batches(docs: list[str], tokenizer, label: str, log):
    """Yields (docs, tokens) batches; prints progress every few seconds so large inputs show signs of life."""
    start = last_print = time.time()
    total_chars, done_chars, begin = sum(len(d) for d in docs), 0, 0
    while begin < len(docs):
        end, batch_chars = begin, 0
        while end < len(docs) and (end == begin or batch_chars < ENCODE_BATCH_CHARS):
            batch_chars += len(docs[end])
            end += 1
        batch = docs[begin:end]
        yield batch, tokenizer.encode_docs(batch)
        done_chars, begin = done_chars + batch_chars, end
        if time.time() - last_print > PROGRESS_EVERY_S and begin < len(docs):
            last_print = time.time()
            rate = done_chars / 1e6 / (last_print - start)
            log(f"  {label}: {done_chars / 1e6:.1f}/{total_chars / 1e6:.1f} M chars, {begin}/{len(docs)} docs, "
                f"{rate:.1f} M chars/s")


def ordered_tail_size(docs: list[str], tokenizer, tokens: int) -> int:
    """How many of the last documents it takes to hold at least `tokens` tokens (BOS included)."""
    count = held = 0
    while held < tokens:
        if count == len(docs):
            raise DataError(f"--ordered-tail {tokens:,}: the training documents hold only {held:,} tokens; "
                            "ask for fewer or pass more text")
        count += 1
        held += tokenizer.encode_docs([docs[-count]]).size
    return count


def encode_split(docs: list[str], writer: ShardWriter, tokenizer, source: str, split: str, log) -> None:
    if docs:
        tokens_before = writer.tokens
        for batch, tokens in encode_in_batches(docs, tokenizer, f"{os.path.basename(source)} ({split})", log):
            writer.add(batch, tokens)
        log(f"{source}: {len(docs)} {split} docs -> {writer.tokens - tokens_before:,} tokens")


def export(train_files: list[str], out_dir: str, tokenizer, *, val_files: list[str] | None = None,
           val_fraction: float = 0.05, max_bytes: int | None = None, prefix: str = "fineweb",
           shard_tokens: int = DEFAULT_SHARD_TOKENS, shuffle_seed: int | None = None, ordered_tail: int = 0,
           log=print) -> dict:
    """Tokenize the inputs into train/val shards in out_dir; returns what export.json records.

    Val split: with val_files, exactly those files; otherwise every k-th document of the inputs
    (k = round(1 / val_fraction)), counted across all files in order, so the split never changes between runs.
    With shuffle_seed, the training documents of all the inputs are held in memory, put in the random order that
    seed draws, and written after the val split: text given corpus after corpus is then mixed in every shard; the
    last documents that hold at least ordered_tail tokens stay out of the shuffle and follow it in input order.
    """
    if ordered_tail and shuffle_seed is None:
        raise DataError("--ordered-tail keeps a tail out of the shuffle: it needs --shuffle-train SEED")
    if val_files is None and not 0 < val_fraction <= 0.5:
        raise DataError(f"--val-fraction {val_fraction} is outside (0, 0.5]; pick e.g. 0.05")
    every = None if val_files else round(1 / val_fraction)
    os.makedirs(out_dir, exist_ok=True)
    info_path = os.path.join(out_dir, "export.json")
    if os.path.exists(info_path):  # first, so an interrupted export never looks complete
        os.remove(info_path)
    stale = [p for split in ("train", "val") for p in glob.glob(os.path.join(out_dir, f"{prefix}_{split}_*.bin"))]
    for path in stale:
        os.remove(path)
    if stale:
        log(f"removed {len(stale)} old shards from {out_dir}")

    writers = {split: ShardWriter(out_dir, prefix, split, shard_tokens) for split in ("train", "val")}
    inputs = [(path, "train") for path in train_files] + [(path, "val") for path in val_files or []]
    doc_count, held_train = 0, []
    for path, file_split in inputs:
        docs = split_documents(read_text(path, max_bytes))
        if not docs:
            raise DataError(f"{path}: no text in it (empty file); pass files that hold documents")
        if every is None:
            docs_by_split = {file_split: docs}
        else:
            docs_by_split = {"train": [], "val": []}
            for i, doc in enumerate(docs, start=doc_count):
                docs_by_split["val" if i % every == every - 1 else "train"].append(doc)
        doc_count += len(docs)
        if shuffle_seed is not None:
            held_train += docs_by_split.pop("train", [])
        for split, split_docs in docs_by_split.items():
            encode_split(split_docs, writers[split], tokenizer, path, split, log)
    if held_train:
        tail = ordered_tail_size(held_train, tokenizer, ordered_tail)
        order = np.random.default_rng(shuffle_seed).permutation(len(held_train) - tail)
        encode_split([held_train[i] for i in order], writers["train"], tokenizer, f"{len(train_files)} file(s) shuffled "
                     f"with seed {shuffle_seed}", "train", log)
        encode_split(held_train[len(held_train) - tail:], writers["train"], tokenizer, "the ordered tail", "train", log)

    for split, writer in writers.items():
        writer.close()
        if not writer.tokens:
            raise DataError(f"no {split} documents: {doc_count} input documents are too few for a {split} split; "
                            "pass more text, a larger --val-fraction, or --val-files")
    info = {
        "tokenizer": tokenizer.name,
        "tokenizer_sha256": None if tokenizer.name == "bytes" else files_sha256([tokenizer.name]),
        "vocab_size": tokenizer.vocab_size,
        "bos_id": tokenizer.bos_id,
        "val_split": "val files" if every is None else f"every {every}th document",
        "train_order": "input order" if shuffle_seed is None else f"documents shuffled with seed {shuffle_seed}" + (
            f", then the last {ordered_tail:,}+ tokens' documents in input order" if ordered_tail else ""),
        "max_bytes_per_file": max_bytes,
        "inputs": {"train": list(train_files), "val": list(val_files or [])},
        "train": writers["train"].summary(),
        "val": writers["val"].summary(),
    }
    write_atomic(info_path, json.dumps(info, indent=2))
    return info


# ---------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(
        description="Convert UTF-8 text files (plain or .xz; documents separated by a blank line) into "
                    "challenge-format train/val token shards.",
        epilog="Val split: with --val-files, the given files are val and the TEXT files are train (use this for "
               "corpora already split into *_train / *_val files). Without it, every k-th document of the TEXT "
               "files, k = round(1 / --val-fraction), counted across the files in the order given, is val; the "
               "split is the same on every run.")
    parser.add_argument("text", nargs="+", metavar="TEXT", help="input text files (.txt or .txt.xz)")
    parser.add_argument("--tokenizer", required=True, metavar="MODEL",
                        help="sentencepiece .model file, or 'bytes' for byte-level tokens (vocab 256, BOS 0)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory for shards and export.json")
    split = parser.add_mutually_exclusive_group()
    split.add_argument("--val-fraction", type=float, default=0.05, metavar="F",
                       help="fraction of documents that go to val, as every k-th document (default 0.05)")
    split.add_argument("--val-files", nargs="+", action="extend", metavar="VAL",
                       help="files that become val as a whole; TEXT files then are all train")
    parser.add_argument("--max-bytes", type=int, metavar="N",
                        help="read at most N bytes of text from each input file (whole documents), for quick runs")
    parser.add_argument("--prefix", default="fineweb",
                        help="shard name prefix: PREFIX_train_000000.bin (default fineweb, as the challenge)")
    parser.add_argument("--shard-tokens", type=int, default=DEFAULT_SHARD_TOKENS, metavar="N",
                        help=f"tokens per shard (default {DEFAULT_SHARD_TOKENS:,}, as the challenge)")
    parser.add_argument("--shuffle-train", type=int, metavar="SEED",
                        help="write the training documents of all the files in a random order drawn from SEED "
                             "(default: the order given); needs memory for all the training text")
    parser.add_argument("--ordered-tail", type=int, default=0, metavar="TOKENS",
                        help="with --shuffle-train: the last training documents, at least TOKENS tokens, stay in "
                             "input order at the end of the training split (a held-out tail that reads like val)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="sentencepiece encoding threads (default: all cores)")
    args = parser.parse_args(argv)
    if args.max_bytes is not None and args.max_bytes <= 0:
        parser.error("--max-bytes must be positive")
    if args.shard_tokens <= 0:
        parser.error("--shard-tokens must be positive")
    if args.shuffle_train is not None and args.shuffle_train < 0:
        parser.error("--shuffle-train takes a seed >= 0")
    if args.ordered_tail < 0:
        parser.error("--ordered-tail takes a number of tokens >= 0")

    start = time.time()
    tokenizer = load_tokenizer(args.tokenizer, args.threads)
    info = export(args.text, args.out, tokenizer, val_files=args.val_files, val_fraction=args.val_fraction,
                  max_bytes=args.max_bytes, prefix=args.prefix, shard_tokens=args.shard_tokens,
                  shuffle_seed=args.shuffle_train, ordered_tail=args.ordered_tail)
    train, val = info["train"], info["val"]
    print(f"wrote {len(train['shards'])} train shards ({train['tokens']:,} tokens, {train['docs']} docs) and "
          f"{len(val['shards'])} val shards ({val['tokens']:,} tokens, {val['docs']} docs) to {args.out} "
          f"in {time.time() - start:.1f} s")


if __name__ == "__main__":
    run_script(main)
