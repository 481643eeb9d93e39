"""records/diff.py: scores side by side, the config keys that differ (nested ones flattened), a code diff
summary, and a clear error for a folder that is not a record."""
import json

import eval_ngram
from records import diff

SCRIPT = "import torch\n\ndef train():\n    lr = 0.02\n    return lr\n"


def make_record(folder, val_bpb, config, script=SCRIPT):
    folder.mkdir(parents=True)
    submission = {"author": "test", "name": folder.name, "val_bpb": val_bpb, "val_loss": 2.0, "bytes_total": 15_000_000,
                  "bytes_code": 50_000, "train_time_s": 600.0, "eval_time_s": 80.0, "config": config}
    (folder / "submission.json").write_text(json.dumps(submission))
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "train_gpt.py").write_text(script)
    (folder / "eval_ngram.py").write_text("def score():\n    pass\n")
    return str(folder)


def run_cli(args, capsys):
    """diff.main as the command line runs it: (the error line it prints or None, stdout)."""
    try:
        diff.main([str(a) for a in args])
    except diff.RecordError as error:
        return eval_ngram.error_line(error, diff.RecordError), capsys.readouterr().out
    return None, capsys.readouterr().out


def test_lists_changed_config_keys_flattened_and_the_score_delta(tmp_path, capsys):
    a = make_record(tmp_path / "a", 1.2244, {"seq_len": 1024, "model": {"dim": 512, "layers": 9}, "seed": 1})
    b = make_record(tmp_path / "b", 1.2000, {"seq_len": 2048, "model": {"dim": 512, "layers": 11}, "ema": True})
    error, out = run_cli([a, b], capsys)
    assert error is None
    assert "config: 4 keys differ:" in out
    assert "  seq_len: 1024 -> 2048" in out and "  model.layers: 9 -> 11" in out
    assert "  seed: 1 -> (absent)" in out and "  ema: (absent) -> true" in out
    assert "model.dim" not in out
    assert any(line.split() == ["val_bpb", "1.2244", "1.2", "-0.0244"] for line in out.splitlines())
    assert any(line.split() == ["packing_loss.loss", "-", "-", "-"] for line in out.splitlines())  # older folders


def test_the_packing_loss_is_compared_when_both_runs_measured_it(tmp_path, capsys):
    folders = [make_record(tmp_path / name, 1.2, {}) for name in ("a", "b")]
    for folder, loss in zip(folders, (0.004, 0.0015)):
        path = f"{folder}/submission.json"
        submission = json.load(open(path))
        json.dump({**submission, "packing_loss": {"holdout_tokens": 262144, "loss": loss}}, open(path, "w"))
    _, out = run_cli(folders, capsys)
    assert any(line.split() == ["packing_loss.loss", "0.004", "0.0015", "-0.0025"] for line in out.splitlines())


def test_code_summary_counts_changed_lines_and_shows_the_hunk(tmp_path, capsys):
    a = make_record(tmp_path / "a", 1.2, {"seq_len": 1024})
    b = make_record(tmp_path / "b", 1.2, {"seq_len": 1024}, SCRIPT.replace("lr = 0.02", "lr = 0.03\n    lr *= 2"))
    _, out = run_cli([a, b], capsys)
    assert "config: 0 keys differ" in out
    assert "  eval_ngram.py: identical" in out
    assert "  train_gpt.py: +2 -1 lines in 1 hunk" in out
    assert "    -    lr = 0.02" in out and "    +    lr *= 2" in out


def test_a_folder_without_submission_json_is_a_clear_error(tmp_path, capsys):
    a = make_record(tmp_path / "a", 1.2, {})
    (tmp_path / "not_a_record").mkdir()
    error, _ = run_cli([a, tmp_path / "not_a_record"], capsys)
    assert error == (f"error: {tmp_path / 'not_a_record'} is not a record folder (no submission.json); "
                     "pass folders like records/<track>/<date>_<name>")
    (tmp_path / "a" / "submission.json").write_text("{broken")
    error, _ = run_cli([a, a], capsys)
    assert error.startswith(f"error: {a}/submission.json: not valid JSON")
