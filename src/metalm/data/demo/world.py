"""The toy world: people, places and organisations with consistent relations, and the facts a
document about each may state. A pure function of the seed."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from .lexicon import english_vocabulary, xx_lexicon
from .tables import (
    BRAND_ENDINGS, CARGO, CITY_ENDINGS, CITY_PATTERNS, CLUB_PATTERNS, CLUB_WORK, COMPANY_KINDS,
    COUNTRY_ENDINGS, COUNTRY_PATTERNS, FAMILY_ENDINGS, FAMILY_MIDDLES, FAMILY_STARTS, FIELDS,
    FOUNDED_KINDS, GIVEN_ENDINGS, GIVEN_MIDDLES, GIVEN_STARTS, HEAD_TITLES, JOBS, KIDS, LANDMARKS,
    NEWSPAPER_PATTERNS, NUMBER_WORDS, ORG_KINDS, ORG_NOUNS, OTHER_JOBS, PAPER_SECTIONS, PLACE_MIDDLES,
    PLACE_STARTS, PRONOUNS, REGIONS, RELATIVES, RIVER_ENDINGS, RIVER_MOUTHS, RIVER_PATTERNS, SPORTS,
    TRAITS, UNIVERSITY_PATTERNS,
)

HELD_OUT_SHARE = 0.10  # share of subject entities whose documents go to validation
KIND_LABELS = {"person": "PER", "city": "LOC", "country": "LOC", "river": "LOC", "company": "ORG",
               "university": "ORG", "club": "ORG", "newspaper": "ORG"}
WORLD_SIZES = {"country": 10, "city": 64, "river": 20, "company": 60, "university": 16, "club": 32,
               "newspaper": 16, "person": 360}


@dataclass(eq=False)
class Entity:
    """A named thing in the world; `attrs` holds its facts (other entities, years, words)."""

    name: str
    kind: str
    split: str = "train"  # "validation": documents about it go to the validation corpus
    attrs: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return KIND_LABELS[self.kind]


@dataclass
class World:
    entities: dict[str, list[Entity]]

    def of(self, kind: str) -> list[Entity]:
        return self.entities[kind]

    def subjects(self) -> list[Entity]:
        return [e for kind in KIND_LABELS for e in self.entities[kind]]


class _Namer:
    """Draws names from syllable tables: full names are unique, and no syllable-built stem is a
    common (template) word or a word of the toy language."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.used: set[str] = set()
        self.reserved = set(english_vocabulary()) | set(xx_lexicon().values())

    def _stem(self, starts, middles, endings) -> str:
        r = self.rng
        for _ in range(1000):
            start, middle, end = r.choice(starts), r.choice(middles), r.choice(endings)
            if middle and (middle[-1] in "aeiou") == (end[0] in "aeiou"):
                middle = ""
            stem = start + middle + end
            if stem.lower() not in self.reserved:
                return stem
        raise RuntimeError("name syllable tables produce only reserved words")

    def claim(self, name: str) -> bool:
        """Reserve `name` if nobody has it yet."""
        if name in self.used:
            return False
        self.used.add(name)
        return True

    def unique(self, make) -> str:
        for _ in range(1000):
            name = make()
            if self.claim(name):
                return name
        raise RuntimeError("name tables too small for the requested world size")

    def place(self, endings, patterns) -> str:
        return self.unique(lambda: self.rng.choice(patterns).format(
            self._stem(PLACE_STARTS, PLACE_MIDDLES, endings)))

    def given(self, gender: str) -> str:
        return self._stem(GIVEN_STARTS, GIVEN_MIDDLES, GIVEN_ENDINGS[gender])

    def family(self) -> str:
        return self._stem(FAMILY_STARTS, FAMILY_MIDDLES, FAMILY_ENDINGS)

    def brand(self) -> str:
        return self._stem(PLACE_STARTS, ("", "a", "o"), BRAND_ENDINGS)


