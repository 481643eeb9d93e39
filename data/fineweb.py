"""data/fineweb.py: download FineWeb shards and their tokenizer from a Hugging Face hub dataset.

    python data/fineweb.py --variant sp1024 --train-shards 80                                   # the challenge's data
    python data/fineweb.py --repo-id kevclark/parameter-golf --variant sp8192 --train-shards 80 # the SP8192 records'

The challenge publishes pre-tokenized FineWeb in the hub dataset willdepueoai/parameter-golf; the SP8192 (and SP4096)
records use kevclark/parameter-golf, laid out the same way under datasets/: manifest.json (shard counts and sizes
per variant), datasets/fineweb10B_<variant>/fineweb_{train,val}_NNNNNN.bin and tokenizers/. Any variant the repo's
manifest lists works. They land in data/datasets/fineweb10B_<variant>/ and data/tokenizers/; each repo's manifest
is kept under its own name (data/datasets/manifest.json for the challenge's repo, manifest.<owner>--<name>.json for
others), so fetching from a second repo never reads the first one's manifest.
All val shards are fetched, and the first N train shards. Files already present and complete (the size the
manifest implies, or for a split's last shard a size that agrees with its header) are skipped, so an
interrupted download resumes where it stopped (huggingface_hub itself resumes a partially fetched file) and a
complete download works offline. --local-hub DIR reads the same layout from a folder instead of the network
(tests, mirrors, air-gapped machines).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sys
import time
import urllib.parse
import urllib.request

from huggingface_hub import constants, hf_hub_download
from huggingface_hub.errors import LocalEntryNotFoundError

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)
from eval_ngram import HEADER_INTS, ArgumentParser, DataError, read_shard, run_script  # noqa: E402

DEFAULT_REPO_ID = "willdepueoai/parameter-golf"
DEFAULT_REMOTE_ROOT = "datasets"


class DownloadError(Exception):
    """A file could not be fetched; the message says which, why, and what to do."""


# ---------------------------------------------------------------- where files come from


def may_reach_host(url: str) -> bool:
    """Whether requests to url can leave this machine: a proxy (HTTPS_PROXY / HTTP_PROXY for the url's scheme, or
    ALL_PROXY, unless NO_PROXY names the host) will look the host up, or its name has an address here. When neither,
    huggingface_hub retries each request for ~23 s before it gives up (measured on an offline H200 machine); knowing
    it up front, requests go straight to the local cache."""
    parts, proxies = urllib.parse.urlsplit(url), urllib.request.getproxies()
    if (proxies.get(parts.scheme or "https") or proxies.get("all")) and not urllib.request.proxy_bypass(parts.hostname or ""):
        return True
    try:
        socket.getaddrinfo(parts.hostname or "", None)
        return True
    except OSError:
        return False


class HubSource:
    """Files of a hub dataset repo, through huggingface_hub's cache (which resumes partial files)."""
    may_link = True  # cache blobs are never rewritten in place, so data/ can hard-link them and save the disk

    def __init__(self, repo_id: str, remote_root: str):
        self.repo_id, self.remote_root = repo_id, remote_root
        self.cache_only: bool | None = None  # decided at the first request

    def fetch(self, relative_path: str, force: bool = False) -> str:
        remote = f"{self.remote_root}/{relative_path}" if self.remote_root else relative_path
        folder, name = os.path.split(remote)
        if self.cache_only is None:
            self.cache_only = not may_reach_host(constants.ENDPOINT)
        if force and self.cache_only:
            raise DownloadError(f"{remote}: the cached copy is damaged and {constants.ENDPOINT} does not resolve (offline); "
                                "rerun where the hub is reachable, or pass --local-hub DIR with a good copy")
        try:
            return hf_hub_download(repo_id=self.repo_id, repo_type="dataset", filename=name,
                                   subfolder=folder or None, force_download=force, local_files_only=self.cache_only)
        except Exception as e:  # any transport failure becomes one clear line in main()
            if isinstance(e, LocalEntryNotFoundError) and self.cache_only:
                reason = (f"{constants.ENDPOINT} does not resolve and no proxy is set, so offline, and the file is not in "
                          "the local cache")
            elif isinstance(e, LocalEntryNotFoundError):  # what huggingface_hub raises when offline
                reason = "the hub is unreachable and the file is not in the local cache"
            else:
                reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no details'}"
            raise DownloadError(
                f"cannot download {remote} from hub dataset {self.repo_id} ({reason}). Check the network "
                "(or HF_ENDPOINT), or pass --local-hub DIR with a copy of the files; files already downloaded are kept"
            ) from None


