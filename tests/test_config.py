from __future__ import annotations

import pytest

from crossrec_peft import recipes
from crossrec_peft.config import flat_keys, load_config
from crossrec_peft.errors import ConfigError


@pytest.mark.parametrize("name", recipes.names())
def test_every_shipped_recipe_validates(name):
    cfg = load_config(recipes.path(name), name=name)
    assert cfg.description, f"recipe {name} needs a description line for `recipe ls`"
    assert cfg.name == name


def test_overrides_are_dotted_and_typed():
    cfg = load_config(recipes.path("ecommerce"), ["train.epochs=7", "model.modalities.text.method.r=4", "data.path=/x"])
    assert cfg.train.epochs == 7 and cfg.model.modalities.text.method.r == 4 and cfg.data.path == "/x"


@pytest.mark.parametrize(
    "override, expected",
    [
        ("train.epoch=1", "Did you mean 'epochs'?"),
        ("trian.epochs=1", "Did you mean 'train'?"),
        ("train.epochs=many", "invalid value for 'train.epochs'"),
        ("model.modalities.text.method.name=lorra", "Did you mean 'lora'?"),
        ("model.modalities.text.method.alpah=4", "Did you mean 'alpha'"),
        ("model.modalities.text.method.r=-1", "r must be positive"),
        ("model.modalities.text.backbone.name=minlm", "Did you mean 'minilm'?"),
        ("model.modalities.text.backbone.pooling=max", "pooling must be"),
        ("model.fusion.name=concatt", "Unknown fusion"),
        ("train.objective.name=retreival", "Did you mean 'retrieval'?"),
        ("domain=ecomerce", "Did you mean 'ecommerce'?"),
        ("train.batch_size=1", "at least 2"),
        ("eval.ks=[5,20]", "must include 10"),
        ("data.min_interactions=2", "at least 3"),
        ("train.mixed_precision=fp8", "mixed_precision"),
        ("eval.repeats=mis", "Did you mean 'miss'?"),
        ("hybrid.neighbours=0", "'hybrid.neighbours' must be at least 1"),
        ("hybrid.weights=[0.5,-1]", "'hybrid.weights' must be finite and 0 or more"),
        ("hybrid.weights=[1,.inf]", "'hybrid.weights' must be finite and 0 or more"),
        ("hybrid.weigths=[1]", "Did you mean 'weights'?"),
        ("hybrid.borrow=-1", "'hybrid.borrow' must be 0 (no borrowing) or more"),
        ("hybrid.borrow_weights=[1,-2]", "'hybrid.borrow_weights' must be finite and 0 or more"),
        ("hybrid.borrow_weights=[.nan]", "'hybrid.borrow_weights' must be finite and 0 or more"),
        ("hybrid.decays=[0.8,1.5]", "'hybrid.decays' must each lie in (0, 1]"),
        ("hybrid.decays=[0]", "'hybrid.decays' must each lie in (0, 1]"),
        # A value of the wrong form: a single value or a mapping for a list, anything but a mapping for a section.
        ("eval.ks=5", "override 'eval.ks=5': 'eval.ks' takes a list, as in eval.ks=["),
        ("hybrid.weights={a: 1}", "'hybrid.weights' takes a list, as in hybrid.weights=["),
        ("model.user_encoder=[1,2]", "'model.user_encoder' takes a section of keys (name"),
        ("train=5", "'train' takes a section of keys (objective, epochs, "),
        ("train.epochs={a: 1}", "'train.epochs' takes a single value; got a mapping"),
    ],
)
def test_bad_values_name_the_key(override, expected):
    with pytest.raises(ConfigError) as err:
        load_config(recipes.path("ecommerce"), [override])
    assert expected in str(err.value)


def test_a_hybrid_needs_a_weight_to_try():
    with pytest.raises(ConfigError, match="'hybrid.weights' must list at least one weight"):
        load_config(recipes.path("ecommerce"), ["hybrid.enabled=true", "hybrid.weights=[]"])


def test_component_swap_takes_the_new_defaults():
    cfg = load_config(recipes.path("ecommerce"), ["model.modalities.text.method=ia3"])
    assert dict(cfg.model.modalities.text.method) == {"name": "ia3"}
    cfg = load_config(recipes.path("ecommerce"), ["model.modalities.text.method=frozen", "train.epochs=2"])
    assert dict(cfg.model.modalities.text.method) == {"name": "frozen"} and cfg.train.epochs == 2
    cfg = load_config(recipes.path("ecommerce"), ["model.modalities.text.method={name: lora, r: 2}"])
    assert cfg.model.modalities.text.method.r == 2 and cfg.model.modalities.text.method.alpha == 16
    cfg = load_config(recipes.path("ecommerce"), ["model.modalities.text.method={name: bottleneck, kind: houlsby}"])
    assert dict(cfg.model.modalities.text.method) == {"name": "bottleneck", "kind": "houlsby"}


