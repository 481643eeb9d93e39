"""Hardening (issue 17), one part per category: every failure a user can cause is one `error:` line and exit 2;
config values are checked up front; data before the first step; a non-finite loss or score never becomes a record and
the audit catches a scorer that peeks; files are written whole or not at all and trained weights survive a failed
write; a hostile artifact header is refused before a model is built; eval_ngram.py refuses an over-cap artifact."""
import lzma
import os
import struct
import subprocess
import sys
import zlib

import pytest
import torch

import eval_ngram
import train_gpt
from artifacts import stored_header, with_header

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["vocab_size=256", "tokenizer=bytes", "num_layers=2", "recur_layers=0", "value_embed_layers=1", "parallel_start=1", "model_dim=32", "num_heads=2", "num_kv_heads=1",
        "enrich_hidden=32", "bigram_buckets=64", "bigram_dim=8", "seq_len=32", "eval_stride=16", "train_batch_tokens=64",
        "iterations=4", "max_wallclock_seconds=0", "warmup_steps=1", "log_every=2", "device=cpu", "compile=off",
        "eval_max_tokens=400", "ngram_order=3", "ttt_steps=0", "eval_audit=8", "grad_accum_steps=1", "train_holdout_tokens=0"]


def tiny_config(*overrides):
    return train_gpt.resolve_config("smoke", [*TINY, *overrides])[0]


def byte_shards(folder, val=None):
    """Byte-level shards of a little repeating text (token 0 = BOS)."""
    text = list(b"the quick brown fox jumps over the lazy dog. " * 40)
    eval_ngram.write_shard(str(folder / "t_train_000000.bin"), [0] + text)
    eval_ngram.write_shard(str(folder / "t_val_000000.bin"), [0] + text[:600] if val is None else val)
    return str(folder)


def run(script, *args, cwd=REPO_ROOT):
    return subprocess.run([sys.executable, *script.split(), *map(str, args)], cwd=cwd, capture_output=True, text=True)


# ---------------------------------------------------------------- one `error:` line, exit 2, in every script
@pytest.mark.parametrize("command", [
    "train_gpt.py --print-config warmup_steps=-1",  # was silently accepted
    "train_gpt.py --print-config eval_stride=4096",  # was found after a whole training run
    "eval_ngram.py {tmp}/a.pgolf --data-dir {tmp} --stride 99999",  # was a ValueError traceback
    "eval_ngram.py {tmp}/a.pgolf --data-dir {tmp} --mix beta=-1",  # was scored
    "eval_ngram.py {tmp}/a.pgolf --bogus",  # argparse's own complaints: one line too
    "data/export.py {file} --tokenizer bytes --out {file}/out",  # OSError (not a directory): was a traceback
    "records/diff.py {tmp}/a {tmp}/b",  # was exit 1
])
def test_each_script_ends_a_user_error_in_one_error_line_and_exit_2(tmp_path, command):
    (tmp_path / "f.txt").write_text("some text\n\nmore text\n")
    (tmp_path / "a.pgolf").write_bytes(packed())
    byte_shards(tmp_path)
    proc = run(command.format(tmp=tmp_path, file=tmp_path / "f.txt"))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr


def test_disk_and_memory_failures_are_user_errors_but_bugs_keep_their_traceback():
    line = eval_ngram.error_line(OSError(28, "No space left on device", "/x/artifact.pgolf"))
    assert line.startswith("error: /x/artifact.pgolf: No space left on device; check")
    assert "lower train_batch_tokens" in eval_ngram.error_line(torch.OutOfMemoryError("CUDA out of memory"))
    assert eval_ngram.error_line(ZeroDivisionError("a bug")) is None