def article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _build_places(rng: random.Random, namer: _Namer) -> dict[str, list[Entity]]:
    countries = [Entity(namer.place(COUNTRY_ENDINGS, COUNTRY_PATTERNS), "country")
                 for _ in range(WORLD_SIZES["country"])]
    cities = []
    for i in range(WORLD_SIZES["city"]):
        country = countries[i % len(countries)]  # every country gets cities; the first is its capital
        city = Entity(namer.place(CITY_ENDINGS, CITY_PATTERNS), "city", attrs={
            "country": country, "region": rng.choice(REGIONS), "founded": rng.randint(900, 1850),
            "pop": rng.randint(8, 900) * 1000 + rng.randint(0, 999), "landmarks": rng.sample(LANDMARKS, 2)})
        country.attrs.setdefault("cities", []).append(city)
        cities.append(city)
    rivers = []
    for i in range(WORLD_SIZES["river"]):
        country = countries[i % len(countries)]
        along = rng.sample(country.attrs["cities"], min(3, len(country.attrs["cities"])))
        river = Entity(namer.place(RIVER_ENDINGS, RIVER_PATTERNS), "river", attrs={
            "country": country, "cities": along, "length": rng.randint(40, 1400),
            "mouth": rng.choice(RIVER_MOUTHS), "cargo": rng.choice(CARGO)})
        for city in along:
            city.attrs.setdefault("river", river)
        country.attrs.setdefault("river", river)
        rivers.append(river)
    for country in countries:
        others = [c for c in countries if c is not country]
        country.attrs.update(capital=country.attrs["cities"][0], neighbour=rng.choice(others),
                             pop_m=rng.randint(2, 60), region=rng.choice(REGIONS))
    return {"country": countries, "city": cities, "river": rivers}


def _org_name(kind: str, city: Entity, rng: random.Random, namer: _Namer) -> tuple[str, dict]:
    """A name for an organisation in `city` and the attributes its kind implies."""
    words = city.name.split()  # "Port Vel" stays whole; "Vel Falls" gives "Vel"
    base = city.name if words[0] in ("Port", "New", "Saint") else words[0]
    if kind == "company":
        suffix = rng.choice(list(COMPANY_KINDS))
        stem = rng.choice((namer.family(), namer.brand(), base))
        return f"{stem} {suffix}", dict(COMPANY_KINDS[suffix])  # industry, products
    if kind == "university":
        return rng.choice(UNIVERSITY_PATTERNS).format(city=base, family=namer.family()), {
            "field": rng.choice(FIELDS), "students": rng.randint(20, 400) * 100}
    if kind == "club":
        return rng.choice(CLUB_PATTERNS).format(city=base), {
            "sport": rng.choice(SPORTS), "titles": rng.choice(NUMBER_WORDS)}
    return rng.choice(NEWSPAPER_PATTERNS).format(city=base, brand=namer.brand()), {
        "section": rng.choice(PAPER_SECTIONS), "circulation": rng.randint(5, 300) * 1000}


def _build_orgs(rng: random.Random, namer: _Namer, cities: list[Entity]) -> dict[str, list[Entity]]:
    out: dict[str, list[Entity]] = {}
    for kind in ORG_KINDS:
        orgs: list[Entity] = []
        while len(orgs) < WORLD_SIZES[kind]:
            city = rng.choice(cities)
            name, attrs = _org_name(kind, city, rng, namer)
            if not namer.claim(name):
                continue
            attrs.update(city=city, country=city.attrs["country"], founded=rng.randint(1750, 2015),
                         staff=rng.randint(12, 4000), revenue=rng.randint(2, 900))
            org = Entity(name, kind, attrs=attrs)
            city.attrs.setdefault(kind, org)
            orgs.append(org)
        for org in orgs:  # rivals: same kind, preferably the same country
            same = [o for o in orgs if o is not org and o.attrs["country"] is org.attrs["country"]]
            org.attrs["rival"] = rng.choice(same or [o for o in orgs if o is not org])
        out[kind] = orgs
    return out


def _build_people(rng: random.Random, namer: _Namer, world: dict[str, list[Entity]]) -> list[Entity]:
    cities, orgs = world["city"], [o for k in ORG_KINDS for o in world[k]]
    people = []
    for i in range(WORLD_SIZES["person"]):
        gender = rng.choice("fm")
        given = namer.given(gender)
        name = namer.unique(lambda: f"{given} {namer.family()}")
        employer = orgs[i] if i < len(orgs) else rng.choice(orgs)  # every org has someone
        kind = employer.kind
        is_head = i < len(orgs)
        job = HEAD_TITLES[kind] if is_head else rng.choice(JOBS[kind])
        born = rng.randint(1993, 2003) if job == "player" else rng.randint(1945, 1990)
        grad = born + rng.randint(21, 26)
        joined = min(2022, grad + rng.randint(0, 14))
        birth = rng.choice(cities)
        home = employer.attrs["city"] if rng.random() < 0.7 else rng.choice(cities)
        unis = world["university"]
        person = Entity(name, "person", attrs={
            "gender": gender, "given": name.split()[0], "family": name.split()[-1], "born": born,
            "birth_city": birth, "home_city": home, "employer": employer, "job": job,
            "joined": joined, "grad_year": grad, "alma": rng.choice(unis), "field": rng.choice(FIELDS),
            "club": rng.choice(world["club"]), "kids": rng.choice(KIDS),
            "age_move": rng.randint(4, 30), "relative": rng.choice(RELATIVES),
            "other_job": rng.choice(OTHER_JOBS), "trait": rng.choice(TRAITS)})
        if is_head:
            employer.attrs.update(head=person, head_since=joined)
            person.attrs.update(head_of=employer, head_since=joined)
        else:
            employer.attrs.setdefault("employee", person)
            if job == "player":
                employer.attrs.setdefault("player", person)
            if kind == "newspaper":
                employer.attrs.setdefault("journalist", person)
        people.append(person)
    _relate_people(rng, people, world)
    return people


