"""A peft weight file that lacks a tensor or has one of the wrong shape is refused with the same PackageError
naming the file and the tensor on every load path: load_package (a fresh backbone), the Recommender's shared
backbone, alone on it or beside another domain (for LoRA: a second named adapter of one PeftModel; for IA3:
routed hooks, where no PeftModel would notice the gap), and continued tuning (init_from). A refused domain
leaves the shared backbone as it was."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from crossrec_peft.errors import PackageError
from crossrec_peft.model import build_model
from crossrec_peft.package import init_from_package, load_package
from crossrec_peft.recommender import Recommender
from tests._packages import alone_scores, make_package, text_config
from tests.conftest import small_layout
from tests.test_package_manifest_values import reseal_file

METHODS = ["lora", "ia3"]
HISTORY, CANDIDATES = ["i1", "i2"], ["i0", "i4", "i8", "i11"]


@pytest.fixture(scope="module")
def exported(tiny_bert, tmp_path_factory):
    root = tmp_path_factory.mktemp("load-errors")
    data = small_layout(root / "data", num_items=16)
    # Domains not named like a method: peft warns about an adapter name inside its prefix ("lora" in "lora_").
    packages = {m: make_package(tiny_bert, root / "pk", f"shop-{m}", m, seed=i, data=data) for i, m in enumerate(METHODS)}
    # Partners of the same method, already on the shared backbone when the broken package comes.
    partners = {m: make_package(tiny_bert, root / "partners", f"partner-{m}", m, seed=10 + i, data=data) for i, m in enumerate(METHODS)}
    return packages, partners, data


def standalone(package, partner, method, tiny_bert):
    load_package(package)


def shared_alone(package, partner, method, tiny_bert):
    Recommender(device="cpu").load_adapter(package)


def shared_beside(package, partner, method, tiny_bert):
    rec = Recommender(device="cpu")
    rec.load_adapter(partner)
    rec.load_adapter(package)


def continued(package, partner, method, tiny_bert):
    """Continued tuning (init_from): the parent's peft files copied into a freshly attached adapter."""
    cfg = text_config(tiny_bert, "child", method)
    init_from_package(build_model(cfg.model), package, cfg)


LOADS = {"standalone": standalone, "shared alone": shared_alone, "shared beside a partner": shared_beside, "init_from": continued}


# How a peft weight file is spoiled: its first tensor left out, or cut to 3 entries.
SPOILS = {
    "missing": lambda tensors, name: tensors.pop(name),
    "misshapen": lambda tensors, name: tensors.__setitem__(name, tensors[name].flatten()[:3].contiguous()),
}


def spoil(package, change) -> tuple:
    """Apply `change` to the first tensor of the package's peft weights (re-sealed: only the checks behind the
    hashes can catch it); returns the file and that tensor's name."""
    path = package / "adapter_model.safetensors"
    tensors = load_file(str(path))
    first = sorted(tensors)[0]
    change(tensors, first)
    save_file(tensors, str(path), metadata={"format": "pt"})
    reseal_file(package, "adapter_model.safetensors")
    return path, first


@pytest.mark.parametrize("load", list(LOADS))
@pytest.mark.parametrize("method", METHODS)
def test_a_missing_peft_tensor_is_refused_by_name(exported, tiny_bert, tmp_path, method, load):
    packages, partners, _ = exported
    package = shutil.copytree(packages[method], tmp_path / method)
    path, gone = spoil(package, SPOILS["missing"])
    with pytest.raises(PackageError, match=f"^{path}: 1 tensor\\(s\\) of the peft adapter are missing: '{gone}'"):
        LOADS[load](package, partners[method], method, tiny_bert)


# (method, load) -> what the message says after the file: LoRA's misfit is torch's size mismatch inside peft, on
# every path; IA3's on a shared backbone is our own check of the vector against its module.
MISSHAPEN = {
    **{(m, load): r"the {method} weights of modality 'text' \(trained on backbone '[^']+'.*\) do not fit the backbone '[^']+'"
       r".*: size mismatch for {stem}\.[^:]+: copying a param with shape .* Shapes must match"
       for m in METHODS for load in LOADS},
    ("ia3", "shared alone"): r"IA3 vector for '{inner}' has 3 entries, the module of backbone '[^']+' has 32 ",
    ("ia3", "shared beside a partner"): r"IA3 vector for '{inner}' has 3 entries, the module of backbone '[^']+' has 32 ",
}


@pytest.mark.parametrize("load", list(LOADS))
@pytest.mark.parametrize("method", METHODS)
def test_a_misshapen_peft_tensor_names_file_backbones_and_tensor(exported, tiny_bert, tmp_path, method, load):
    """torch's error starts with a line that names no tensor; the size-mismatch line is the one shown, once,
    with the package's file and both backbones (the one trained on and the one here)."""
    packages, partners, _ = exported
    package = shutil.copytree(packages[method], tmp_path / method)
    path, first = spoil(package, SPOILS["misshapen"])
    stem = first.removesuffix(".weight")
    inner = first.removeprefix("base_model.model.").removesuffix(".ia3_l")
    with pytest.raises(PackageError, match=f"^{path}: " + MISSHAPEN[method, load].format(method=method, stem=stem, inner=inner)):
        LOADS[load](package, partners[method], method, tiny_bert)


@pytest.mark.parametrize("spoiling", list(SPOILS))
@pytest.mark.parametrize("partnered", [False, True], ids=["alone", "beside a partner"])
@pytest.mark.parametrize("method", METHODS)
def test_a_refused_domain_leaves_the_shared_backbone_as_it_was(exported, tmp_path, method, partnered, spoiling):
    """The same package, intact, loads afterwards under the refused domain's name and scores as it does alone."""
    packages, partners, data = exported
    broken = shutil.copytree(packages[method], tmp_path / "broken" / method)
    spoil(broken, SPOILS[spoiling])
    rec = Recommender(device="cpu")
    if partnered:
        rec.load_adapter(partners[method])
    before = rec.domains
    with pytest.raises(PackageError):
        rec.load_adapter(broken)
    assert rec.domains == before
    rec.load_adapter(packages[method])
    got = rec.score([HISTORY], CANDIDATES, domains=[f"shop-{method}"])[0]
    assert torch.allclose(got, alone_scores(packages[method], data, HISTORY, CANDIDATES), atol=1e-5)
    if partnered:
        got = rec.score([HISTORY], CANDIDATES, domains=[f"partner-{method}"])[0]
        assert torch.allclose(got, alone_scores(partners[method], data, HISTORY, CANDIDATES), atol=1e-5)
