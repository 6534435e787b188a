"""Text from the world: corpus documents (profiles, news items and long chronicles) and tagged NER
sentences.

Chronicles — a profile followed by news items about the same subject, at least `CHRONICLE_CHARS`
long — exist so that LM-task episodes (DESIGN 2.3: support and query are different sequences of one
document) find documents long enough with their default settings; profiles and news items alone
are a few sentences (~80 tokens).

Rendering goes template -> segments (text, entity label or None) -> text in a language, or IOB2
tokens. Everything is a pure function of the seed (stdlib `random.Random` seeded with strings, no
set iteration, no `hash()`).
"""

from __future__ import annotations

import random
import re
from functools import lru_cache

from .lexicon import SLOT, WORD, capitalised, translate_word
from .tables import (
    ADJECTIVES, ADVERBS, ANNIVERSARIES, BAD, BUILDINGS, CAUSES, CITY_POOLS, COUNTRY_POOLS, EVENT_NOUNS,
    EVENTS, FIELDS, FOODS, GOOD, HOBBIES, LEAGUE_PLACES, MONTHS, NER_TEMPLATES, NUMBER_WORDS, ORDINALS,
    ORG_BODY, ORG_KIND_BODY, ORG_KINDS, ORG_OPENINGS, OTHER_JOBS, PERSON_POOLS, QUOTES, RELATIVES,
    RIVER_POOLS, ROLES, SEASONS, SPEECH_VERBS, THINGS, TIME_PHRASES, TOPICS, WEATHER, WEEKDAYS,
)
from .world import FACTS, Entity, World

XX_SHARE = 0.10  # share of corpus documents written in the toy language
CHRONICLE_SHARE = 0.05  # share of corpus documents that are chronicles
# ≥ 8 windows of 65 tokens (meta.task=lm defaults: k_shot + q_query = 8, window_len + 1 = 65) at the
# demo tokenizer's ~3.3 characters per token, with a margin
CHRONICLE_CHARS = 2800
NER_SENTENCES = {"train": 1500, "dev": 300, "test": 300}
TaggedSentence = tuple[str, list[tuple[str, str]]]  # (text, [(token, IOB2 tag)])

POOLS = {"person": PERSON_POOLS, "city": CITY_POOLS, "country": COUNTRY_POOLS, "river": RIVER_POOLS,
         **{kind: {"open": ORG_OPENINGS, "body": ORG_BODY + ORG_KIND_BODY[kind]} for kind in ORG_KINDS}}
# Paragraphs of a profile document: (pool, fewest, most sentences).
PROFILE_LAYOUT = {
    "person": (("open", 1, 1), ("early", 2, 3), ("career", 2, 4), ("life", 1, 3)),
    "default": (("open", 1, 2), ("body", 2, 4), ("body", 1, 3)),
}


# ---------------------------------------------------------------------------------------------
# Random fillers: slots not given by facts. A trailing digit (`hobby2`) draws another value.
# ---------------------------------------------------------------------------------------------
def _pick(table):
    return lambda r, w: r.choice(table)


FILLERS = {
    "year": lambda r, w: r.randint(1950, 2023),
    "recent": lambda r, w: r.randint(2008, 2023),
    "decade": lambda r, w: r.choice((1960, 1970, 1980, 1990)),
    "month": _pick(MONTHS), "weekday": _pick(WEEKDAYS), "season": _pick(SEASONS),
    "day": lambda r, w: r.randint(1, 28),
    "n": lambda r, w: r.randint(2, 19),
    "nw": _pick(NUMBER_WORDS),
    "hour": lambda r, w: f"{r.randint(7, 21)}.{r.choice(('00', '15', '30', '45'))}",
    "big": lambda r, w: f"{r.randint(120, 9800):,}",
    "pct": lambda r, w: r.randint(2, 64),
    "money": lambda r, w: r.randint(2, 950),
    "score": lambda r, w: f"{r.randint(0, 6)}-{r.randint(0, 6)}",
    "adj": _pick(ADJECTIVES), "good": _pick(GOOD), "bad": _pick(BAD), "hobby": _pick(HOBBIES),
    "food": _pick(FOODS), "said": _pick(SPEECH_VERBS), "adv": _pick(ADVERBS), "thing": _pick(THINGS),
    "event_noun": _pick(EVENT_NOUNS), "relative": _pick(RELATIVES), "quote": _pick(QUOTES),
    "Quote": lambda r, w: capitalised(r.choice(QUOTES)), "job": _pick(OTHER_JOBS),
    "time": _pick(TIME_PHRASES), "role": _pick(ROLES),
    "any_city": lambda r, w: r.choice(w.of("city")),
    "any_country": lambda r, w: r.choice(w.of("country")),
    "any_company": lambda r, w: r.choice(w.of("company")),
    "any_uni": lambda r, w: r.choice(w.of("university")),
}