# ---------------------------------------------------------------- config, up front, naming the key
@pytest.mark.parametrize("override, message", [
    ("warmup_steps=-1", r"warmup_steps=-1: must be in \[0,inf\)"),
    ("max_wallclock_seconds=-5", "max_wallclock_seconds=-5.0: must be in"),
    ("eval_stride=0", r"eval_stride=0: must be in \[1,inf\)"),
    ("eval_stride=4096", "eval_stride=4096 eval_seq_len=0 seq_len=2048: needs eval_stride within 1..the window"),
    ("eval_seq_len=32", "eval_stride=64 eval_seq_len=32 seq_len=2048: needs eval_stride within 1..the window"),
    ("ema_decay=1", r"ema_decay=1.0: must be in \[0,1\)"),
    ("matrix_lr=nan", "matrix_lr=nan: must be in"),
    ("grad_clip=inf", "grad_clip=inf: must be in"),
    ("quant_bits=1", r"quant_bits=1: must be in \[2,8\]"),
    ("warmdown_frac=1.5", r"warmdown_frac=1.5: must be in \[0,1\]"),
    ("num_heads=3", "model_dim=512 num_heads=3: needs model_dim = num_heads x an even head size"),
    ("num_kv_heads=3", "num_heads=4 num_kv_heads=3"),
    ("ngram_order=1", "ngram_order=1"),
    ("train_holdout_tokens=1", "train_holdout_tokens=1: needs each 0 or >= 2"),  # was found after training, no record
    ("ngram_cache_bytes=100", None),  # fine: the record preset's ngram_order is 9
    ("egt_band_low=0.7", "egt_band_low=0.7 egt_band_high=0.6"),
    ("mlp_act=swish", "mlp_act='swish': choose one of leaky_relu2, relu2, gelu"),
    ("device=tpu", "device='tpu': choose one of"),
    ("run_name=../../etc", "run_name='../../etc' track='track_10min_16mb': needs plain names"),
    ("vocab_size=70000", "vocab_size=70000: needs at most 65536"),
    ("seed=-1", "seed=-1: must be in"),
])
def test_every_value_is_checked_before_anything_runs(override, message):
    if message is None:
        train_gpt.resolve_config("record", [override])
        return
    with pytest.raises(train_gpt.ConfigError, match=message):
        train_gpt.resolve_config("record", [override])


def test_every_numeric_key_has_a_range_and_every_preset_is_valid():
    ranged = set(" ".join(train_gpt.RANGES.values()).split())
    numeric = {f.name for f in train_gpt.dataclasses.fields(train_gpt.Config) if f.type in ("int", "float")}
    assert numeric == ranged
    for preset in train_gpt.PRESETS:
        train_gpt.resolve_config(preset)


# ---------------------------------------------------------------- data, before the first step
def test_an_empty_shard_is_refused_before_training(tmp_path):
    data = byte_shards(tmp_path)
    eval_ngram.write_shard(str(tmp_path / "t_train_000001.bin"), [])
    with pytest.raises(eval_ngram.DataError, match="t_train_000001.bin: the shard holds no tokens"):
        eval_ngram.check_data(data, "bytes")


def test_a_validation_token_outside_the_vocabulary_stops_the_run_before_its_first_step(tmp_path):
    data = byte_shards(tmp_path, val=[0, 5, 300, 7])
    with pytest.raises(eval_ngram.DataError, match="t_val_000000.bin: token id 300 >= vocab_size 256"):
        train_gpt.main(["--preset", "smoke", *TINY, f"data_dir={data}", f"records_dir={tmp_path / 'records'}"])
    [log] = (tmp_path / "records").rglob("train_seed*.log")
    assert not any(line.startswith("step=") for line in log.read_text().splitlines())


def test_a_tokenizer_other_than_the_one_the_shards_were_made_with_is_refused(tmp_path, sp1024_model):
    from data import export
    (tmp_path / "a.txt").write_text("one document.\n\nanother document.\n\nand a third one here.\n")
    out = str(tmp_path / "shards")
    export.export([str(tmp_path / "a.txt")], out, export.load_tokenizer("bytes", 1), val_fraction=0.5,
                  log=lambda line: None)
    with pytest.raises(eval_ngram.DataError, match="was exported with tokenizer bytes"):
        eval_ngram.check_data(out, sp1024_model)
    eval_ngram.check_data(out, "bytes")
    with pytest.raises(eval_ngram.DataError, match="1024 pieces but vocab_size=2048"):
        eval_ngram.byte_tables(sp1024_model, 2048)  # a larger vocab_size used to pass


