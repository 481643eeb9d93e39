"""data/fineweb.py against a fake hub folder and a failing transport: it fetches the val shards, the first N
train shards and the tokenizer, checks sizes against the manifest, skips what is complete, and offline ends
with one clear error line. No test touches the network."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from data import fineweb
import eval_ngram
from eval_ngram import write_shard

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SHARD_TOKENS = 100  # train shards of 100, 100 and 50 tokens; one val shard of 60


@pytest.fixture
def fake_hub(tmp_path):
    """A folder laid out like the hub dataset: datasets/manifest.json, datasets/datasets/..., datasets/tokenizers/."""
    root = tmp_path / "hub" / "datasets"
    shards = root / "datasets" / "fineweb10B_sp1024"
    shards.mkdir(parents=True)
    (root / "tokenizers").mkdir()
    manifest = {"shard_size": SHARD_TOKENS,
                "datasets": [{"name": "fineweb10B_sp1024", "tokenizer_name": "sp_bpe_1024",
                              "stats": {"files_train": 3, "files_val": 1, "tokens_train": 250, "tokens_val": 60}}],
                "tokenizers": [{"name": "sp_bpe_1024", "model_path": "tokenizers/fineweb_1024_bpe.model",
                                "vocab_path": "tokenizers/fineweb_1024_bpe.vocab"}]}
    (root / "manifest.json").write_text(json.dumps(manifest))
    for i, n in enumerate([100, 100, 50]):
        write_shard(str(shards / f"fineweb_train_{i:06d}.bin"), np.arange(n) % 1024)
    write_shard(str(shards / "fineweb_val_000000.bin"), np.arange(60))
    (root / "tokenizers" / "fineweb_1024_bpe.model").write_bytes(b"model bytes")
    (root / "tokenizers" / "fineweb_1024_bpe.vocab").write_bytes(b"vocab bytes")
    return str(tmp_path / "hub")


class CountingHub(fineweb.LocalHub):
    def __init__(self, folder):
        super().__init__(folder, "datasets")
        self.fetched = []

    def fetch(self, relative_path, force=False):
        self.fetched.append(os.path.basename(relative_path))
        return super().fetch(relative_path, force)


def run_cli(args):
    """fineweb.main as the command line runs it; returns the error line it prints (None on success)."""
    try:
        fineweb.main([str(a) for a in args])
    except Exception as error:
        return eval_ngram.error_line(error, fineweb.DownloadError) or pytest.fail(f"not a user error: {error!r}")
    return None


def test_fetches_val_the_first_n_train_shards_and_the_tokenizer(fake_hub, tmp_path, capsys):
    data = tmp_path / "data"
    assert run_cli(["--local-hub", fake_hub, "--data-root", data, "--train-shards", 2]) is None
    shards = data / "datasets" / "fineweb10B_sp1024"
    assert sorted(os.listdir(shards)) == ["fineweb_train_000000.bin", "fineweb_train_000001.bin",
                                          "fineweb_val_000000.bin"]
    assert (data / "tokenizers" / "fineweb_1024_bpe.model").read_bytes() == b"model bytes"
    assert (data / "datasets" / "manifest.json").exists()
    model = data / "tokenizers" / "fineweb_1024_bpe.model"
    assert f"ready: data_dir={shards} tokenizer={model}" in capsys.readouterr().out


def test_rerun_skips_complete_files_and_refetches_a_truncated_one(fake_hub, tmp_path):
    data = str(tmp_path / "data")
    first = CountingHub(fake_hub)
    fineweb.download(first, data, "sp1024", 3, log=lambda line: None)
    assert len(first.fetched) == 1 + 1 + 3 + 2  # manifest, val, train, tokenizer model + vocab
    last = os.path.join(data, "datasets", "fineweb10B_sp1024", "fineweb_train_000002.bin")
    with open(last, "r+b") as f:
        f.truncate(500)  # damaged: shorter than its header says (the last shard's length is not in the manifest)
    second = CountingHub(fake_hub)
    fineweb.download(second, data, "sp1024", 3, log=lambda line: None)
    assert second.fetched == ["fineweb_train_000002.bin"]
    assert os.path.getsize(last) == 256 * 4 + 2 * 50


def test_a_full_shard_whose_size_disagrees_with_the_manifest_is_rejected(fake_hub, tmp_path):
    hub_shard = os.path.join(fake_hub, "datasets", "datasets", "fineweb10B_sp1024", "fineweb_train_000000.bin")
    write_shard(hub_shard, np.arange(SHARD_TOKENS + 1))  # one token more than the manifest's shard_size
    error = run_cli(["--local-hub", fake_hub, "--data-root", tmp_path / "data", "--train-shards", 1])
    assert "fineweb_train_000000.bin: fetched 1226 bytes but the manifest implies 1224" in error
    assert not os.path.exists(tmp_path / "data" / "datasets" / "fineweb10B_sp1024" / "fineweb_train_000000.bin")


def test_more_train_shards_than_published_is_a_clear_error(fake_hub, tmp_path):
    error = run_cli(["--local-hub", fake_hub, "--data-root", tmp_path / "data", "--train-shards", 4])
    assert error.startswith("error: --train-shards 4: fineweb10B_sp1024 has 3 train shards")


def test_offline_transport_failure_ends_with_one_clear_line(tmp_path, monkeypatch):
    def no_network(**kwargs):
        raise ConnectionError("[Errno -2] Name or service not known")
    monkeypatch.setattr(fineweb, "hf_hub_download", no_network)
    error = run_cli(["--data-root", tmp_path / "data", "--train-shards", 1])
    assert error.startswith("error: cannot download datasets/manifest.json from hub dataset "
                            "willdepueoai/parameter-golf (ConnectionError: [Errno -2] Name or service not known)")
    assert "\n" not in error and "Check the network" in error
    assert not os.path.exists(tmp_path / "data" / "datasets" / "manifest.json")


def test_offline_command_line_exits_non_zero_with_one_line_on_stderr(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"))
    proc = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "data", "fineweb.py"), "--data-root",
                           str(tmp_path / "data")], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "the hub is unreachable" in proc.stderr


def test_hub_requests_name_the_dataset_repo_and_the_remote_folders(fake_hub, tmp_path, monkeypatch):
    requests = []

    def fake_download(repo_id, repo_type, filename, subfolder, force_download):
        requests.append((repo_id, repo_type, f"{subfolder}/{filename}"))
        return os.path.join(fake_hub, subfolder, filename)
    monkeypatch.setattr(fineweb, "hf_hub_download", fake_download)
    assert run_cli(["--data-root", tmp_path / "data", "--train-shards", 1]) is None
    assert requests[:3] == [("willdepueoai/parameter-golf", "dataset", "datasets/manifest.json"),
                            ("willdepueoai/parameter-golf", "dataset",
                             "datasets/datasets/fineweb10B_sp1024/fineweb_val_000000.bin"),
                            ("willdepueoai/parameter-golf", "dataset",
                             "datasets/datasets/fineweb10B_sp1024/fineweb_train_000000.bin")]
    assert os.path.isfile(tmp_path / "data" / "tokenizers" / "fineweb_1024_bpe.vocab")
