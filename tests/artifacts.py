"""Artifact blobs edited the way a hostile or damaged file would be: `with_header(blob, change)` rewrites the stored
header (LZMA'd JSON) with change(header) applied and keeps the bytes after it."""
import json
import lzma
import struct

import eval_ngram


def stored_header(header) -> bytes:
    text = lzma.compress(json.dumps(header).encode())
    return eval_ngram.ARTIFACT_MAGIC + struct.pack("<I", len(text)) + text


def with_header(blob: bytes, change) -> bytes:
    header, payload = eval_ngram.read_header(blob)
    change(header)
    return stored_header(header) + blob[payload:]
