"""The command line: exit codes, one-paragraph errors without tracebacks, listing and copying."""

from __future__ import annotations

import subprocess
import sys

import pytest

from crossrec_peft.cli import main
from tests.conftest import small_layout, write_jsonl


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "crossrec_peft", *args], capture_output=True, text=True, timeout=300)


def test_misspelt_recipe_exits_2_without_traceback():
    result = cli("recipe", "ecomerce")
    assert result.returncode == 2
    assert "Did you mean 'ecommerce'?" in result.stderr and "Traceback" not in result.stderr


def test_debug_shows_the_traceback():
    result = cli("--debug", "recipe", "ecomerce")
    assert result.returncode == 2 and "Traceback" in result.stderr


@pytest.mark.parametrize(
    "args, expected",
    [
        (["recipe", "ecommerce", "train.epoch=1"], "Did you mean 'epochs'?"),
        (["recipe", "ecommerce", "model.modalities.text.method.name=lorra"], "Did you mean 'lora'?"),
        (["recipe", "ecommerce", "model.modalities.text.backbone.name=bert-base"], "Unknown backbone 'bert-base'"),
        (["recipe", "ecommerce", "train.lr=fast"], "invalid value for 'train.lr'"),
        (["train", "no-such-file.yaml"], "does not exist"),
        (["recipe", "cp", "ecommerce"], "Usage: crossrec-peft recipe cp NAME DEST"),
        (["ls", "widgets"], "Unknown kind 'widgets'"),
    ],
)
def test_user_errors_exit_2(args, expected, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err


def test_bad_data_directory_exits_2(tmp_path, capsys):
    data = small_layout(tmp_path / "d")
    write_jsonl(data / "items.jsonl", [{"item_id": "i0", "title": "a", "category": "x", "image": "img/i0.png"}, {"item_id": "i0", "title": "b", "category": "y", "image": "img/i0.png"}])
    out = tmp_path / "run"  # never the checkout's runs/
    assert main(["recipe", "ecommerce", f"data.path={data}", "--quiet", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "items.jsonl, line 2, field 'item_id': duplicate item id 'i0'" in err
    assert main(["recipe", "ecommerce", f"data.path={tmp_path / 'missing'}", "--quiet", "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not out.exists()  # nothing is written before the inputs are checked


def test_overrides_after_options(capsys):
    assert main(["recipe", "ecommerce", "--quiet", "train.epoch=1"]) == 2
    assert "Did you mean 'epochs'?" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["recipe", "ecommerce", "--quiet", "--nope"])


def test_ls_and_recipe_ls(capsys):
    assert main(["ls", "methods"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("method:") and "lora" in out and "ia3" in out and "full" in out and "\nbackbone:" not in out
    assert main(["recipe", "ls"]) == 0
    assert "ecommerce" in capsys.readouterr().out


def test_recipe_cp_then_train_validates(tmp_path, capsys):
    assert main(["recipe", "cp", "ecommerce", str(tmp_path)]) == 0
    copied = tmp_path / "ecommerce.yaml"
    assert copied.is_file()
    assert main(["train", str(copied), "train.epochs=zero"]) == 2
    assert "train.epochs" in capsys.readouterr().err


def test_closed_pipe_is_not_a_traceback(tmp_path):
    """`crossrec-peft ... | head -1`: the reader has gone before the output comes (closed before the child
    even starts writing, so its first write fails); no traceback, no 'internal error'."""
    proc = subprocess.Popen([sys.executable, "-m", "crossrec_peft", "ls"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.close()
    err = proc.stderr.read() if proc.stderr else b""
    proc.wait(timeout=300)
    assert b"Traceback" not in err and b"internal error" not in err and b"BrokenPipe" not in err
