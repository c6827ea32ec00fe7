from __future__ import annotations

import sys
import textwrap

import pytest

from crossrec_peft import registry
from crossrec_peft.errors import ConfigError
from crossrec_peft.registry import Registry


def test_register_get_and_names():
    reg = Registry("widget")

    @reg.register("alpha")
    def alpha(options, argument=None):
        """Makes alphas."""
        return "a"

    assert reg.names() == ["alpha"]
    assert reg.get("alpha").factory is alpha
    assert reg.get("alpha").description == "Makes alphas."
    assert "alpha" in reg and "beta" not in reg


def test_unknown_name_lists_known_and_closest():
    reg = Registry("widget")
    reg.register("gated")(lambda o, a=None: None)
    reg.register("concat")(lambda o, a=None: None)
    with pytest.raises(ConfigError) as err:
        reg.get("gatd")
    message = str(err.value)
    assert "Unknown widget 'gatd'" in message and "Did you mean 'gated'?" in message
    assert "concat, gated" in message


def test_argument_after_colon():
    reg = Registry("widget")
    reg.register("hf", takes_argument=True)(lambda o, a=None: a)
    entry, argument = reg.resolve("hf:org/model")
    assert entry.name == "hf" and argument == "org/model"
    with pytest.raises(ConfigError, match="needs an argument"):
        reg.resolve("hf:")
    with pytest.raises(ConfigError, match="Unknown widget 'hf'"):
        reg.resolve("hf")  # a prefix entry is not a plain name


def test_duplicate_registration_and_non_dataclass_options_fail():
    reg = Registry("widget")
    reg.register("x")(lambda o, a=None: 1)
    with pytest.raises(ValueError, match="twice"):
        reg.register("x")(lambda o, a=None: 2)
    with pytest.raises(TypeError, match="dataclass"):
        reg.register("y", options=dict)


def test_builtins_registered():
    assert {"minilm", "hf"} <= set(registry.backbones.names())
    assert {"lora", "ia3", "frozen", "full"} <= set(registry.methods.names())
    assert "mean" in registry.fusions.names() and "mean" in registry.user_encoders.names()
    assert "retrieval" in registry.objectives.names() and "ecommerce" in registry.domains.names()


def test_plugin_from_entry_point(tmp_path, monkeypatch):
    """A real distribution on sys.path declares a module under crossrec_peft.plugins; the first lookup that
    misses imports it, and its user encoder is then usable by name."""
    (tmp_path / "crossrec_demo_plugin.py").write_text(textwrap.dedent('''
        import torch
        from crossrec_peft.registry import user_encoders

        @user_encoders.register("last_item")
        class LastItem(torch.nn.Module):
            """The most recent history item."""
            def __init__(self, options, dim):
                super().__init__()
                self.out_dim = dim
            def forward(self, history, mask):
                last = mask.long().sum(1).clamp(min=1) - 1
                return history[torch.arange(len(history)), last]
    '''))
    dist = tmp_path / "crossrec_demo_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: crossrec-demo-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[crossrec_peft.plugins]\ndemo = crossrec_demo_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        entry = registry.user_encoders.get("last_item")
        import torch

        encoder = entry.factory(None, 4)
        history = torch.arange(24, dtype=torch.float32).view(2, 3, 4)
        mask = torch.tensor([[True, True, False], [True, True, True]])
        assert torch.equal(encoder(history, mask), torch.stack([history[0, 1], history[1, 2]]))
        assert "last_item" in registry.user_encoders.names()
    finally:
        registry.user_encoders._entries.pop("last_item", None)
        sys.modules.pop("crossrec_demo_plugin", None)


def test_broken_plugin_does_not_break_builtins(tmp_path, monkeypatch, caplog):
    dist = tmp_path / "crossrec_broken-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: crossrec-broken\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[crossrec_peft.plugins]\nbroken = crossrec_no_such_module_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError):
        registry.methods.get("no-such-method")
    assert "crossrec_no_such_module_xyz" in caplog.text
    assert registry.methods.get("lora").name == "lora"


@pytest.mark.parametrize("registry_name, make, lacking", [
    # A method class without the contract's abstract members is refused at registration, naming them.
    ("methods", lambda: type("NoShare", (), {"attach": lambda self, b: None}), "load, exported_state, save, load_files, own_backbone_reason, share"),
    # An objective class without held_out_metrics / prepare (a plain callable class).
    ("objectives", lambda: type("Plain", (), {"__call__": lambda self, o, b: (0, {})}), "prepare, held_out_metrics"),
])
def test_class_missing_contract_methods_is_refused_when_it_registers(registry_name, make, lacking):
    reg = getattr(registry, registry_name)
    with pytest.raises(TypeError, match=f"does not implement the {reg.kind} contract .*missing {lacking}"):
        reg.register("incomplete")(make())
    assert "incomplete" not in reg._entries


def test_object_missing_a_contract_member_is_refused_when_created():
    """Attributes set in __init__ (hidden_size, out_dim) are checked on the object the factory builds."""
    import torch

    from crossrec_peft.backbones.text import TextBackbone

    @registry.fusions.register("no_out_dim")
    class NoOutDim(torch.nn.Module):
        """A fusion that forgot its out_dim."""

        def __init__(self, options, dims):
            super().__init__()

        def forward(self, embeddings, present):
            return next(iter(embeddings.values()))

    try:
        with pytest.raises(ConfigError, match="fusion 'no_out_dim' built a NoOutDim that does not implement the fusion contract .*missing out_dim"):
            registry.fusions.create("no_out_dim", None, {"text": 4})
    finally:
        registry.fusions._entries.pop("no_out_dim", None)
    # The built-in backbones implement their contract as classes.
    assert registry.missing(TextBackbone, registry.backbones.contract, methods_only=True) == []
