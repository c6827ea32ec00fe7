"""Shared by the trainer tests (test_train, test_resume, test_distributed): a text-only config on the tiny
BERT over a small hand-made layout, small enough that a two-epoch run takes seconds, and the CLI as a
subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import small_layout

REPO = Path(__file__).resolve().parent.parent

# 40 users with 6 interactions: 40 training windows, 10 batches of 4 per epoch.
BATCHES_PER_EPOCH = 10


def tiny_data(directory: Path) -> Path:
    if not (directory / "items.jsonl").is_file():
        small_layout(directory, num_items=30, num_users=40, length=6)
    return directory


def tiny_train_config(tiny_bert: Path, data_dir: Path, **train) -> dict:
    return {
        "name": "tiny-train",
        "domain": "ecommerce",
        "seed": 0,
        "data": {"path": str(data_dir)},
        "model": {
            "modalities": {
                "text": {
                    "fields": ["title"],
                    "backbone": {"name": f"hf:{tiny_bert}", "max_length": 16},
                    "method": {"name": "lora", "r": 4, "alpha": 8},
                }
            },
            "head_rank": 4,
        },
        "train": {"epochs": 2, "batch_size": 4, "eval_batch_size": 64, "log_every": 2, **train},
        "eval": {"ks": [5, 10], "baselines": ["popularity"]},
        "export": {"enabled": False},
    }


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def cli_env(extra_path: Path | None = None, **env) -> dict:
    out = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **env}
    paths = [str(REPO)] + ([str(extra_path)] if extra_path else []) + [out.get("PYTHONPATH", "")]
    out["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return out


def cli(args: list[str], *, env: dict | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    """`python -m crossrec_peft ARGS` (the module entry point) with a hard timeout."""
    return subprocess.run(
        [sys.executable, "-m", "crossrec_peft", *args], env=env or cli_env(), capture_output=True, text=True, timeout=timeout, cwd=REPO
    )