def test_override_without_equals_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="key=value"):
        load_config(recipes.path("ecommerce"), ["train.epochs"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_unknown_key_in_user_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("train:\n  epochz: 2\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value) and "epochs" in str(err.value)


@pytest.mark.parametrize("text, expected", [
    ("hybrid:\n  weights: {a: 1}\n", "'hybrid.weights' takes a list, as in hybrid.weights=["),
    ("eval:\n  ks: 10\n", "'eval.ks' takes a list"),
    ("train: 5\n", "'train' takes a section of keys"),
    ("train:\n  lr: [0.1]\n", "invalid value for 'train.lr'"),
])
def test_a_value_of_the_wrong_form_in_a_user_file(tmp_path, text, expected):
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value) and expected in str(err.value)


def test_yaml_syntax_error(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="cannot be read as YAML"):
        load_config(path)


def ecommerce_file(tmp_path, image, name="recipe.yaml"):
    """The e-commerce recipe as a user's file, its image modality replaced by `image` (YAML text), or left out
    (None)."""
    import yaml

    recipe = yaml.safe_load(recipes.path("ecommerce").read_text())
    recipe["model"]["modalities"].pop("image")
    text = yaml.safe_dump(recipe, sort_keys=False)
    if image is not None:
        text = text.replace("  modalities:\n", f"  modalities:\n    image: {image}\n", 1)
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "form",
    ["yaml: image: null", "yaml: image: ~", "override: image=null", "override: image=~", "override: modalities={...image: null}"],
)
def test_a_null_modality_is_left_out_in_a_file_as_on_the_command_line(tmp_path, form):
    """`image: null` in a recipe file and `model.modalities.image=null` on the command line are one thing (the
    text-only recipe), through one code path."""
    from crossrec_peft.config import to_yaml

    expected = load_config(ecommerce_file(tmp_path, None, "text-only.yaml"), name="ecommerce")
    assert list(expected.model.modalities) == ["text"]
    kind, _, spelled = form.partition(": ")
    if kind == "yaml":
        cfg = load_config(ecommerce_file(tmp_path, spelled.partition(": ")[2]), name="ecommerce")
    elif spelled.startswith("modalities="):
        cfg = load_config(recipes.path("ecommerce"), ["model.modalities={image: null}"])
    else:
        cfg = load_config(recipes.path("ecommerce"), [f"model.modalities.{spelled}"])
    assert to_yaml(cfg) == to_yaml(expected)


@pytest.mark.parametrize(
    "source, overrides, expected",
    [
        ("recipe", ["model.modalities.imgae=null"], "override 'model.modalities.imgae=null': there is no modality 'imgae' to drop. Did you mean 'image'?"),
        ("recipe", ["model.modalities.text=null", "model.modalities.image=null"], "'model.modalities' is empty"),
        ("file", ["model.modalities.text=null"], "'model.modalities' is empty"),
    ],
    ids=["override-typo", "override-drops-all", "file-null-and-override-drop-all"],
)
def test_dropping_a_modality_that_is_not_there_or_every_modality_is_refused(tmp_path, source, overrides, expected):
    path = recipes.path("ecommerce") if source == "recipe" else ecommerce_file(tmp_path, "null")
    with pytest.raises(ConfigError) as err:
        load_config(path, overrides)
    assert expected in str(err.value)


@pytest.mark.parametrize("node, prefix, expected", [
    ({"a": {"b": 1, "c": {"d": None}}}, "", {"a.b": 1, "a.c.d": None}),
    ({"lr": 0.1, "objective": {"name": "retrieval"}}, "train", {"train.lr": 0.1, "train.objective.name": "retrieval"}),
    # An empty section is a leaf: a config that leaves it empty differs from one that leaves it out.
    ({"a": {}, "b": [1, 2]}, "", {"a": {}, "b": [1, 2]}),
    ({}, "model", {"model": {}}),
    (3, "seed", {"seed": 3}),
])
def test_flat_keys(node, prefix, expected):
    assert flat_keys(node, prefix) == expected
