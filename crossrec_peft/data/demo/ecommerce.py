"""A deterministic e-commerce demo catalog: products with titles, descriptions, categories and images, and
users whose histories follow a latent taste for categories, a style, colours and an image-only pattern
(brand is noise). See docs/demo-data.md for the latent structure."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from . import common
from .common import Attribute, DemoSpec
from .images import PATTERNS, SHAPES, render

CATEGORIES: dict[str, tuple[list[str], list[str]]] = {
    "kitchen": (["frying pan", "chef knife", "cutting board", "coffee grinder", "mixing bowl set", "saucepan", "blender", "spatula set"],
                ["stainless steel", "cast iron", "bamboo", "ceramic", "silicone"]),
    "outdoor": (["camping tent", "sleeping bag", "hiking backpack", "trekking poles", "headlamp", "water filter", "camp stove", "hammock"],
                ["ripstop nylon", "aluminum", "polyester", "titanium", "canvas"]),
    "electronics": (["wireless earbuds", "bluetooth speaker", "usb-c charger", "power bank", "smartwatch", "webcam", "mechanical keyboard", "wireless mouse"],
                    ["aluminum", "matte plastic", "tempered glass", "silicone", "carbon fiber"]),
    "beauty": (["face serum", "moisturizer", "lip balm", "shampoo", "hair dryer", "makeup brush set", "sunscreen", "nail polish"],
               ["glass bottle", "aloe vera", "argan oil", "shea butter", "vitamin c"]),
    "toys": (["building blocks", "jigsaw puzzle", "plush bear", "toy car", "board game", "doll house", "kite", "art set"],
             ["wood", "plush fabric", "recycled plastic", "cardboard", "felt"]),
    "fitness": (["yoga mat", "dumbbell set", "resistance bands", "jump rope", "foam roller", "kettlebell", "running shoes", "gym bag"],
                ["natural rubber", "neoprene", "cast iron", "mesh", "cork"]),
    "pet": (["dog leash", "cat tree", "pet bed", "chew toy", "litter box", "bird feeder", "aquarium filter", "dog bowl"],
            ["nylon", "sisal", "memory foam", "natural rubber", "stainless steel"]),
    "office": (["desk lamp", "notebook", "fountain pen", "desk organizer", "office chair", "stapler", "whiteboard", "monitor stand"],
               ["walnut wood", "leather", "brushed metal", "recycled paper", "acrylic"]),
    "garden": (["garden hose", "pruning shears", "flower pot", "watering can", "seed starter kit", "garden gloves", "lawn sprinkler", "compost bin"],
               ["terracotta", "galvanized steel", "rubber", "bamboo", "heavy-duty plastic"]),
    "baby": (["baby stroller", "diaper bag", "baby monitor", "teething ring", "baby blanket", "high chair", "bottle warmer", "crib mobile"],
             ["organic cotton", "bpa-free plastic", "muslin", "beechwood", "soft silicone"]),
}

# (title words, description sentence): the style is a taste users have, shown in both texts.
STYLES: list[tuple[str, str]] = [
    ("Eco-Friendly", "Made from recycled and sustainable materials with plastic-free packaging"),
    ("Premium Handcrafted", "A luxury piece with a refined finish and a lifetime warranty"),
    ("Value Pack", "An affordable everyday essential at a budget price"),
    ("Professional Grade", "Built for heavy daily use by experts and professionals"),
    ("Kids Colorful", "Designed for children, playful and non-toxic"),
    ("Retro Vintage", "A classic timeless design inspired by the seventies"),
]
COLORS = ["black", "white", "red", "navy blue", "forest green", "yellow", "grey", "pink", "orange", "teal"]
BRANDS = ["Acme", "Norvik", "Lumora", "Brightway", "Tesselo", "Kavari", "Omnix", "Pellago", "Zentro", "Quillon",
          "Marlow", "Vextra", "Hollis", "Sundara", "Corvane", "Ardent", "Bellsworth", "Fenwick", "Iverly", "Joventa",
          "Kestrel", "Lindqvist", "Morrow", "Nexa", "Orlin", "Pryce", "Rivo", "Solace", "Tamsin", "Uvella"]

ATTRIBUTES = (
    Attribute("category", len(CATEGORIES), weight=3.0, preferred=2),
    Attribute("style", len(STYLES), weight=3.0, preferred=1),
    Attribute("color", len(COLORS), weight=1.0, preferred=2),
    Attribute("brand", len(BRANDS), weight=0.0),
    # Shown only in the image: what a text-only model cannot see.
    Attribute("pattern", len(PATTERNS), weight=2.5, preferred=1),
)
_CATEGORY_NAMES = list(CATEGORIES)


def describe(values: Mapping[str, int], rng: np.random.Generator) -> dict[str, Any]:
    """A product's text: the noun and material within its category are noise drawn here."""
    category = _CATEGORY_NAMES[values["category"]]
    nouns, materials = CATEGORIES[category]
    noun = nouns[rng.integers(len(nouns))]
    material = materials[rng.integers(len(materials))]
    style_words, style_text = STYLES[values["style"]]
    color = COLORS[values["color"]]
    brand = BRANDS[values["brand"]]
    return {
        "title": f"{brand} {style_words} {noun.title()} - {color}, {material}",
        "description": f"{style_text}. This {material} {noun} comes in {color} from {brand}.",
        "category": category,
        "color": color,
        "brand": brand,
        "style": style_words,
    }


def draw_image(path: Path, values: Mapping[str, int]) -> None:
    render(path, color=COLORS[values["color"]], pattern=PATTERNS[values["pattern"]], shape=SHAPES[values["category"] % len(SHAPES)])


def extras(rng: np.random.Generator, num_items: int) -> dict[str, list]:
    return {"price": np.round(rng.lognormal(3.0, 0.8, num_items), 2).tolist()}


SPEC = DemoSpec(
    name="ecommerce",
    stream=1,
    item_prefix="E",
    user_prefix="U",
    attributes=ATTRIBUTES,
    columns=("item_id", "title", "description", "category", "image", "color", "brand", "style", "price"),
    describe=describe,
    draw_image=draw_image,
    extras=extras,
)


def generate(directory: Path, *, num_items: int, num_users: int, seed: int) -> None:
    """Write the e-commerce demo catalog (see docs/demo-data.md) to `directory`."""
    common.generate(SPEC, directory, num_items=num_items, num_users=num_users, seed=seed)