class LocalHub:
    """The same layout in a local folder: DIR/<remote root>/manifest.json, DIR/<remote root>/datasets/...

    repo_id names the hub repo the folder is a copy of (it decides where the manifest is kept)."""
    may_link = False  # someone else's files: copy them, so changes to either side stay apart

    def __init__(self, folder: str, remote_root: str, repo_id: str = DEFAULT_REPO_ID):
        self.root, self.repo_id = os.path.join(folder, remote_root), repo_id

    def fetch(self, relative_path: str, force: bool = False) -> str:
        path = os.path.join(self.root, relative_path)
        if not os.path.isfile(path):
            raise DownloadError(f"{path}: not in the local hub folder; point --local-hub at a copy of the hub dataset")
        return path


# ---------------------------------------------------------------- manifest


def manifest_path(data_root: str, repo_id: str) -> str:
    """Where a repo's manifest is kept: one file per repo, since two repos list different variants and shards."""
    name = "manifest.json" if repo_id == DEFAULT_REPO_ID else f"manifest.{repo_id.replace('/', '--')}.json"
    return os.path.join(data_root, "datasets", name)


def variant_entries(manifest: dict, variant: str) -> tuple[dict, dict]:
    """The manifest's dataset and tokenizer entries of a variant such as sp1024."""
    name = f"fineweb10B_{variant}"
    dataset = next((d for d in manifest.get("datasets", []) if d.get("name") == name), None)
    if dataset is None:
        known = ", ".join(d.get("name", "?").removeprefix("fineweb10B_") for d in manifest.get("datasets", []))
        raise DownloadError(f"variant {variant!r} is not in the manifest; available: {known or 'none'}")
    tokenizer_name = dataset.get("tokenizer_name")
    tokenizer = next((t for t in manifest.get("tokenizers", []) if t.get("name") == tokenizer_name), None)
    if tokenizer is None:
        raise DownloadError(f"the manifest has no tokenizer entry {tokenizer_name!r} for {name}")
    return dataset, tokenizer


def shard_sizes(manifest: dict, dataset: dict, split: str) -> list[int | None]:
    """Expected bytes of each shard of a split: every shard but the last holds exactly shard_size tokens.

    None for the last shard (its length is whatever remained) and when the manifest has no shard_size;
    those shards are checked against their own header instead."""
    count = int((dataset.get("stats") or {}).get(f"files_{split}", 0))
    per_shard = manifest.get("shard_size")
    full = None if per_shard is None else HEADER_INTS * 4 + 2 * int(per_shard)
    return [full] * (count - 1) + [None] if count else []


# ---------------------------------------------------------------- download


def is_complete(path: str, expected_bytes: int | None) -> bool:
    if not os.path.isfile(path):
        return False
    if expected_bytes is not None:
        return os.path.getsize(path) == expected_bytes
    if path.endswith(".bin"):
        try:
            read_shard(path)
        except DataError:
            return False
    return os.path.getsize(path) > 0


def place(source: str, destination: str, link: bool) -> None:
    """Put a fetched file at its destination, via a temporary name so an interrupted copy is never mistaken
    for a file; a hard link when allowed and possible, else a copy."""
    os.makedirs(os.path.dirname(destination), exist_ok=True)
    tmp = destination + ".tmp"
    if os.path.lexists(tmp):
        os.remove(tmp)
    source = os.path.realpath(source)  # hub cache entries are symlinks into its blob store
    if link:
        try:
            os.link(source, tmp)
        except OSError:  # another file system, or links not allowed
            link = False
    if not link:
        shutil.copyfile(source, tmp)
    os.replace(tmp, destination)


def ensure(source, relative_path: str, destination: str, expected_bytes: int | None = None) -> bool:
    """Fetch a file unless it is already complete; True when it was fetched."""
    if is_complete(destination, expected_bytes):
        return False
    for attempt in range(2):  # the second, forced fetch replaces a damaged cached copy
        place(source.fetch(relative_path, force=attempt > 0), destination, link=source.may_link)
        if is_complete(destination, expected_bytes):
            return True
    size = os.path.getsize(destination)
    os.remove(destination)
    expected = f"the manifest implies {expected_bytes}" if expected_bytes else "its shard header disagrees"
    raise DownloadError(f"{relative_path}: fetched {size} bytes but {expected}; the copy was removed. "
                        "The published file or the manifest is off: report it, or pass --train-shards below it")