# ---------------------------------------------------------------- non-finite scores and the audit
def audit(logits, targets, nll):
    return eval_ngram.audit_errors(torch.softmax(logits.double(), -1), targets, nll).tolist()


def test_the_audit_fails_a_scorer_that_peeks_at_the_target_and_any_improper_distribution():
    logits, targets = torch.randn(6, 10, generator=torch.Generator().manual_seed(0)), torch.arange(6)
    honest = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    sum_err, mismatch = audit(logits, targets, honest)
    assert sum_err < 1e-12 and mismatch < 1e-5
    peeking = -torch.log((torch.exp(-honest) + 0.01).clamp(max=1))  # extra mass on the true token only
    result = {"audit_max_err": sum_err, "audit_max_mismatch": audit(logits, targets, peeking)[1]}
    assert "looks at the target" in eval_ngram.audit_failure(result)
    negative = torch.softmax(logits.double(), -1)
    negative[:, 0] -= 0.5
    negative[:, 1] += 0.5  # still sums to 1
    assert eval_ngram.audit_errors(negative, targets, honest)[0] == float("inf")
    assert eval_ngram.audit_failure({"audit_max_err": float("nan"), "audit_max_mismatch": 0.0})  # NaN used to pass


def test_a_non_finite_score_is_never_recorded():
    with pytest.raises(eval_ngram.ArtifactError, match="nothing was recorded"):
        eval_ngram.check_score({"val_bpb": float("nan"), "val_loss": float("nan")}, audited=False)


@pytest.mark.parametrize("options", [{"beta": -0.5}, {"beta": 0.0}, {"gate_bias": float("inf")}, {"gate_order": float("nan")}, {"recent": -1.0}])
def test_the_mixer_refuses_options_that_can_make_a_probability_negative_or_zero(options):
    with pytest.raises(eval_ngram.UsageError, match="finite, beta > 0 and recent >= 0"):
        eval_ngram.NGramMixer(torch.arange(20) % 7, 3, 7, "cpu", **options)


# ---------------------------------------------------------------- whole files, nothing trained lost
def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "submission.json"
    eval_ngram.write_atomic(str(path), "old")

    real_open = open

    class Full:
        def __init__(self, *args):
            self.file = real_open(*args)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

        def write(self, data):
            self.file.write(data[:3])
            raise OSError(28, "No space left on device")
    monkeypatch.setattr("builtins.open", Full)
    with pytest.raises(OSError):
        eval_ngram.write_atomic(str(path), "new content")
    monkeypatch.undo()
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["submission.json"]


def test_an_artifact_that_cannot_be_written_is_saved_elsewhere_and_the_error_says_where(tmp_path):
    with pytest.raises(OSError) as error:
        eval_ngram.save_artifact(str(tmp_path / "gone" / "artifact.pgolf"), b"weights")
    rescue = str(error.value).split("saved to ")[1].split(" instead")[0]
    assert open(rescue, "rb").read() == b"weights"
    os.remove(rescue)


def test_a_record_that_cannot_be_finished_leaves_no_half_record(tmp_path, monkeypatch):
    real = eval_ngram.write_atomic

    def fail_at_submission(path, data):
        if path.endswith("submission.json"):
            raise OSError(28, "No space left on device", path)
        real(path, data)
    monkeypatch.setattr(eval_ngram, "write_atomic", fail_at_submission)
    (tmp_path / "artifact.pgolf").write_bytes(b"x")
    result = dict(val_loss=1.0, val_bpb=1.5, bytes_total=10, bytes_code=5, eval_time_s=1.0)
    facts = dict(steps=1, train_time_s=1.0, tok_s=1.0, peak_mem_mib=0.0, mfu=None, egt=None, losses=[(1, 2.0)],
                 packing_loss=None)
    with pytest.raises(OSError, match=r"no record was written \(val_bpb=1.500000\), the artifact stays at .*artifact.pgolf"):
        eval_ngram.write_record(str(tmp_path), tiny_config(), "smoke", result, facts, "1x CPU", [], 1)
    assert os.listdir(tmp_path) == ["artifact.pgolf"]