def _event_facts(rng: random.Random, world: World, facts: dict) -> dict:
    """Values a news item repeats between headline and body (drawn once per document)."""
    year = rng.randint(2009, 2023)
    weather = rng.choice(WEATHER)
    bare_weather = weather[2:] if weather.startswith("a ") else weather
    event = rng.choice(EVENT_NOUNS)
    ev = {
        "ev_year": year, "ev_next_year": year + rng.randint(1, 3), "ev_month": rng.choice(MONTHS),
        "ev_weekday": rng.choice(WEEKDAYS), "ev_season": rng.choice(SEASONS),
        "ev_date": f"{rng.randint(1, 28)} {rng.choice(MONTHS)} {year}",
        "ev_n": rng.randint(2, 12), "ev_n2": rng.randint(1, 9), "ev_big": f"{rng.randint(150, 9000):,}",
        "ev_money": rng.randint(2, 900), "ev_pct": rng.randint(2, 40), "ev_age": rng.choice(ANNIVERSARIES),
        "ev_nth": rng.choice(ORDINALS), "ev_place": rng.choice(LEAGUE_PLACES),
        "ev_score": f"{rng.randint(1, 5)}-{rng.randint(0, 1)}", "ev_good": rng.choice(GOOD), "ev_bad": rng.choice(BAD),
        "ev_weather": bare_weather, "Ev_weather": capitalised(weather), "ev_event": event,
        "ev_thing": rng.choice(THINGS), "ev_thing2": rng.choice(THINGS),
        "ev_building": rng.choice(BUILDINGS), "ev_topic": rng.choice(TOPICS), "ev_cause": rng.choice(CAUSES),
        "ev_city": rng.choice(world.of("city")), "ev_country": rng.choice(world.of("country")),
        "ev_person": rng.choice(world.of("person")), "ev_company": rng.choice(world.of("company")),
        "ev_uni": rng.choice(world.of("university")), "ev_club": rng.choice(world.of("club")),
        "ev_player": rng.choice(world.of("person")),
        "ev_org": rng.choice([o for k in ORG_KINDS for o in world.of(k)]),
    }
    return {k: v for k, v in ev.items() if not any(v is f for f in facts.values())}


# ---------------------------------------------------------------------------------------------
# Rendering: template -> segments (text, label or None) -> text in a language, or IOB2 tokens.
# ---------------------------------------------------------------------------------------------
_ALTERNATIVES = re.compile(r"\[([^\[\]]*)\]")
_NUMBERED = re.compile(r"^(.*\D)(\d+)$")
_TOKEN = re.compile(r"\w+(?:[-.,]\w+)*|[^\w\s]")


@lru_cache(maxsize=None)
def _slots(template: str) -> frozenset[str]:
    return frozenset(SLOT.findall(template))


def _filler_for(slot: str) -> str | None:
    if slot in FILLERS:
        return slot
    m = _NUMBERED.match(slot)
    return m.group(1) if m and m.group(1) in FILLERS else None


def _usable(template: str, facts: dict) -> bool:
    return all(s in facts or _filler_for(s) for s in _slots(template))


def _render(template: str, facts: dict, rng: random.Random, world: World) -> list[tuple[str, str | None]]:
    """Expand alternatives, fill slots; returns segments (text, entity label or None)."""
    text = _ALTERNATIVES.sub(lambda m: rng.choice(m.group(1).split("|")), template)
    segments: list[tuple[str, str | None]] = []
    drawn: dict[str, list] = {}
    pos = 0
    for m in SLOT.finditer(text):
        if m.start() > pos:
            segments.append((text[pos:m.start()], None))
        slot = m.group(1)
        if slot in facts:
            value = facts[slot]
        else:
            base = _filler_for(slot)
            if base is None:
                raise KeyError(f"template slot {slot!r} has no filler")
            value = FILLERS[base](rng, world)
            for _ in range(10):  # `hobby2` differs from `hobby`; fillers differ from the subject
                if all(value is not v and value != v for v in drawn.get(base, []) + [facts.get("P"), facts.get("O")]):
                    break
                value = FILLERS[base](rng, world)
            drawn.setdefault(base, []).append(value)
        segments.append((value.name, value.label) if isinstance(value, Entity) else (str(value), None))
        pos = m.end()
    if pos < len(text):
        segments.append((text[pos:], None))
    first, label = segments[0]
    if label is None and first[:1].islower():
        segments[0] = (capitalised(first), None)
    return segments


def _surface(segments, lang: str) -> list[tuple[str, str | None]]:
    """Segments in `lang`: for `xx`, every word outside names goes through the lexicon."""
    if lang == "en":
        return segments
    return [(text if label else WORD.sub(lambda m: translate_word(m.group(0)), text), label)
            for text, label in segments]


def _text(segments) -> str:
    return "".join(t for t, _ in segments)


def _iob2(segments) -> list[tuple[str, str]]:
    """Tokens with strict IOB2 tags; punctuation is split off words."""
    out = []
    for text, label in segments:
        tokens = _TOKEN.findall(text)
        for i, tok in enumerate(tokens):
            out.append((tok, "O" if label is None else ("B-" if i == 0 else "I-") + label))
    return out


