"""The demo world's string tables, loaded from the JSON package data under `templates/`.

    names.json   syllables and patterns that names of people, places and organisations are built
                 from; company kinds (name suffix -> industry and products)
    words.json   common words: fillers for templates (their spread gives a wide band of word
                 frequencies), plus the syllables of the toy language `xx` (disjoint in shape from
                 the name syllables)
    corpus.json  corpus sentence templates: profile pools per entity kind and news events.
                 `{slot}` is a fact of the document's subject or a random filler; `[a|b|c]` picks
                 one alternative; a template is used only where all its slots can be filled
    ner.json     NER sentence templates: short sentences, not the corpus templates, so NER text is
                 not copied from the pretraining corpus

Lists become tuples and order is kept as written: the generator draws from these tables with a
seeded `random.Random`, so editing a table changes the output (bump `generate.VERSION`).
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any


def _freeze(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return {k: _freeze(v) for k, v in value.items()}
    return value


def load_table(name: str) -> dict[str, Any]:
    """One templates file, lists frozen to tuples."""
    text = (resources.files(__package__) / "templates" / f"{name}.json").read_text(encoding="utf-8")
    return _freeze(json.loads(text))


def _weighted(patterns: dict[str, int]) -> tuple[str, ...]:
    """{pattern: weight} -> the pattern repeated `weight` times, in table order."""
    return tuple(p for p, n in patterns.items() for _ in range(n))


_NAMES = load_table("names")
GIVEN_STARTS = _NAMES["given_starts"]
GIVEN_MIDDLES = _NAMES["given_middles"]
GIVEN_ENDINGS = _NAMES["given_endings"]  # by gender, "f" / "m"
FAMILY_STARTS = _NAMES["family_starts"]
FAMILY_MIDDLES = _NAMES["family_middles"]
FAMILY_ENDINGS = _NAMES["family_endings"]
PLACE_STARTS = _NAMES["place_starts"]
PLACE_MIDDLES = _NAMES["place_middles"]
CITY_ENDINGS = _NAMES["city_endings"]
CITY_PATTERNS = _weighted(_NAMES["city_patterns"])
COUNTRY_ENDINGS = _NAMES["country_endings"]
COUNTRY_PATTERNS = _weighted(_NAMES["country_patterns"])
RIVER_ENDINGS = _NAMES["river_endings"]
RIVER_PATTERNS = _weighted(_NAMES["river_patterns"])
BRAND_ENDINGS = _NAMES["brand_endings"]
COMPANY_KINDS = _NAMES["company_kinds"]  # name suffix -> {"industry": ..., "products": (...)}
UNIVERSITY_PATTERNS = _NAMES["university_patterns"]
CLUB_PATTERNS = _NAMES["club_patterns"]
NEWSPAPER_PATTERNS = _NAMES["newspaper_patterns"]

_WORDS = load_table("words")
JOBS = _WORDS["jobs"]  # by organisation kind
HEAD_TITLES = _WORDS["head_titles"]
OTHER_JOBS = _WORDS["other_jobs"]
FIELDS = _WORDS["fields"]
PAPER_SECTIONS = _WORDS["paper_sections"]
CLUB_WORK = _WORDS["club_work"]
SPORTS = _WORDS["sports"]
MONTHS = _WORDS["months"]
WEEKDAYS = _WORDS["weekdays"]
SEASONS = _WORDS["seasons"]
NUMBER_WORDS = _WORDS["number_words"]
ADJECTIVES = _WORDS["adjectives"]
GOOD = _WORDS["good"]
BAD = _WORDS["bad"]
HOBBIES = _WORDS["hobbies"]
FOODS = _WORDS["foods"]
WEATHER = _WORDS["weather"]
SPEECH_VERBS = _WORDS["speech_verbs"]
ADVERBS = _WORDS["adverbs"]
THINGS = _WORDS["things"]
EVENT_NOUNS = _WORDS["event_nouns"]
LANDMARKS = _WORDS["landmarks"]
REGIONS = _WORDS["regions"]
RELATIVES = _WORDS["relatives"]
TRAITS = _WORDS["traits"]
ROLES = _WORDS["roles"]
RIVER_MOUTHS = _WORDS["river_mouths"]
TIME_PHRASES = _WORDS["time_phrases"]
PRONOUNS = _WORDS["pronouns"]  # by gender: (subject, possessive, object)
KIDS = _WORDS["kids"]
CARGO = _WORDS["cargo"]
ORDINALS = _WORDS["ordinals"]
LEAGUE_PLACES = _WORDS["league_places"]
ANNIVERSARIES = _WORDS["anniversaries"]
BUILDINGS = _WORDS["buildings"]
TOPICS = _WORDS["topics"]
CAUSES = _WORDS["causes"]
QUOTES = _WORDS["quotes"]
ORG_NOUNS = _WORDS["org_nouns"]  # by organisation kind: (singular, plural)
XX_SYLLABLES = _WORDS["xx_syllables"]

ORG_KINDS = ("company", "university", "club", "newspaper")
FOUNDED_KINDS = ("company", "club", "newspaper")  # organisation kinds that may have a founder

_CORPUS = load_table("corpus")
PERSON_POOLS = _CORPUS["person"]
CITY_POOLS = _CORPUS["city"]
COUNTRY_POOLS = _CORPUS["country"]
RIVER_POOLS = _CORPUS["river"]
ORG_OPENINGS = _CORPUS["org_openings"]
ORG_BODY = _CORPUS["org_body"]
FOUNDED_BODY = _CORPUS["founded_body"]
ORG_KIND_BODY = {kind: (FOUNDED_BODY if kind in FOUNDED_KINDS else ()) + body
                 for kind, body in _CORPUS["org_kind_body"].items()}
EVENTS = _CORPUS["events"]  # by entity kind: ({"head": ..., "lead": ..., "body": ...}, ...)

NER_TEMPLATES = load_table("ner")["templates"]  # entity slots pick random world entities