def _relate_people(rng: random.Random, people: list[Entity], world: dict[str, list[Entity]]) -> None:
    """Partners, rivals, founders, mayors, alumni: the cross-links that make facts recur."""
    order = people[:]
    rng.shuffle(order)
    for a, b in zip(order[0:120:2], order[1:120:2]):
        a.attrs["partner"], b.attrs["partner"] = b, a
    for a, b in zip(order[120:200:2], order[121:200:2]):
        year = max(a.attrs["grad_year"], b.attrs["grad_year"]) + rng.randint(0, 10)
        a.attrs.update(rival=b, rival_since=year)
        b.attrs.update(rival=a, rival_since=year)
    for org in rng.sample([o for k in FOUNDED_KINDS for o in world[k]], 50):
        founder = rng.choice(people)
        if "founded_org" in founder.attrs:
            continue
        year = min(2020, founder.attrs["born"] + rng.randint(24, 50))
        org.attrs.update(founder=founder, founded=year)
        founder.attrs.update(founded_org=org, founded_year=year)
    for city in world["city"]:
        residents = [p for p in people if p.attrs["home_city"] is city and "head_of" not in p.attrs]
        if residents:
            city.attrs.update(mayor=rng.choice(residents), mayor_since=rng.randint(2005, 2022))
    for uni in world["university"]:
        alumni = [p for p in people if p.attrs["alma"] is uni]
        if alumni:
            uni.attrs["alumnus"] = rng.choice(alumni)


def _mark_held_out(rng: random.Random, world: dict[str, list[Entity]]) -> None:
    for items in world.values():
        for e in rng.sample(items, max(1, round(HELD_OUT_SHARE * len(items)))):
            e.split = "validation"


def build_world(seed: int = 0) -> World:
    """The toy world for `seed`: places, organisations, people and their relations."""
    rng = random.Random(f"metalm-demo-world:{seed}:world")
    namer = _Namer(rng)
    world = _build_places(rng, namer)
    world.update(_build_orgs(rng, namer, world["city"]))
    world["person"] = _build_people(rng, namer, world)
    _mark_held_out(rng, world)
    return World({kind: world[kind] for kind in KIND_LABELS})


# ---------------------------------------------------------------------------------------------
# Facts: what a document about an entity may say (slot name -> Entity or plain text).
# ---------------------------------------------------------------------------------------------
def _person_facts(p: Entity) -> dict:
    a = p.attrs
    he, his, him = PRONOUNS[a["gender"]]
    employer = a["employer"]
    work_topic = {"company": lambda: employer.attrs["products"][0],
                  "university": lambda: a["field"],
                  "newspaper": lambda: employer.attrs["section"],
                  "club": lambda: CLUB_WORK[len(a["family"]) % len(CLUB_WORK)]}[employer.kind]()
    facts = {
        "P": p, "Pg": Entity(a["given"], "person"), "Pf": Entity(a["family"], "person"),
        "He": he.capitalize(), "he": he, "His": his.capitalize(), "his": his, "him": him,
        "born": a["born"], "birth_city": a["birth_city"], "birth_country": a["birth_city"].attrs["country"],
        "home_city": a["home_city"], "occupation": a["job"], "a_occupation": article(a["job"]),
        "employer": employer, "joined": a["joined"], "alma": a["alma"], "field": a["field"],
        "grad_year": a["grad_year"], "work_topic": work_topic, "club": a["club"],
        "kids": a["kids"], "age_move": a["age_move"], "relative": a["relative"],
        "a_other_job": article(a["other_job"]), "a_trait": article(a["trait"]),
        "section": employer.attrs.get("section", PAPER_SECTIONS[a["born"] % len(PAPER_SECTIONS)]),
    }
    paper = a["home_city"].attrs.get("newspaper") or a["birth_city"].attrs.get("newspaper")
    if paper is not None:
        facts["paper"] = paper
    if a["job"] == "player":
        facts["player_club"] = employer
    if a["home_city"] is not a["birth_city"]:
        facts["moved_to"] = a["home_city"]
    for key in ("partner", "rival", "rival_since", "founded_org", "founded_year", "head_of", "head_since"):
        if key in a:
            facts[key] = a[key]
    if "head_of" in a:
        facts["head_title"] = a["job"]
    if "founded_org" in a:
        facts["founded_staff"] = a["founded_org"].attrs["staff"]
    if "river" in a["birth_city"].attrs:
        facts["birth_river"] = a["birth_city"].attrs["river"]
    if "river" in a["home_city"].attrs:
        facts["home_river"] = a["home_city"].attrs["river"]
    return facts


