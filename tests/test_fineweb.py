"""data/fineweb.py against a fake hub folder and a failing transport: it fetches the val shards, the first N
train shards and the tokenizer, checks sizes against the manifest, skips what is complete, and offline ends
with one clear error line. No test touches the network."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from huggingface_hub.errors import LocalEntryNotFoundError

from data import fineweb
import eval_ngram
from eval_ngram import write_shard

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SHARD_TOKENS = 100  # train shards of 100, 100 and 50 tokens; one val shard of 60


def make_hub(folder, variants=(("sp1024", "sp_bpe_1024", "fineweb_1024_bpe"),)) -> str:
    """A folder laid out like the hub datasets (the challenge's willdepueoai/parameter-golf, and
    kevclark/parameter-golf of the SP8192 records): datasets/manifest.json, datasets/datasets/fineweb10B_<variant>/,
    datasets/tokenizers/. Each variant: train shards of 100, 100 and 50 tokens, one val shard of 60."""
    root = folder / "datasets"
    manifest = {"shard_size": SHARD_TOKENS, "datasets": [], "tokenizers": []}
    for variant, tokenizer_name, stem in variants:
        vocab = int(variant[2:])
        shards = root / "datasets" / f"fineweb10B_{variant}"
        shards.mkdir(parents=True)
        (root / "tokenizers").mkdir(exist_ok=True)
        manifest["datasets"].append({"name": f"fineweb10B_{variant}", "tokenizer_name": tokenizer_name,
                                     "stats": {"files_train": 3, "files_val": 1, "tokens_train": 250, "tokens_val": 60}})
        manifest["tokenizers"].append({"name": tokenizer_name, "model_path": f"tokenizers/{stem}.model",
                                       "vocab_path": f"tokenizers/{stem}.vocab"})
        for i, n in enumerate([100, 100, 50]):
            write_shard(str(shards / f"fineweb_train_{i:06d}.bin"), (np.arange(n) * 37) % vocab)
        write_shard(str(shards / "fineweb_val_000000.bin"), (np.arange(60) * 53) % vocab)
        (root / "tokenizers" / f"{stem}.model").write_bytes(f"{variant} model bytes".encode())
        (root / "tokenizers" / f"{stem}.vocab").write_bytes(f"{variant} vocab bytes".encode())
    (root / "manifest.json").write_text(json.dumps(manifest))
    return str(folder)


@pytest.fixture(autouse=True)
def hub_host_resolves(monkeypatch):
    """The hub's name resolves unless a test says otherwise: no test depends on this machine's DNS or proxies."""
    monkeypatch.setattr(fineweb.socket, "getaddrinfo", lambda host, port: [("resolved",)])
    for name in [n for n in os.environ if n.lower().endswith("_proxy")]:
        monkeypatch.delenv(name)


def no_dns(host, port):
    raise fineweb.socket.gaierror(-3, "Temporary failure in name resolution")


@pytest.fixture
def fake_hub(tmp_path):
    """The challenge's hub dataset: sp1024 only."""
    return make_hub(tmp_path / "hub")


@pytest.fixture
def sp8192_hub(tmp_path):
    """Laid out like kevclark/parameter-golf: sp4096 and sp8192, same layout as the challenge's repo."""
    return make_hub(tmp_path / "kevclark_hub", [("sp4096", "sp_bpe_4096", "fineweb_4096_bpe"),
                                                ("sp8192", "sp_bpe_8192", "fineweb_8192_bpe")])


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
    assert (data / "tokenizers" / "fineweb_1024_bpe.model").read_bytes() == b"sp1024 model bytes"
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


def test_a_hub_whose_name_does_not_resolve_is_read_from_the_cache_without_retries(tmp_path, monkeypatch):
    asked = []

    def cache_miss(**kwargs):  # huggingface_hub with local_files_only and nothing cached
        asked.append(kwargs["local_files_only"])
        raise LocalEntryNotFoundError("not in the cache")
    monkeypatch.setattr(fineweb.socket, "getaddrinfo", no_dns)
    monkeypatch.setattr(fineweb, "hf_hub_download", cache_miss)
    error = run_cli(["--data-root", tmp_path / "data", "--train-shards", 1])
    assert asked == [True]  # one request, to the cache: no network retries
    assert "huggingface.co does not resolve and no proxy is set, so offline, and the file is not in the local cache" in error