# ---------------------------------------------------------------------------------------------
# Documents
# ---------------------------------------------------------------------------------------------
def _sentences(pool, count: int, facts: dict, rng: random.Random, world: World,
               used: set[str] | None = None) -> list[list]:
    """`count` distinct usable templates of `pool` rendered (none already in `used`)."""
    used = set() if used is None else used
    usable = [t for t in pool if t not in used and _usable(t, facts)]
    chosen = rng.sample(usable, min(count, len(usable)))
    used.update(chosen)
    return [_render(t, facts, rng, world) for t in chosen]


def _profile(subject: Entity, facts: dict, rng: random.Random, world: World) -> list[list[list]]:
    pools = POOLS[subject.kind]
    layout = PROFILE_LAYOUT.get(subject.kind, PROFILE_LAYOUT["default"])
    used: set[str] = set()
    paragraphs = [_sentences(pools[name], rng.randint(lo, hi), facts, rng, world, used)
                  for name, lo, hi in layout]
    title = [[(subject.name, subject.label)]]
    return [title] + [p for p in paragraphs if p]


def _news(subject: Entity, facts: dict, rng: random.Random, world: World) -> list[list[list]] | None:
    events = [e for e in EVENTS.get(subject.kind, ()) if all(_usable(t, facts) for t in e["lead"])]
    if not events:
        return None
    event = rng.choice(events)
    headline = _sentences(event["head"], 1, facts, rng, world)
    lead = _sentences(event["lead"], 1, facts, rng, world)
    body = _sentences(event["body"], rng.randint(2, len(event["body"])), facts, rng, world)
    if not headline:
        return None
    return [headline, lead + body[: len(body) // 2], body[len(body) // 2:]]


def _document(subject: Entity, rng: random.Random, world: World) -> list[list[list]]:
    facts = FACTS[subject.kind](subject)
    if rng.random() < 0.45:
        news = _news(subject, {**_event_facts(rng, world, facts), **facts}, rng, world)
        if news:
            return news
    return _profile(subject, facts, rng, world)


def _chronicle(subject: Entity, rng: random.Random, world: World) -> list[list[list]]:
    """A profile, then news items (or further profile paragraphs for subjects without events) about
    `subject`, until the text reaches CHRONICLE_CHARS."""
    facts = FACTS[subject.kind](subject)
    paragraphs = _profile(subject, facts, rng, world)
    while len(_document_text(paragraphs, "en")) < CHRONICLE_CHARS:
        news = _news(subject, {**_event_facts(rng, world, facts), **facts}, rng, world)
        paragraphs += news if news else _profile(subject, facts, rng, world)[1:]
    return paragraphs


def _document_text(paragraphs: list[list[list]], lang: str) -> str:
    lines = [" ".join(_text(_surface(s, lang)) for s in p) for p in paragraphs if p]
    return "\n".join(line for line in lines if line.strip())


def corpus_documents(world: World, split: str, budget_bytes: int, seed: int) -> list[tuple[str, str]]:
    """(language, text) documents about the `split` subjects until `budget_bytes` is reached."""
    rng = random.Random(f"metalm-demo-world:{seed}:corpus:{split}")
    subjects = [e for e in world.subjects() if e.split == split]
    docs: list[tuple[str, str]] = []
    size = 0
    while size < budget_bytes:
        rng.shuffle(subjects)
        for subject in subjects:
            lang = "xx" if rng.random() < XX_SHARE else "en"
            make = _chronicle if rng.random() < CHRONICLE_SHARE else _document
            text = _document_text(make(subject, rng, world), lang)
            docs.append((lang, text))
            size += len(text.encode("utf-8")) + 2
            if size >= budget_bytes:
                break
    return docs


# ---------------------------------------------------------------------------------------------
# NER sentences
# ---------------------------------------------------------------------------------------------
def _ner_facts(rng: random.Random, world: World) -> dict:
    people = world.of("person")
    ner = {}
    for base, kind in (("per", "person"), ("city", "city"), ("country", "country"), ("river", "river"),
                       ("company", "company"), ("uni", "university"), ("club", "club"), ("paper", "newspaper")):
        picks = rng.sample(world.of(kind), 3)
        for suffix, e in zip(("", "2", "3"), picks):
            ner[base + suffix] = e
    fam = rng.sample(people, 2)
    ner.update(fam=Entity(fam[0].attrs["family"], "person"), fam2=Entity(fam[1].attrs["family"], "person"),
               given=Entity(rng.choice(people).attrs["given"], "person"),
               field=rng.choice(FIELDS), products=rng.choice(ner["company"].attrs["products"]))
    return ner


def ner_sentences(world: World, seed: int, lang: str) -> dict[str, list[TaggedSentence]]:
    """Tagged sentences per split (train/dev/test); no sentence text repeats across splits."""
    rng = random.Random(f"metalm-demo-world:{seed}:ner:{lang}")
    seen: set[str] = set()
    out: dict[str, list[TaggedSentence]] = {}
    for split, count in NER_SENTENCES.items():
        sentences: list[TaggedSentence] = []
        while len(sentences) < count:
            template = rng.choice(NER_TEMPLATES)
            segments = _surface(_render(template, _ner_facts(rng, world), rng, world), lang)
            text = _text(segments)
            if text in seen:
                continue
            seen.add(text)
            sentences.append((text, _iob2(segments)))
        out[split] = sentences
    return out
