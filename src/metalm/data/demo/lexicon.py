"""The toy language `xx`: every English word outside names goes through a fixed substitution
lexicon, a function of the template tables only (not of the seed), built from the `xx` syllables
(disjoint in shape from the name syllables)."""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache

from .tables import (
    ADJECTIVES, ADVERBS, ANNIVERSARIES, BAD, BUILDINGS, CARGO, CAUSES, CITY_POOLS, CLUB_WORK, COMPANY_KINDS,
    COUNTRY_POOLS, EVENT_NOUNS, EVENTS, FIELDS, FOODS, GOOD, HEAD_TITLES, HOBBIES, JOBS, KIDS, LANDMARKS,
    LEAGUE_PLACES, MONTHS, NER_TEMPLATES, NUMBER_WORDS, ORDINALS, ORG_BODY, ORG_KIND_BODY, ORG_NOUNS,
    ORG_OPENINGS, OTHER_JOBS, PAPER_SECTIONS, PERSON_POOLS, PRONOUNS, QUOTES, REGIONS, RELATIVES,
    RIVER_MOUTHS, RIVER_POOLS, ROLES, SEASONS, SPEECH_VERBS, SPORTS, THINGS, TIME_PHRASES, TOPICS, TRAITS,
    WEATHER, WEEKDAYS, XX_SYLLABLES,
)

SLOT = re.compile(r"\{(\w+)\}")
WORD = re.compile(r"\b[^\W\d_]+\b")

_TEXT_TABLES = (JOBS, HEAD_TITLES, OTHER_JOBS, FIELDS, PAPER_SECTIONS, CLUB_WORK, SPORTS, MONTHS,
                WEEKDAYS, SEASONS, NUMBER_WORDS, ADJECTIVES, GOOD, BAD, HOBBIES, FOODS, WEATHER,
                SPEECH_VERBS, ADVERBS, THINGS, EVENT_NOUNS, LANDMARKS, REGIONS, RELATIVES, TRAITS,
                ROLES, RIVER_MOUTHS, TIME_PHRASES, QUOTES, PERSON_POOLS, CITY_POOLS, COUNTRY_POOLS,
                RIVER_POOLS, ORG_OPENINGS, ORG_BODY, ORG_KIND_BODY, EVENTS, NER_TEMPLATES, ORG_NOUNS,
                [k["products"] for k in COMPANY_KINDS.values()], [k["industry"] for k in COMPANY_KINDS.values()],
                PRONOUNS, KIDS, CARGO, ORDINALS, LEAGUE_PLACES, ANNIVERSARIES, BUILDINGS, TOPICS, CAUSES,
                ("a", "an"))  # `world.article()` articles


def capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]


def corpus_templates() -> list[str]:
    """Every corpus sentence template (profiles and news items), for inspection and tests."""
    pools = [PERSON_POOLS, CITY_POOLS, COUNTRY_POOLS, RIVER_POOLS, ORG_OPENINGS, ORG_BODY, ORG_KIND_BODY, EVENTS]
    return list(dict.fromkeys(_strings(pools)))


def _strings(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    else:
        for v in obj:
            yield from _strings(v)


@lru_cache(maxsize=None)
def english_vocabulary() -> tuple[str, ...]:
    """Every lower-cased word the templates and fillers can produce outside names."""
    words: set[str] = set()
    for s in _strings(_TEXT_TABLES):
        words.update(w.lower() for w in WORD.findall(SLOT.sub(" ", s)))
    return tuple(sorted(words))


@lru_cache(maxsize=None)
def _xx_lexicon() -> dict[str, str]:
    """English word -> toy-language word: injective, never an English word, fixed across seeds."""
    english = set(english_vocabulary())
    lexicon: dict[str, str] = {}
    used: set[str] = set()
    for word in english_vocabulary():
        n = 1 if len(word) <= 2 else 2 if len(word) <= 6 else 3
        for salt in range(10_000):
            digest = hashlib.sha256(f"{word}:{salt}".encode()).digest()
            length = n + salt // 50  # grow only if short words run out
            candidate = "".join(XX_SYLLABLES[b % len(XX_SYLLABLES)] for b in digest[:length])
            if candidate not in used and candidate not in english:
                break
        lexicon[word] = candidate
        used.add(candidate)
    return lexicon


def xx_lexicon() -> dict[str, str]:
    """A copy of the fixed English -> `xx` substitution lexicon."""
    return dict(_xx_lexicon())


def translate_word(word: str) -> str:
    """`word` in `xx` (capitalisation kept); words outside the lexicon (names) stay as they are."""
    out = _xx_lexicon().get(word.lower())
    if out is None:
        return word
    return capitalised(out) if word[0].isupper() else out
