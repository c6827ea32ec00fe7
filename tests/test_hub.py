"""The Hub side of packages, up to the network boundary: addresses, what a push uploads (verified first),
the model card as the Hub reads it, loading from a snapshot in a local Hugging Face cache with
HF_HUB_OFFLINE=1 through the real snapshot_download, and an unreachable Hub (a closed local port as
HF_ENDPOINT) for packages and backbones named by Hub id."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from crossrec_peft.cli import main
from crossrec_peft.config import load_config
from crossrec_peft.errors import PackageError
from crossrec_peft.hub import parse_uri, push, resolve, upload_plan
from crossrec_peft.model import build_model
from crossrec_peft.package import MANIFEST, export_package, load_package, read_manifest

from ._packages import perturb
from tests.conftest import tiny_overrides
from .test_package import same_weights


@pytest.fixture(scope="module")
def package(tiny_bert, tmp_path_factory) -> Path:
    cfg = load_config(
        {"name": "hub", "domain": "video", "model": {"modalities": {"text": {"fields": ["title"], "backbone": {"name": f"hf:{tiny_bert}"}}}, "head_rank": 4}}
    )
    torch.manual_seed(0)
    model = perturb(build_model(cfg.model), 0.05)
    return export_package(model, cfg, tmp_path_factory.mktemp("hub") / "video", metrics={"model": {"recall@10": 0.3, "ndcg@10": 0.2, "mrr@10": 0.1}})


def test_addresses():
    assert parse_uri("hf://org/name") == ("org/name", None)
    assert parse_uri("hf://org/name@v1.2") == ("org/name", "v1.2")
    for bad in ("hf://name", "hf://org/name@", "hf://org/a/b", "hf:///name"):
        with pytest.raises(PackageError, match="not a valid Hub address"):
            parse_uri(bad)
    assert resolve("adapters/ecommerce") == Path("adapters/ecommerce")  # local paths are not touched
    assert resolve(Path("/x/y")) == Path("/x/y")


def test_upload_plan_is_the_verified_package_only(package, tmp_path):
    folder = tmp_path / "pkg"
    shutil.copytree(package, folder)
    # Documentation a user keeps beside the package is allowed and stays local; any other unlisted file (a
    # catalog index, say) makes the package unverifiable, so nothing is pushed (issue 11: unlisted files).
    (folder / "NOTES.md").write_text("local notes")
    plan = upload_plan(folder)
    assert plan == sorted([MANIFEST, *read_manifest(package)["files"]])
    assert {"README.md", "adapter_config.json", "adapter_model.safetensors", "crossrec_weights.safetensors"} <= set(plan)
    assert "NOTES.md" not in plan
    (folder / "index").mkdir()
    (folder / "index" / "items.safetensors").write_bytes(b"\x00" * 8)
    with pytest.raises(PackageError, match="index/items.safetensors: this file is in the package but not listed"):
        upload_plan(folder)
    (folder / "index" / "items.safetensors").unlink()
    # The files huggingface_hub would upload with these allow_patterns are exactly the plan.
    from huggingface_hub.utils import filter_repo_objects

    on_disk = [str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()]
    assert sorted(filter_repo_objects(on_disk, allow_patterns=plan)) == plan


def test_nothing_is_pushed_unless_the_package_verifies(package, tmp_path):
    folder = tmp_path / "pkg"
    shutil.copytree(package, folder)
    weights = folder / "crossrec_weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4])
    with pytest.raises(PackageError, match="crossrec_weights.safetensors: sha256 does not match"):
        push(folder, "org/name")
    shutil.copytree(package, folder, dirs_exist_ok=True)
    (folder / "model.pt").write_bytes(b"\x80\x04")
    with pytest.raises(PackageError, match="pickle files"):
        upload_plan(folder)


def test_push_offline_fails_cleanly(package, capsys, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(PackageError, match="HF_HUB_OFFLINE=1 is set"):
        push(package, "org/name")
    assert main(["push", str(package), "--repo-id", "org/name", "--private", "--revision", "v2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Cannot push to 'org/name'") and "Traceback" not in err
    assert main(["push", str(package), "--repo-id", "justaname"]) == 2
    assert "must be <org>/<name>" in capsys.readouterr().err


def test_recommender_pushes_the_package_of_its_domain(package, tmp_path, monkeypatch):
    """Recommender.push_to_hub goes through the same verified push: the loaded domain's own directory,
    checked again at push time (a file changed since loading is refused), then the (offline) Hub call."""
    from huggingface_hub import constants

    from crossrec_peft import Recommender
    from crossrec_peft.errors import ConfigError

    folder = tmp_path / "video"
    shutil.copytree(package, folder)
    rec = Recommender.from_pretrained(folder, device="cpu")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(PackageError, match="Cannot push to 'org/name': HF_HUB_OFFLINE=1"):
        rec.push_to_hub("org/name")
    with pytest.raises(ConfigError, match="Unknown domain 'shop'"):
        rec.push_to_hub("org/name", domain="shop")
    (folder / "adapter_config.json").write_text("{}")
    with pytest.raises(PackageError, match="adapter_config.json: sha256 does not match"):
        rec.push_to_hub("org/name", domain="video")


def test_card_as_the_hub_reads_it(package):
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard import metadata_load

    card = ModelCard.load(package / "README.md")
    meta = metadata_load(package / "README.md")
    assert meta["library_name"] == "peft" and "video" in meta["tags"] and meta["model-index"][0]["results"]
    assert [r.metric_value for r in card.data.eval_results] == [0.3, 0.2, 0.1]


def _blob_snapshot(repo_dir: Path, commit: str, source: Path) -> None:
    """Lay a snapshot out the way huggingface_hub's cache does: blobs named by hash, symlinks per commit."""
    from crossrec_peft.package import sha256

    snapshot = repo_dir / "snapshots" / commit
    for f in sorted(p for p in source.rglob("*") if p.is_file()):
        blob = repo_dir / "blobs" / sha256(f)
        blob.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, blob)
        link = snapshot / f.relative_to(source)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))