def download(source, data_root: str, variant: str, train_shards: int, log=print) -> dict:
    """Fetch manifest, val shards, the first train_shards train shards and the tokenizer; returns local paths
    and the vocabulary size (the tokenizer entry's, else the N of spN)."""
    manifest_file = manifest_path(data_root, source.repo_id)
    ensure(source, "manifest.json", manifest_file)
    try:
        with open(manifest_file) as f:
            manifest = json.load(f)
    except json.JSONDecodeError as e:
        raise DownloadError(f"{manifest_file}: not valid JSON ({e}); delete it and rerun") from None
    try:
        dataset, tokenizer = variant_entries(manifest, variant)
    except DownloadError as e:
        raise DownloadError(f"{e} (per {manifest_file} of {source.repo_id}; another --repo-id may have it, "
                            "e.g. kevclark/parameter-golf for sp4096 and sp8192)") from None
    available = int((dataset.get("stats") or {}).get("files_train", 0))
    if not 0 <= train_shards <= available:
        raise DownloadError(f"--train-shards {train_shards}: {dataset['name']} has {available} train shards "
                            f"(per {manifest_file}; delete that file to fetch the manifest again)")

    dataset_dir = os.path.join(data_root, "datasets", dataset["name"])
    files = []  # (relative path on the hub, local path, expected bytes)
    for split, count in (("val", None), ("train", train_shards)):
        for i, size in enumerate(shard_sizes(manifest, dataset, split)[:count]):
            name = f"fineweb_{split}_{i:06d}.bin"
            files.append((f"datasets/{dataset['name']}/{name}", os.path.join(dataset_dir, name), size))
    tokenizer_files = [tokenizer[key] for key in ("model_path", "vocab_path", "path") if tokenizer.get(key)]
    files += [(path, os.path.join(data_root, path), None) for path in tokenizer_files]

    for n, (remote, local, size) in enumerate(files, start=1):
        start = time.time()
        fetched = ensure(source, remote, local, size)
        status = (f"fetched {os.path.getsize(local) / 1e6:.1f} MB in {time.time() - start:.1f} s" if fetched
                  else "present, skipped")
        log(f"[{n}/{len(files)}] {os.path.basename(local)}: {status}")
    model = next((p for p in tokenizer_files if p.endswith(".model")), None)
    vocab = tokenizer.get("vocab_size") or (int(variant[2:]) if variant[:2] == "sp" and variant[2:].isdigit() else None)
    return {"data_dir": dataset_dir, "tokenizer": os.path.join(data_root, model) if model else None, "vocab_size": vocab}


# ---------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(
        description="Download FineWeb shards and their tokenizer from a Hugging Face hub dataset into data/.\n"
                    "Complete files are skipped, so reruns resume and a finished download works offline.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  python data/fineweb.py --variant sp1024 --train-shards 80     # the challenge's data "
               f"({DEFAULT_REPO_ID})\n"
               "  python data/fineweb.py --repo-id kevclark/parameter-golf --variant sp8192 --train-shards 80\n"
               "                                                               # the data the SP8192 records train on\n"
               "  python data/fineweb.py --variant sp1024 --train-shards 1      # a first look: val + 1 train shard\n\n"
               "Any variant the repo's manifest lists works (an unknown one is an error naming those listed). "
               "Offline, a missing file ends the run with one error line and exit code 2. "
               "HF_ENDPOINT and the other huggingface_hub variables apply.")
    parser.add_argument("--variant", default="sp1024",
                        help="dataset variant as the manifest names it: sp1024 (default), sp4096, sp8192, byte260, ...")
    parser.add_argument("--train-shards", type=int, default=80,
                        help="train shards to fetch, 100M tokens each (default 80, as the challenge's baseline)")
    parser.add_argument("--repo-id", default=DEFAULT_REPO_ID,
                        help=f"hub dataset repo (default {DEFAULT_REPO_ID}, the challenge's: sp1024; "
                             "kevclark/parameter-golf has sp4096 and sp8192)")
    parser.add_argument("--remote-root", default=DEFAULT_REMOTE_ROOT,
                        help=f"folder of the export inside the repo (default {DEFAULT_REMOTE_ROOT})")
    parser.add_argument("--local-hub", metavar="DIR", help="read the repo's files from DIR instead of the network")
    parser.add_argument("--data-root", default=os.path.join(REPO_ROOT, "data"), metavar="DIR",
                        help="where datasets/ and tokenizers/ go (default: data/ of this repo)")
    args = parser.parse_args(argv)

    source = (LocalHub(args.local_hub, args.remote_root, args.repo_id) if args.local_hub
              else HubSource(args.repo_id, args.remote_root))
    paths = download(source, args.data_root, args.variant, args.train_shards)
    print(f"ready: data_dir={paths['data_dir']} tokenizer={paths['tokenizer']}")
    if paths["tokenizer"] and paths["vocab_size"]:
        print(f"train on it: torchrun --standalone --nproc_per_node=8 train_gpt.py data_dir={paths['data_dir']} "
              f"tokenizer={paths['tokenizer']} vocab_size={paths['vocab_size']}")


if __name__ == "__main__":
    run_script(main, DownloadError)