def test_a_log_that_cannot_be_written_does_not_stop_the_run(tmp_path, capsys):
    log = eval_ngram.file_logger(str(tmp_path / "missing" / "train.log"))
    log("step=1")
    log("step=2")
    out, err = capsys.readouterr()
    assert out == "step=1\nstep=2\n" and err.count("warning: cannot append") == 1


# ---------------------------------------------------------------- the artifact header, before any model is built
def packed():
    cfg = tiny_config()
    torch.manual_seed(0)
    return train_gpt.pack_model(train_gpt.GPT(cfg), cfg, {"train_time_s": 0.0})


def set_in(path, value):
    def change(header):
        *parents, last = path
        node = header
        for key in parents:
            node = node[key]
        if value is KeyError:
            del node[last]
        else:
            node[last] = value
    return change


@pytest.mark.parametrize("change, message", [
    (set_in(["tensors"], KeyError), "fields are missing"),
    (set_in(["payload_raw"], "lots"), "payload sizes are not byte counts"),
    (set_in(["tensors", 0, "kind"], "int4_packed"), "unknown kind 'int4_packed'"),
    (set_in(["tensors", 0, "shape"], [1024, "32"]), "has shape"),
    (set_in(["tensors", 0, "shape"], [2 ** 40, 2 ** 20]), "offset or size disagrees with its shape"),
    (set_in(["tensors", 1, "offset"], 0), "offset or size disagrees"),
    (set_in(["meta"], []), "no config in meta"),
    (set_in(["tables"], {"ngram": -5}), "table sizes are not byte counts"),
    (set_in(["tensors", 0, "kind"], ["fp16"]), "unknown kind"),  # a JSON list: unhashable, no TypeError
    (set_in(["payload_streams", 0, 0], ["lzma"]), "payload streams are not"),
    (set_in(["payload_raw"], 1 << 40), "payload sizes are not byte counts of at most"),  # a zero-stream bomb's claim
    (lambda header: [t.update(offset=float(t["offset"])) for t in header["tensors"]], "offset or size disagrees"),
])
def test_a_hostile_header_is_refused_before_decompression(change, message):
    with pytest.raises(eval_ngram.ArtifactError, match=message):
        eval_ngram.unpack_artifact(with_header(packed(), change))


def test_a_row_scale_offset_that_is_no_byte_count_is_refused():
    blob = eval_ngram.pack_artifact({"m": torch.randn(70, 1000)}, {"config": {}}, {"m": 5})
    scale_as_float = with_header(blob, lambda header: header["tensors"][0].update(scale_offset=70_000.0))
    with pytest.raises(eval_ngram.ArtifactError, match="offset or size disagrees"):  # 70000.0 == 70000: no slice index
        eval_ngram.unpack_artifact(scale_as_float)
    assert eval_ngram.unpack_artifact(with_header(blob, lambda header: None))[0]["m"].shape == (70, 1000)


@pytest.mark.parametrize("text", [lzma.compress(b"[" * 200_000 + b"]" * 200_000), b"[" * 200_000 + b"]" * 200_000,
                                  lzma.compress(b"[" + b"[]," * 1_000_000 + b"[]]")])
def test_a_header_too_deep_or_too_large_is_refused_as_corrupt(text):
    with pytest.raises(eval_ngram.ArtifactError, match="header is truncated or corrupt"):
        eval_ngram.unpack_artifact(eval_ngram.ARTIFACT_MAGIC + struct.pack("<I", len(text)) + text)