def _city_facts(c: Entity) -> dict:
    a = c.attrs
    facts = {"C": c, "country": a["country"], "region": a["region"], "founded": a["founded"],
             "pop": f"{a['pop']:,}", "landmark": a["landmarks"][0], "landmark2": a["landmarks"][1]}
    for key in ("river", "mayor", "mayor_since", "club", "company"):
        if key in a:
            facts[key] = a[key]
    if "club" in a:
        facts["club_sport"] = a["club"].attrs["sport"]
    if "university" in a:
        facts.update(uni=a["university"], uni_founded=a["university"].attrs["founded"])
    if "newspaper" in a:
        facts["paper"] = a["newspaper"]
    if "company" in a:
        facts.update(industry=a["company"].attrs["industry"], products=a["company"].attrs["products"][0])
    others = [x for x in a["country"].attrs["cities"] if x is not c]
    if others:
        facts["neighbour"] = others[a["pop"] % len(others)]
    return facts


def _country_facts(k: Entity) -> dict:
    a = k.attrs
    facts = {"K": k, "capital": a["capital"], "neighbour_country": a["neighbour"],
             "pop_m": a["pop_m"], "region": a["region"]}
    cities = a["cities"]
    if len(cities) >= 3:
        facts.update(city2=cities[1], city3=cities[2])
    if "river" in a:
        facts.update(river=a["river"], mouth=a["river"].attrs["mouth"])
    companies = [c.attrs["company"] for c in cities if "company" in c.attrs]
    industries = list(dict.fromkeys(c.attrs["industry"] for c in companies))
    if companies:
        facts["company"] = companies[0]
    if len(industries) >= 2:
        facts.update(industry=industries[0], industry2=industries[1])
    return facts


def _river_facts(r: Entity) -> dict:
    a = r.attrs
    facts = {"R": r, "country": a["country"], "length": a["length"], "mouth": a["mouth"],
             "rcity": a["cities"][0], "cargo": a["cargo"]}
    if len(a["cities"]) > 1:
        facts["rcity2"] = a["cities"][1]
    return facts
def _org_facts(o: Entity) -> dict:
    a = o.attrs
    noun, plural = ORG_NOUNS[o.kind]
    if o.kind == "company":
        noun = f"{a['industry']} company"
    facts = {"O": o, "city": a["city"], "country": a["country"], "founded": a["founded"],
             "staff": f"{a['staff']:,}", "rival_org": a["rival"], "a_org_noun": article(noun),
             "org_noun_plural": plural, "region": a["city"].attrs["region"],
             "head_title": HEAD_TITLES[o.kind]}
    for key in ("head", "head_since", "founder", "player", "journalist", "field", "sport", "section"):
        if key in a:
            facts[key] = a[key]
    if o.kind == "company":
        facts.update(products=a["products"][0], products2=a["products"][1], revenue=a["revenue"],
                     export_country=a["country"].attrs["neighbour"])
    if o.kind == "university":
        facts["students"] = f"{a['students']:,}"
    if o.kind == "newspaper":
        facts["circulation"] = f"{a['circulation']:,}"
    if o.kind == "club":
        facts["titles"] = a["titles"]
        if "head" in a:
            facts["coach"] = a["head"]
    paper = a["city"].attrs.get("newspaper")
    if paper is not None and paper is not o:
        facts["paper"] = paper
    if "alumnus" in a:
        facts.update(alumnus=a["alumnus"], a_alumnus_job=article(a["alumnus"].attrs["job"]))
    if "employee" in a:
        facts.update(employee=a["employee"], a_employee_job=article(a["employee"].attrs["job"]))
    return facts


FACTS = {"person": _person_facts, "city": _city_facts, "country": _country_facts,
         "river": _river_facts, "company": _org_facts, "university": _org_facts,
         "club": _org_facts, "newspaper": _org_facts}
