"""Issue 14 entropy stage: the same quantized weights through plain LZMA and the alternatives, in bytes per weight.

    python records/bench/2026-12-01_issue14_packing/entropy.py gaussian|student_t|DIR_OF_weights_N.pt [attn_bits mlp_bits]

Synthetic sets have the 11-layer record's shapes (27M block weights, per-row N(0, 1/fan_in) or Student-t(4) rows);
a DIR holds probe.py's fp16 weights. Quantized with eval_ngram.quantize_rows at the record's plan.
"""
import glob
import lzma
import math
import os
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

sys.path.insert(0, os.getcwd())
import eval_ngram as E  # noqa: E402

SHAPES = [("attn.q", 512, 512), ("attn.k", 256, 512), ("attn.v", 256, 512), ("attn.proj", 512, 512),
          ("mlp.fc", 1536, 512), ("mlp.proj", 512, 1536)]


def weights(source: str) -> dict[str, torch.Tensor]:
    if os.path.isdir(source):
        state = {}
        for path in sorted(glob.glob(os.path.join(source, "weights_*.pt"))):
            state.update(torch.load(path, weights_only=True))
        return {k: v.float() for k, v in state.items() if v.ndim == 2 and v.numel() > 65536 and "emb" not in k}
    g = torch.Generator().manual_seed(0)
    out = {}
    for layer in range(11):
        for name, rows, cols in SHAPES:
            if source == "gaussian":
                w = torch.randn(rows, cols, generator=g)
            else:  # Student-t with 4 degrees of freedom: heavier tails, as trained matrices show
                w = torch.randn(rows, cols, generator=g) / torch.sqrt(torch.distributions.Chi2(4.0).sample((rows, cols)) / 4)
            out[f"blocks.{layer}.{name}.weight"] = w * cols ** -0.5
    return out


def lzma_chunks(raw: bytes, **options) -> int:
    with ThreadPoolExecutor(2) as pool:
        return sum(pool.map(lambda i: len(lzma.compress(raw[i:i + E.LZMA_CHUNK], **options)), range(0, len(raw), E.LZMA_CHUNK)))


def entropy_bytes(q: np.ndarray) -> float:
    counts = np.bincount(q.astype(np.int64).ravel() + 128, minlength=256)
    p = counts[counts > 0] / q.size
    return float(-(p * np.log2(p)).sum() * q.size / 8)


def main():
    source = sys.argv[1]
    attn_bits, mlp_bits = (int(sys.argv[2]), int(sys.argv[3])) if len(sys.argv) > 3 else (6, 5)
    ws = weights(source)
    qs, scales = {}, []
    started = time.perf_counter()
    for name, w in ws.items():
        q, s = E.quantize_rows(w, mlp_bits if ".mlp." in name else attn_bits)
        qs[name] = q.numpy()
        scales.append(s.numpy())
    quant_s = time.perf_counter() - started
    n = sum(q.size for q in qs.values())
    scale_bytes = np.concatenate(scales).tobytes()

    def payload(order=lambda q: q) -> bytes:
        return b"".join(order(q).tobytes() for q in qs.values()) + scale_bytes
    raw = payload()
    lc0 = [{"id": lzma.FILTER_LZMA2, "preset": 9, "lc": 0, "lp": 0, "pb": 0}]
    zigzag = lambda q: ((q.astype(np.int16) << 1) ^ (q.astype(np.int16) >> 15)).astype(np.uint8)

    def int6(q):  # four 6-bit values in three bytes (all values fit 6 bits at int6 and below)
        u = (q.astype(np.int16).ravel() & 63).astype(np.uint32)
        u = np.pad(u, (0, -len(u) % 4)).reshape(-1, 4)
        v = u[:, 0] | u[:, 1] << 6 | u[:, 2] << 12 | u[:, 3] << 18
        return np.stack([v & 255, v >> 8 & 255, v >> 16], 1).astype(np.uint8)

    def planes(q):  # bit planes: each of the 8 bits of every value as its own packed stream
        u = q.view(np.uint8).ravel()
        return np.concatenate([np.packbits((u >> b) & 1) for b in range(8)])
    rows = {}
    started = time.perf_counter()
    rows["lzma preset 9, 4 MiB streams (today)"] = lzma_chunks(raw, preset=9)
    lzma_s = time.perf_counter() - started
    rows["lzma lc=0 lp=0 pb=0"] = lzma_chunks(raw, format=lzma.FORMAT_XZ, filters=lc0)
    rows["lzma, one stream"] = len(lzma.compress(raw, preset=9))
    rows["zigzag bytes + lzma"] = lzma_chunks(payload(zigzag), preset=9)
    rows["column-major (transposed) + lzma"] = lzma_chunks(payload(lambda q: np.ascontiguousarray(q.T)), preset=9)
    rows["rows sorted by scale + lzma"] = lzma_chunks(b"".join(q[np.argsort(s)].tobytes() for q, s in zip(qs.values(), scales)) + scale_bytes, preset=9)
    rows["bit planes + lzma"] = lzma_chunks(payload(planes), preset=9)
    rows["int6 packed (4 in 3 bytes) + lzma"] = lzma_chunks(payload(int6), preset=9) if max(attn_bits, mlp_bits) <= 6 else None
    huffman = lambda r: (lambda c: len(c.compress(r) + c.flush()))(zlib.compressobj(9, zlib.DEFLATED, 15, 9, zlib.Z_HUFFMAN_ONLY))
    rows["zlib Huffman only (no matching), one stream"] = huffman(raw)
    started = time.perf_counter()
    rows["adopted: per 4 MiB stream the smaller of Huffman-only / lzma"] = sum(
        len(E.compress_stream(raw[i:i + E.LZMA_CHUNK])[1]) for i in range(0, len(raw), E.LZMA_CHUNK))
    adopted_s = time.perf_counter() - started
    try:
        import brotli
        rows["brotli q11"] = len(brotli.compress(raw, quality=11))
    except ImportError:
        pass
    try:
        import zstandard
        rows["zstd 22"] = len(zstandard.ZstdCompressor(level=22).compress(raw))
    except ImportError:
        pass
    rows["order-0 entropy per tensor (bound, no table)"] = int(sum(entropy_bytes(q) for q in qs.values()) + len(scale_bytes))
    print(f"| {source} attn int{attn_bits} mlp int{mlp_bits}: {n:,} weights | bytes | bytes/weight | vs today |")
    print("|---|---|---|---|")
    base = rows["lzma preset 9, 4 MiB streams (today)"]
    for k, v in rows.items():
        if v is not None:
            print(f"| {k} | {v:,} | {v / n:.4f} | {100 * (v / base - 1):+.2f}% |")
    print(f"quantize_rows {quant_s:.1f} s, today's lzma {lzma_s:.1f} s (2 threads), adopted {adopted_s:.1f} s (1 thread; "
          "it runs lzma too, to keep the smaller)")


main()