def test_load_from_local_hub_cache_offline(package, tmp_path, monkeypatch):
    """HF_HUB_CACHE in tmp and HF_HUB_OFFLINE=1 (set on huggingface_hub's constants, which is where it reads
    those variables at import): hf://org/name resolves through the real snapshot_download to refs/main's
    snapshot, @branch and @commit to theirs, and the package loads and verifies from there; an address not
    in the cache fails with a message saying so."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    repo = cache / "models--crossrec--video-demo"
    main_commit, branch_commit = "a" * 40, "b" * 40
    _blob_snapshot(repo, main_commit, package)
    tampered = tmp_path / "tampered"
    shutil.copytree(package, tampered)
    (tampered / "adapter_model.safetensors").write_bytes(b"not the weights")
    _blob_snapshot(repo, branch_commit, tampered)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(main_commit)
    (repo / "refs" / "v2").write_text(branch_commit)

    main_dir = resolve("hf://crossrec/video-demo")
    assert main_dir == repo / "snapshots" / main_commit == resolve(f"hf://crossrec/video-demo@{main_commit}")
    model, manifest = load_package(main_dir)
    assert manifest["id"] == read_manifest(package)["id"]
    assert same_weights(model, load_package(package)[0])
    branch_dir = resolve("hf://crossrec/video-demo@v2")
    assert branch_dir == repo / "snapshots" / branch_commit
    with pytest.raises(PackageError, match="adapter_model.safetensors: sha256 does not match"):
        load_package(branch_dir)
    with pytest.raises(PackageError, match="hf://crossrec/absent: 'crossrec/absent' is not in the local Hugging Face cache .*HF_HUB_OFFLINE=1 is set"):
        resolve("hf://crossrec/absent")


# -- an unreachable Hub: real connections to a closed local port ------------------------------------------------
CLOSED_ENDPOINT = "http://127.0.0.1:9"  # the discard port: nothing listens there, so a connection is refused


def _unreachable_hub_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a machine whose Hub cannot be reached: online mode (the tests' HF_HUB_OFFLINE=1
    removed), HF_ENDPOINT on a closed port, an empty Hugging Face cache in tmp. huggingface_hub reads these at
    import, hence a subprocess."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE")}
    env.update(HF_ENDPOINT=CLOSED_ENDPOINT, HF_HOME=str(tmp_path / "hf-home"))
    return env


def _crossrec(args: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "crossrec_peft", *args], capture_output=True, text=True, env=env, timeout=300)
    return proc, time.monotonic() - start


# Each names a Hub id that is not cached. Before, huggingface_hub's download retries (1+2+4+8+8 = 23 s of sleep
# per file, for each file a library tries) made these take 30 s to minutes. The bound is a sanity bound for a
# loaded 2-core machine (the subprocess imports torch and builds the demo data first), still below one file's
# retries.
@pytest.mark.parametrize(
    "what, args, repo_id",
    [
        ("text backbone", ["model.modalities.text.backbone.name=hf:someorg/absent-model", "model.modalities.image=null"], "someorg/absent-model"),
        ("open_clip Hub model", ["model.modalities.image.backbone={name: 'openclip:hf-hub:someorg/absent-clip', tower: image}"], "someorg/absent-clip"),
        ("open_clip pretrained tag", ["model.modalities.image.backbone={name: 'openclip:ViT-B-32/laion2b_s34b_b79k', tower: image}"], "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"),
        ("adapter package", None, "someorg/absent-package"),
    ],
)
def test_unreachable_hub_fails_fast_and_names_the_id(what, args, repo_id, tiny_bert, tmp_path):
    env = _unreachable_hub_env(tmp_path)
    if args is None:
        command = ["recommend", f"hf://{repo_id}", "--history", "i1"]
    else:
        command = ["recipe", "ecommerce", "--quiet", "--out", str(tmp_path / "run"), *tiny_overrides(tiny_bert), *args]
    proc, seconds = _crossrec(command, env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = proc.stderr
    assert "Traceback" not in err and "Retrying in" not in err
    assert f"the Hugging Face Hub ({CLOSED_ENDPOINT}) could not be reached (ConnectError: " in err
    assert f"'{repo_id}' is not in the local Hugging Face cache ({tmp_path / 'hf-home' / 'hub'})" in err
    assert "HF_HUB_OFFLINE=1" in err
    assert seconds < 20, f"{what}: {seconds:.1f} s"


def test_unreachable_hub_reads_a_cached_backbone_from_the_cache(tiny_bert, tmp_path):
    """A backbone named by Hub id and cached loads when the Hub cannot be reached, from its snapshot, without
    waiting for transformers' retries of files the cache does not hold (adapter_config.json and others)."""
    env = _unreachable_hub_env(tmp_path)
    repo = tmp_path / "hf-home" / "hub" / "models--someorg--tiny-bert"
    _blob_snapshot(repo, "c" * 40, tiny_bert)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("c" * 40)
    code = (
        "from crossrec_peft.backbones.text import TextBackboneOptions, hf\n"
        "b = hf(TextBackboneOptions(), 'someorg/tiny-bert')\n"
        "print(b.model_id, b.hidden_size, b.identity()['sha256'])\n"
    )
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    seconds = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr[-2000:]
    # The identity stays the Hub id's (no local weight files hashed), as when it is downloaded.
    assert proc.stdout.split() == ["someorg/tiny-bert", "32", "None"]
    assert "read from the local cache" in proc.stderr and "Retrying in" not in proc.stderr
    assert seconds < 20, f"{seconds:.1f} s"


def _text_backbone(argument):
    from crossrec_peft.backbones.text import TextBackboneOptions, hf

    return hf(TextBackboneOptions(), argument)


def _clip_backbone(argument):
    from crossrec_peft.backbones.clip import ClipBackbone, ClipOptions

    return ClipBackbone(argument, ClipOptions())


@pytest.mark.parametrize(
    "build, argument, repo_id",
    [
        (_text_backbone, "someorg/absent-model", "someorg/absent-model"),
        (_clip_backbone, "hf-hub:someorg/absent-clip", "someorg/absent-clip"),
        (_clip_backbone, "ViT-B-32/laion2b_s34b_b79k", "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"),
    ],
)
def test_offline_uncached_backbone_says_hf_hub_offline(build, argument, repo_id, tmp_path, monkeypatch):
    """HF_HUB_OFFLINE=1 (the tests' setting, set on huggingface_hub's constants as in the load test above) and
    an empty cache: the Hub is not asked, and the error names the id, the cache and HF_HUB_OFFLINE=1."""
    from huggingface_hub import constants

    from crossrec_peft.errors import ConfigError

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConfigError, match=f"'{repo_id}' is not in the local Hugging Face cache .*HF_HUB_OFFLINE=1 is set"):
        build(argument)
