"""Shared test set-up: the repo root and tests/ on sys.path (so `import eval_ngram`, `from data import export`,
`from distributed import spawn_gloo` work),
the sp1024 tokenizer when this machine has it, and tiny shard folders made from data/sample with
data/export.py, built once per session for every test that needs real shards."""
import os
import sys

import pytest
import torch

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(TESTS_DIR)
sys.path.insert(0, TESTS_DIR)
sys.path.insert(0, REPO_ROOT)

SAMPLE_TRAIN = os.path.join(REPO_ROOT, "data", "sample", "gutenberg3_train.txt.xz")
SAMPLE_VAL = os.path.join(REPO_ROOT, "data", "sample", "gutenberg3_val.txt.xz")
TINY_BYTES = 200_000  # text per sample file: ~85k sp1024 train tokens, exported in well under a second


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Every test on one thread: tiny models run faster single-threaded, two threads spin-wait badly when other
    processes share the cores, and float sums come out in one order, run after run."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tokenizer_model(file_name: str, fetch: str) -> str:
    """Path of a sentencepiece model in ../shared/data/tokenizers/ or data/tokenizers/; the test is skipped on a
    machine without one (`fetch` says how to get it)."""
    for folder in (os.path.join(REPO_ROOT, "..", "shared", "data", "tokenizers"), os.path.join(REPO_ROOT, "data", "tokenizers")):
        if os.path.isfile(os.path.join(folder, file_name)):
            return os.path.join(folder, file_name)
    pytest.skip(f"no {file_name} in ../shared/data/tokenizers/ or data/tokenizers/; fetch it with {fetch}")


@pytest.fixture(scope="session")
def sp1024_model() -> str:
    return tokenizer_model("fineweb_1024_bpe.model", "python data/fineweb.py --train-shards 0")


def export_sample(out_dir: str, tokenizer_spec: str) -> str:
    from data import export
    tokenizer = export.load_tokenizer(tokenizer_spec, threads=2)
    export.export([SAMPLE_TRAIN], out_dir, tokenizer, val_files=[SAMPLE_VAL], max_bytes=TINY_BYTES,
                  log=lambda line: None)
    return out_dir


@pytest.fixture(scope="session")
def sp1024_shards(tmp_path_factory, sp1024_model) -> str:
    """A folder with fineweb_train_000000.bin / fineweb_val_000000.bin of sp1024 tokens (vocab 1024, BOS 1)."""
    return export_sample(str(tmp_path_factory.mktemp("sp1024_shards")), sp1024_model)


@pytest.fixture(scope="session")
def byte_shards(tmp_path_factory) -> str:
    """The same text as byte-level shards (vocab 256, BOS 0); needs no tokenizer file."""
    return export_sample(str(tmp_path_factory.mktemp("byte_shards")), "bytes")