def download_from(hub: str, monkeypatch) -> list[bool]:
    """Serve every request from a hub folder, recording whether each asked for the local cache only."""
    asked = []

    def download(repo_id, repo_type, filename, subfolder, force_download, local_files_only):
        asked.append(local_files_only)
        return os.path.join(hub, subfolder, filename)
    monkeypatch.setattr(fineweb, "hf_hub_download", download)
    return asked


def test_an_offline_machine_with_the_files_cached_still_completes(fake_hub, tmp_path, monkeypatch):
    monkeypatch.setattr(fineweb.socket, "getaddrinfo", no_dns)
    asked = download_from(fake_hub, monkeypatch)
    assert run_cli(["--data-root", tmp_path / "data", "--train-shards", 1]) is None
    assert asked and set(asked) == {True}
    assert os.path.isfile(tmp_path / "data" / "datasets" / "fineweb10B_sp1024" / "fineweb_train_000000.bin")


@pytest.mark.parametrize("proxy, asks_the_hub", [
    ({"HTTPS_PROXY": "http://proxy.example:3128"}, True),
    ({"https_proxy": "http://proxy.example:3128"}, True),
    ({"ALL_PROXY": "socks5://proxy.example:1080"}, True),
    ({"HTTP_PROXY": "http://proxy.example:3128"}, False),  # the hub is https: an http proxy does not carry it
    ({"HTTPS_PROXY": "http://proxy.example:3128", "NO_PROXY": "huggingface.co"}, False),  # bypassed for the hub
])
def test_a_proxy_that_carries_hub_requests_is_used_even_if_the_name_does_not_resolve_here(fake_hub, tmp_path, monkeypatch,
                                                                                          proxy, asks_the_hub):
    monkeypatch.setattr(fineweb.socket, "getaddrinfo", no_dns)
    for name, value in proxy.items():
        monkeypatch.setenv(name, value)
    asked = download_from(fake_hub, monkeypatch)
    assert run_cli(["--data-root", tmp_path / "data", "--train-shards", 1]) is None
    assert asked and set(asked) == {not asks_the_hub}


def test_a_damaged_cached_file_offline_is_one_clear_error_not_a_forced_download(fake_hub, tmp_path, monkeypatch):
    bad = tmp_path / "bad.bin"
    write_shard(str(bad), np.arange(7))  # 7 tokens where the manifest implies a shard of 100
    asked = []

    def cached(repo_id, repo_type, filename, subfolder, force_download, local_files_only):
        asked.append((force_download, local_files_only))
        return str(bad) if filename == "fineweb_train_000000.bin" else os.path.join(fake_hub, subfolder, filename)
    monkeypatch.setattr(fineweb.socket, "getaddrinfo", no_dns)
    monkeypatch.setattr(fineweb, "hf_hub_download", cached)
    error = run_cli(["--data-root", tmp_path / "data", "--train-shards", 1])
    assert "fineweb_train_000000.bin: the cached copy is damaged and https://huggingface.co does not resolve" in error
    assert (True, True) not in asked  # huggingface_hub refuses force_download with local_files_only


def test_requests_go_to_the_network_when_the_hub_resolves(fake_hub, tmp_path, monkeypatch):
    asked = download_from(fake_hub, monkeypatch)
    assert run_cli(["--data-root", tmp_path / "data", "--train-shards", 1]) is None
    assert asked and set(asked) == {False}


def test_offline_command_line_exits_non_zero_with_one_line_on_stderr(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"))
    proc = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "data", "fineweb.py"), "--data-root",
                           str(tmp_path / "data")], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "and the file is not in the local cache" in proc.stderr


