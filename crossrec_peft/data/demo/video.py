"""A deterministic video demo catalog: films, episodes and clips with titles, descriptions, genres, durations
and cover images, and users whose watch histories follow a drifting genre taste, a mood and a cover palette
that only the image shows (format, setting and year are noise). See docs/demo-data.md.

The columns match what the MovieLens importer writes (`title` with the year in brackets, space-joined
`genres`, `year`), so the video recipe runs on either by changing `data.path`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from . import common
from .common import Attribute, DemoSpec, HistoryShape
from .covers import MOTIFS, PALETTES, render_cover

# MovieLens's genre names, so a model tuned on the demo reads real genres the same way.
GENRES: dict[str, list[str]] = {
    "Action": ["Strike", "Pursuit", "Showdown", "Firestorm", "Vendetta", "Rampage"],
    "Adventure": ["Expedition", "Voyage", "Quest", "Frontier", "Lost Island", "Treasure"],
    "Animation": ["Robot Pals", "Cloud Kingdom", "Toy Parade", "Little Dragon", "Bunny Town", "Paper Planes"],
    "Comedy": ["Mix-Up", "Roommates", "Road Trip", "Family Reunion", "Office Party", "Blind Date"],
    "Crime": ["Heist", "Alibi", "Syndicate", "Witness", "Cartel", "Racket"],
    "Documentary": ["Planet", "Factory Floor", "Coral Reef", "Migration", "Glaciers", "Street Food"],
    "Drama": ["Homecoming", "Inheritance", "Verdict", "Crossroads", "Letters", "Reckoning"],
    "Fantasy": ["Sorcerer", "Enchanted Forest", "Crown of Ash", "Dragon Realm", "Spellbinder", "Fairy Court"],
    "Horror": ["Haunting", "Cellar", "Possession", "Nightcrawler", "Curse", "Asylum"],
    "Romance": ["Love Letters", "Summer Kiss", "Second Chance", "Wedding Season", "Sweetheart", "First Dance"],
    "Sci-Fi": ["Starship", "Android", "Colony", "Time Loop", "Quantum Drift", "Orbit"],
    "Thriller": ["Conspiracy", "Vanishing", "Double Cross", "Blackout", "Ransom", "Stalker"],
}
# mood -> (title adjectives, description phrase): a taste users have, shown in the title and description.
MOODS: list[tuple[str, list[str], str]] = [
    ("dark", ["Midnight", "Shadow", "Hollow", "Black"], "A dark, brooding"),
    ("feel-good", ["Sunny", "Happy", "Sweet", "Golden"], "A warm, feel-good"),
    ("epic", ["Eternal", "Legendary", "Mighty", "Great"], "A sweeping, epic"),
    ("quirky", ["Curious", "Peculiar", "Wacky", "Odd"], "A quirky, offbeat"),
    ("thoughtful", ["Quiet", "Distant", "Silent", "Gentle"], "A slow, thoughtful"),
    ("thrilling", ["Deadly", "Final", "Rapid", "Lethal"], "A tense, thrilling"),
]
# format -> (duration range in minutes, noun in the description): noise.
FORMATS: list[tuple[str, tuple[int, int], str]] = [
    ("clip", (3, 16), "short"),
    ("episode", (20, 56), "series episode"),
    ("feature", (80, 161), "feature film"),
]
SETTINGS = ["Lisbon", "Tokyo", "Nairobi", "Oslo", "Buenos Aires", "Chicago", "Mumbai", "Marseille", "Seoul", "Reykjavik",
            "Cairo", "Vancouver", "Krakow", "Havana", "Melbourne", "Istanbul"]
STUDIOS = ["Bluefin Pictures", "Northlight", "Paper Moon", "Red Kite Films", "Halcyon", "Meridian", "Vantage Point",
           "Oakhouse", "Lanternfly", "Small Hours"]
YEARS = list(range(1975, 2025))
PALETTE_NAMES = list(PALETTES)
_GENRE_NAMES = list(GENRES)

ATTRIBUTES = (
    # Recent taste dominates: a user's preferred genres change along the history.
    Attribute("genre", len(GENRES), weight=3.0, preferred=2, drift=0.1),
    Attribute("mood", len(MOODS), weight=2.0, preferred=1),
    Attribute("format", len(FORMATS), weight=0.0),
    Attribute("setting", len(SETTINGS), weight=0.0),
    Attribute("studio", len(STUDIOS), weight=0.0),
    Attribute("year", len(YEARS), weight=0.0),
    # Shown only on the cover: what a text-only model cannot see.
    Attribute("palette", len(PALETTES), weight=2.5, preferred=1),
)


def describe(values: Mapping[str, int], rng: np.random.Generator) -> dict[str, Any]:
    """A video's text: the title noun and adjective within its genre and mood, and the duration, are noise drawn here."""
    genre = _GENRE_NAMES[values["genre"]]
    mood, adjectives, mood_text = MOODS[values["mood"]]
    fmt, (low, high), fmt_text = FORMATS[values["format"]]
    noun = GENRES[genre][rng.integers(len(GENRES[genre]))]
    adjective = adjectives[rng.integers(len(adjectives))]
    minutes = int(rng.integers(low, high))
    year = YEARS[values["year"]]
    setting = SETTINGS[values["setting"]]
    studio = STUDIOS[values["studio"]]
    length = f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"
    return {
        "title": f"{adjective} {noun} ({year})",
        "description": f"{mood_text} {genre.lower()} {fmt_text} set in {setting}, from {studio}. Runtime {length}.",
        "genres": genre,
        "mood": mood,
        "format": fmt,
        "duration": minutes,
        "year": year,
        "studio": studio,
    }


def draw_image(path: Path, values: Mapping[str, int]) -> None:
    render_cover(path, palette=PALETTE_NAMES[values["palette"]], motif=MOTIFS[values["genre"] % len(MOTIFS)])


SPEC = DemoSpec(
    name="video",
    stream=3,
    item_prefix="V",
    user_prefix="W",
    attributes=ATTRIBUTES,
    columns=("item_id", "title", "description", "genres", "image", "mood", "format", "duration", "year", "studio"),
    describe=describe,
    draw_image=draw_image,
    # Viewers binge: with this chance the next video shares the previous one's genre.
    history=HistoryShape(min_length=5, mean_extra=6.0, max_length=50, stickiness=0.3, sticky_attribute="genre"),
    gap_seconds=(1_800, 86_400 * 2),
)


def generate(directory: Path, *, num_items: int, num_users: int, seed: int) -> None:
    """Write the video demo catalog (see docs/demo-data.md) to `directory`."""
    common.generate(SPEC, directory, num_items=num_items, num_users=num_users, seed=seed)