def test_a_stream_one_byte_over_the_payload_cannot_unbound_the_next_one(monkeypatch):
    """The first stream inflates to payload_raw + 1 bytes; the second, a deflate bomb, must still be cut short (zlib
    takes max_length=0 as no limit)."""
    first, bomb = lzma.compress(bytes(9)), zlib.compress(bytes(8 << 20), 9)
    header = {"format": eval_ngram.ARTIFACT_FORMAT, "meta": {"config": {}}, "payload_raw": 8, "tables": {},
              "tensors": [{"name": "w", "shape": [4], "kind": "fp16", "offset": 0, "nbytes": 8}],
              "payload_streams": [["lzma", len(first)], ["huffman", len(bomb)]]}
    inflated, decompress = [], eval_ngram.decompress_stream

    def counted(*args):
        piece = decompress(*args)
        inflated.append(len(piece))
        return piece
    monkeypatch.setattr(eval_ngram, "decompress_stream", counted)
    with pytest.raises(eval_ngram.ArtifactError):
        eval_ngram.unpack_artifact(stored_header(header) + first + bomb)
    assert inflated == [9]  # the bomb's stream stopped at its 1-byte bound, an error before any more was inflated


@pytest.mark.parametrize("change, message", [
    (set_in(["meta", "config", "num_layers"], "9"), "num_layers='9': expected a int"),
    (set_in(["meta", "config", "model_dim"], 1 << 20), r"artifact tensors \[.*\] do not fit the model"),  # no 4 TB model
    (set_in(["meta", "config", "num_layers"], 3), r"artifact tensors \['blocks.2"),
    (set_in(["meta", "config", "eval_stride"], 0), "eval_stride=0: must be in"),
    (set_in(["meta", "basis_seeds"], {"blocks.0.mlp.fc": "seed"}), "basis_seeds"),
])
def test_an_artifact_config_that_does_not_describe_its_tensors_is_refused_before_building(change, message, monkeypatch):
    state, meta, _ = eval_ngram.unpack_artifact(with_header(packed(), change))
    built = []
    real_init = train_gpt.GPT.__init__
    monkeypatch.setattr(train_gpt.GPT, "__init__", lambda self, *a: (built.append(torch.empty(0).is_meta),
                                                                     real_init(self, *a))[1])
    with pytest.raises(eval_ngram.ArtifactError, match=message):
        train_gpt.model_from_artifact(state, meta)
    assert all(built)  # at most a shape-only (meta device) model was made


# ---------------------------------------------------------------- the byte cap
def test_eval_refuses_an_artifact_over_the_cap_unless_allowed(tmp_path, monkeypatch, capsys):
    blob = packed()
    (tmp_path / "a.pgolf").write_bytes(blob)
    data = byte_shards(tmp_path)
    args = [str(tmp_path / "a.pgolf"), "--data-dir", data, "--no-ngram", "--max-tokens", "200", "--device", "cpu"]
    monkeypatch.setattr(eval_ngram, "ARTIFACT_LIMIT", len(blob))  # code bytes push it over
    with pytest.raises(eval_ngram.ArtifactError, match="over the .*-byte cap, so this score is no record; pass --allow"):
        eval_ngram.main(args)
    over = eval_ngram.code_size(True)
    assert capsys.readouterr().out.splitlines()[-1].endswith(f"over_cap_bytes={over}")
    assert eval_ngram.main(args + ["--allow-over-cap"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("final val_bpb=")


def test_eval_counts_the_code_bytes_as_the_training_run_did(tmp_path, monkeypatch, capsys):
    """An artifact that train_gpt.py packed to the cap, next to the self-extracting copies it counted, is no record
    over the cap when eval_ngram.py scores it from the checkout (whose plain scripts are ~3x the bytes)."""
    blob = packed()
    (tmp_path / "a.pgolf").write_bytes(blob)
    code = eval_ngram.code_size(True)
    monkeypatch.setattr(eval_ngram, "ARTIFACT_LIMIT", len(blob) + code)  # what train_gpt.py's quant_fit accepts
    assert eval_ngram.main([str(tmp_path / "a.pgolf"), "--data-dir", byte_shards(tmp_path), "--no-ngram",
                            "--max-tokens", "200", "--device", "cpu"]) == 0
    assert f"bytes_total={len(blob) + code} bytes_code={code} " in capsys.readouterr().out.splitlines()[-1]


def test_train_gpt_keeps_to_the_community_cap_of_1500_lines():
    with open(os.path.join(REPO_ROOT, "train_gpt.py")) as f:
        lines = sum(1 for _ in f)
    assert lines <= 1500, f"train_gpt.py has {lines} lines; the challenge's rule allows 1500"