def test_hub_requests_name_the_dataset_repo_and_the_remote_folders(fake_hub, tmp_path, monkeypatch):
    requests = []

    def fake_download(repo_id, repo_type, filename, subfolder, force_download, local_files_only):
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


@pytest.mark.parametrize("variant", ["sp4096", "sp8192"])
def test_any_variant_of_the_sp8192_records_repo_lands_beside_the_challenge_data(fake_hub, sp8192_hub, tmp_path, capsys,
                                                                                 variant):
    data = tmp_path / "data"
    assert run_cli(["--local-hub", fake_hub, "--data-root", data, "--train-shards", 1]) is None  # sp1024 first
    assert run_cli(["--repo-id", "kevclark/parameter-golf", "--local-hub", sp8192_hub, "--data-root", data,
                    "--variant", variant, "--train-shards", 3]) is None
    vocab = variant[2:]
    shards = data / "datasets" / f"fineweb10B_{variant}"
    assert sorted(os.listdir(shards)) == [f"fineweb_train_00000{i}.bin" for i in range(3)] + ["fineweb_val_000000.bin"]
    assert (data / "tokenizers" / f"fineweb_{vocab}_bpe.model").read_bytes() == f"{variant} model bytes".encode()
    # each repo keeps its own manifest: the challenge's (no sp8192 in it) was not asked about sp8192
    assert sorted(os.listdir(data / "datasets")) == sorted(["manifest.json", "manifest.kevclark--parameter-golf.json",
                                                            "fineweb10B_sp1024", f"fineweb10B_{variant}"])
    model = data / "tokenizers" / f"fineweb_{vocab}_bpe.model"
    out = capsys.readouterr().out.splitlines()
    assert out[-2:] == [f"ready: data_dir={shards} tokenizer={model}",
                        f"train on it: torchrun --standalone --nproc_per_node=8 train_gpt.py data_dir={shards} "
                        f"tokenizer={model} vocab_size={vocab}"]
    assert (data / "tokenizers" / "fineweb_1024_bpe.model").read_bytes() == b"sp1024 model bytes"  # untouched


def test_a_variant_the_repo_does_not_list_names_those_it_does_and_where_else_to_look(fake_hub, tmp_path):
    error = run_cli(["--local-hub", fake_hub, "--data-root", tmp_path / "data", "--variant", "sp8192"])
    assert error.startswith("error: variant 'sp8192' is not in the manifest; available: sp1024 (per ")
    assert "willdepueoai/parameter-golf; another --repo-id may have it, e.g. kevclark/parameter-golf" in error


def test_sp8192_requests_go_to_the_records_repo_under_the_same_layout(sp8192_hub, tmp_path, monkeypatch):
    requests = []

    def fake_download(repo_id, repo_type, filename, subfolder, force_download, local_files_only):
        requests.append((repo_id, f"{subfolder}/{filename}"))
        return os.path.join(sp8192_hub, subfolder, filename)
    monkeypatch.setattr(fineweb, "hf_hub_download", fake_download)
    assert run_cli(["--repo-id", "kevclark/parameter-golf", "--variant", "sp8192", "--data-root", tmp_path / "data",
                    "--train-shards", 1]) is None
    assert requests == [("kevclark/parameter-golf", path) for path in [
        "datasets/manifest.json", "datasets/datasets/fineweb10B_sp8192/fineweb_val_000000.bin",
        "datasets/datasets/fineweb10B_sp8192/fineweb_train_000000.bin",
        "datasets/tokenizers/fineweb_8192_bpe.model", "datasets/tokenizers/fineweb_8192_bpe.vocab"]]


def test_help_gives_the_commands_for_the_challenge_data_and_the_sp8192_data(capsys):
    with pytest.raises(SystemExit) as exit_:
        fineweb.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "python data/fineweb.py --variant sp1024 --train-shards 80" in out
    assert "python data/fineweb.py --repo-id kevclark/parameter-golf --variant sp8192 --train-shards 80" in out
