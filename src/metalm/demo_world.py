"""The default demo dataset: a small synthetic world, generated deterministically at run time.

Why: the README's main command must run offline on a fresh machine, and nothing large is
committed. So metalm builds a toy world — people, places and organisations with consistent
relations — and writes, from it, a pretraining corpus and NER files in exactly the formats of the
real data under `shared/data/` (so the same readers and evaluators run on both):

    OUT/corpus/train/train-00.txt            ~2.5 MB, one document per blank-line-separated block
    OUT/corpus/validation/validation-00.txt  ~125 KB, documents about held-out entities
    OUT/ner/en/{train,dev,test}.iob2         1500/300/300 sentences, IOB2 PER/LOC/ORG
    OUT/ner/xx/{train,dev,test}.iob2         the same kind of sentences in a toy second language
    OUT/README.md                            what this is, how it was made, computed sizes

The text is built from many sentence templates with alternatives (`[a|b]`) and slots (`{name}`),
filled from the world's facts (consistent across documents: an LM can learn them) and from
random fillers (numbers, dates, common words: a wide band of word frequencies). The second
language `xx` replaces every English word outside names through a fixed, seed-independent
substitution lexicon; about 10% of the corpus documents are written in it, so it is "seen" during
pretraining and zero-shot cross-lingual NER (train en, test xx) has something to transfer.

Everything is a pure function of the seed (stdlib `random.Random` seeded with strings, no set
iteration, no `hash()`), so the same seed gives byte-identical files. Results on this set say
nothing about real language; it exists so the pipeline can be run and checked end to end.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

VERSION = 1  # bump whenever output for a seed changes (tables, templates, sizes): names the cache dir
TRAIN_BYTES = 2_500_000
VALIDATION_BYTES = 125_000
NER_SENTENCES = {"train": 1500, "dev": 300, "test": 300}
XX_SHARE = 0.10  # share of corpus documents written in the toy language
HELD_OUT_SHARE = 0.10  # share of subject entities whose documents go to validation
LANGUAGES = ("en", "xx")
STALE_TMP_SECONDS = 3600  # a killed generation's temporary directory is removed after this

# ---------------------------------------------------------------------------------------------
# Name syllables: names are built from parts so they are plentiful and varied.
# ---------------------------------------------------------------------------------------------
GIVEN_STARTS = ("Al Ber Cor Dar El Fen Gar Hal Is Jor Kal Lor Mar Nor Or Per Quin Ros Sel Tor Ul Val "
                "Wen Yor Zel Bri Cal Dor Ev Lin Mir Tam Ar Bel Cas Ed Fal Hen Ir Kes Lu Mel Nia Os Ra "
                "Sa Ta Vi Ab Em Jo Ke Ma Ne Ri So Ti").split()
GIVEN_MIDDLES = ("", "", "", "a", "e", "i", "o", "an", "en", "ar", "el", "is")
GIVEN_ENDINGS = {
    "f": ("a", "ina", "elle", "ia", "eth", "ora", "ys", "wen", "ine", "anna", "ise", "ette"),
    "m": ("o", "an", "ric", "en", "as", "us", "iel", "mund", "ert", "on", "ard", "ik"),
}
FAMILY_STARTS = ("Ash Black Brand Cald Dun Eld Fair Gold Grim Hart Holm Kirk Lind Mor Pem Quar Rad "
                 "Sand Stan Thorn Var Wex Yar Zorn Bex Crom Dal Farr Hask Mald Nev Orv Pell Rusk Selv "
                 "Tarn Ulm Vask Bryn Cors Drev Fenn Gorr Jast Kell Lenn Marr Nort Prae Sorv").split()
FAMILY_MIDDLES = ("", "", "a", "e", "i", "o", "er", "in", "el")
FAMILY_ENDINGS = ("son sen berg ley ford wick ov ström dale mann by ton ard ell ez ski ius holt more "
                  "quist hurst ik ani escu").split()
PLACE_STARTS = ("Vel Mar Ost Kor Tal Bren Cas Dor Ev Fal Gal Hav Ist Jor Lun Mer Nor Pra Quel Ros Sil "
                "Tor Ur Var Wes Zan Ald Bel Cor Del Ern Fro Gres Hol Kel Lom Mos Nev Ors Pel Rav Sen "
                "Tav Ulv Vor Yst Zel Ask Bal Dun").split()
PLACE_MIDDLES = ("", "", "a", "e", "i", "o", "en", "ar", "or")
CITY_ENDINGS = ("dan mouth burg holm grad ville ford haven stad ton mere port bury field ara ec "
                "wick lin ice ona").split()
CITY_PATTERNS = ("{}",) * 8 + ("Port {}", "New {}", "{} Falls", "Saint {}")
COUNTRY_ENDINGS = ("ia land onia istan ovia ar ea mark ania eria").split()
COUNTRY_PATTERNS = ("{}",) * 6 + ("North {}", "East {}")
RIVER_ENDINGS = ("el a en or is und ava ine").split()
RIVER_PATTERNS = ("{} River",) * 3 + ("River {}",)
BRAND_ENDINGS = ("ix ex on ora ium ax eon").split()

# Companies: name suffix -> (industry, what they make).
COMPANY_KINDS = {
    "Motors": ("car making", ("cars", "engines", "delivery vans", "electric buses")),
    "Foods": ("food", ("bread", "frozen meals", "biscuits", "canned soup")),
    "Textiles": ("textile", ("cotton cloth", "wool blankets", "work clothes", "rope")),
    "Shipping": ("shipping", ("cargo ships", "river barges", "ferries", "fishing boats")),
    "Energy": ("energy", ("solar panels", "wind turbines", "batteries", "power cables")),
    "Pharma": ("medicine", ("vaccines", "pain killers", "cough syrup", "vitamins")),
    "Steel": ("steel", ("steel beams", "iron pipes", "railway tracks", "nails")),
    "Systems": ("software", ("accounting software", "mobile games", "search tools", "maps")),
    "Brewery": ("brewing", ("beer", "cider", "lemonade", "mineral water")),
    "Records": ("music", ("records", "concert tickets", "radio shows", "song books")),
    "Furniture": ("furniture", ("chairs", "kitchen tables", "beds", "wooden toys")),
    "Instruments": ("instrument", ("pianos", "violins", "clocks", "microscopes")),
}
UNIVERSITY_PATTERNS = ("{city} University", "{city} Institute of Technology", "{family} College",
                       "{city} School of Economics", "{city} Academy of Music", "{city} Polytechnic")
CLUB_PATTERNS = ("{city} Rovers", "{city} United", "{city} Athletic", "{city} Wanderers", "FC {city}",
                 "{city} Lions", "{city} Rangers", "Sporting {city}")
NEWSPAPER_PATTERNS = ("{city} Courier", "{city} Herald", "{city} Gazette", "{city} Tribune",
                      "{city} Post", "{city} Chronicle", "Daily {brand}", "Morning {brand}")

# ---------------------------------------------------------------------------------------------
# Common words: fillers for templates (their spread gives a wide band of word frequencies).
# ---------------------------------------------------------------------------------------------
JOBS = {
    "company": ("engineer", "accountant", "designer", "sales manager", "chemist", "software developer",
                "mechanic", "marketing director", "lawyer", "factory supervisor", "electrician"),
    "university": ("professor", "lecturer", "researcher", "librarian", "laboratory technician"),
    "newspaper": ("journalist", "reporter", "photographer", "columnist", "news editor"),
    "club": ("player", "assistant coach", "physiotherapist", "scout", "groundskeeper"),
}
HEAD_TITLES = {"company": "chief executive", "university": "rector", "newspaper": "editor",
               "club": "head coach"}
OTHER_JOBS = ("farmer", "baker", "teacher", "nurse", "carpenter", "fisherman", "tailor", "miner",
              "shopkeeper", "bus driver", "postman", "doctor", "painter", "sailor", "cook", "musician")
FIELDS = ("physics", "chemistry", "history", "law", "medicine", "mathematics", "economics", "biology",
          "engineering", "philosophy", "music", "geography", "architecture", "literature",
          "computer science", "agriculture")
PAPER_SECTIONS = ("local politics", "sport", "the economy", "science", "culture", "crime",
                  "education", "the weather", "farming", "travel")
CLUB_WORK = ("training young players", "the defence", "the fitness of the squad", "finding new talent",
             "the care of the pitch", "the reserve team")
SPORTS = ("football", "ice hockey", "basketball", "handball", "rugby", "volleyball")
MONTHS = ("January February March April May June July August September October November "
          "December").split()
WEEKDAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
SEASONS = ("spring", "summer", "autumn", "winter")
NUMBER_WORDS = "two three four five six seven eight nine ten eleven twelve".split()
ADJECTIVES = ("small", "large", "old", "new", "quiet", "busy", "famous", "modest", "modern", "narrow",
              "wide", "green", "grey", "cheerful", "crowded", "peaceful", "wealthy", "poor", "proud",
              "ancient", "cold", "warm", "windy", "dusty")
GOOD = ("excellent", "remarkable", "wonderful", "impressive", "splendid", "encouraging", "lovely",
        "brilliant")
BAD = ("disappointing", "terrible", "poor", "awful", "worrying", "miserable", "dreadful", "gloomy")
HOBBIES = ("chess", "gardening", "fishing", "painting", "cycling", "swimming", "reading old maps",
           "cooking", "birdwatching", "playing the piano", "hiking", "woodwork", "photography",
           "sailing", "running", "singing in a choir", "collecting stamps", "baking bread")
FOODS = ("fish soup", "apple cake", "roast lamb", "potato pancakes", "fresh bread", "cheese",
         "plum jam", "smoked eel", "honey biscuits", "bean stew")
WEATHER = ("heavy rain", "strong wind", "thick fog", "bright sunshine", "snow", "a sudden storm",
           "a long dry spell", "hail")
SPEECH_VERBS = ("said", "explained", "added", "told reporters", "insisted", "admitted", "noted")
ADVERBS = ("quickly", "slowly", "carefully", "quietly", "proudly", "suddenly", "finally", "gladly")
THINGS = ("bridge", "library", "school", "hospital", "market hall", "railway station", "park",
          "museum", "swimming pool", "theatre", "harbour", "fire station")
EVENT_NOUNS = ("festival", "concert", "fair", "parade", "market", "race", "exhibition", "dance")
LANDMARKS = ("an old stone bridge", "a tall clock tower", "a busy harbour", "a large cathedral",
             "a covered market", "a ruined castle", "a famous botanical garden", "a long sandy beach")
REGIONS = ("northern", "southern", "eastern", "western", "central")
RELATIVES = ("father", "mother", "grandfather", "grandmother", "uncle", "aunt", "older brother",
             "older sister")
TRAITS = ("patient", "careful", "generous", "demanding", "funny", "shy", "stubborn", "kind")
ROLES = ("teacher", "colleague", "manager", "friend", "neighbour")
RIVER_MOUTHS = ("the sea", "a large lake", "a wide bay", "the ocean")
TIME_PHRASES = ("last week", "on Monday", "this morning", "last year", "in the spring", "yesterday",
                "two days ago", "at the weekend", "last month", "on Friday evening")
PRONOUNS = {"f": ("she", "her", "her"), "m": ("he", "his", "him")}  # subject, possessive, object
KIDS = ("no", "two", "three", "four")
CARGO = ("coal", "timber", "grain", "salt", "wine")
ORDINALS = ("second", "third", "fourth", "fifth")
LEAGUE_PLACES = ("first", "second", "third", "fourth", "last")
ANNIVERSARIES = ("50th", "75th", "100th", "125th")
BUILDINGS = ("library", "laboratory", "lecture hall", "student house")
TOPICS = ("river water", "old bones", "bird songs", "the weather", "soil", "sleep")
CAUSES = ("a new school", "young musicians", "books for the library", "a new boat")
QUOTES = (
    "we have a lot of work to do", "this is a good day for everyone in the city",
    "nobody expected it to happen so quickly", "we will keep working hard for our people",
    "I am proud of what we have done together", "the next few months will be difficult",
    "it was the best decision I ever made", "we must listen to young people more often",
    "there is no reason to be afraid", "the numbers speak for themselves",
    "I simply wanted to do something useful", "we are looking forward to the new season",
    "this town has always been my home", "we learned a great deal from our mistakes",
)

# ---------------------------------------------------------------------------------------------
# Corpus templates. `{slot}` is a fact of the document's subject or a random filler (FILLERS);
# `[a|b|c]` picks one alternative. A template is used only where all its slots can be filled.
# ---------------------------------------------------------------------------------------------
PERSON_POOLS = {
    "open": (
        "{P} (born {born}) is {a_occupation} from {birth_city}.",
        "{P} is {a_occupation} who [lives|has lived for many years] in {home_city}.",
        "{P} was born in {birth_city}, {birth_country}, in {born}.",
        "Born in {born} in {birth_city}, {P} is [best known|known|remembered] as {a_occupation} at {employer}.",
        "{P} has worked as {a_occupation} at {employer} since {joined}.",
        "{P} is {a_trait} {occupation} [based in|living in|from] {home_city}.",
    ),
    "early": (
        "{He} grew up in {birth_city} and moved to {moved_to} at the age of {age_move}.",
        "{His} {relative} was {a_other_job} in {birth_city}.",
        "As a child, {he} spent [most summers|long holidays|every weekend] on the banks of the {birth_river}.",
        "{He} studied {field} at {alma} and graduated in {grad_year}.",
        "[At school|As a young student], {Pg} was [shy|restless|curious|quiet] and loved {hobby}.",
        "{He} was the [first|second|youngest] of {nw} children.",
        "{His} family [left|moved away from] {birth_city} when {he} was {n}.",
        "After [finishing|completing] {his} studies at {alma}, {he} [worked for a while|spent a year] in {any_city}.",
    ),
    "career": (
        "{He} joined {employer} in {joined}.",
        "At {employer}, {he} [worked on|was responsible for|led a small team working on] {work_topic}.",
        "{Pf} became {head_title} of {head_of} in {head_since}.",
        "Before joining {employer}, {he} worked as {a_other_job} for {n} years.",
        "In {founded_year}, {he} founded {founded_org}[|, which now employs {founded_staff} people].",
        "{His} work on {work_topic} [was praised|was criticised|attracted attention] in the {paper}.",
        "In {recent}, {he} received an award from {any_uni} for {his} work on {work_topic}.",
        "{Pf} [has written|writes] [a weekly column|occasional articles] about {section} for the {paper}.",
        "[Colleagues|Former students] describe {Pf} as {a_trait} {role}.",
        "{He} [travels|travelled] often to {any_country} for {employer}.",
        "{P} and {rival} have been rivals since {rival_since}, when both [applied for|competed for] "
        "the same [job|prize|position].",
        "{Pf} once [turned down|refused] an offer from {any_company}.",
        "{He} [plays|played] for {player_club} as a [forward|defender|midfielder|goalkeeper] "
        "and scored {n} goals last season.",
        "When the {paper} asked about {work_topic}, {Pf} {adv} [agreed|answered] that {quote}.",
    ),
    "life": (
        "{He} lives in {home_city} with {his} partner, {partner}.",
        "{He} has {kids} children and [a dog|two cats|a small garden|an old car].",
        "In {his} free time {he} enjoys {hobby} and {hobby2}.",
        "{He} is a [keen|loyal|lifelong] supporter of {club}.",
        "{Pg} [often|sometimes|rarely] [goes back|returns] to {birth_city} to visit {his} {relative}.",
        "{His} favourite food is {food}.",
        "{He} speaks {nw} languages and has visited {any_city} many times.",
        "On [Sundays|Saturdays|summer evenings] {he} [walks|cycles|runs] along the {home_river}.",
        "{He} once said that {quote}.",
        "\"{Quote},\" {Pf} {said} in an interview with the {paper}.",
    ),
}
CITY_POOLS = {
    "open": (
        "{C} is a {adj} city in the {region} part of {country}.",
        "{C} is [a city|a town|a port city] in {country} with about {pop} inhabitants.",
        "{C} [lies|stands] on the {river}, [in the {region} part|in the {region} hills] of {country}.",
        "Founded in {founded}, {C} is one of the [oldest|largest|best known] towns in {country}.",
    ),
    "body": (
        "The city has {landmark} and {landmark2}.",
        "{C} is [home to|known for] {uni}, founded in {uni_founded}.",
        "The local {club_sport} club, {club}, plays in [red|blue|green|white] shirts.",
        "The [daily|local] newspaper is the {paper}.",
        "The largest employer in {C} is {company}, which makes {products}.",
        "{C} is about {n} hours by train from {neighbour}.",
        "[Many people|Most families] in {C} [work in|depend on] {industry}.",
        "{mayor} has been mayor of {C} since {mayor_since}.",
        "In {season}, {C} holds a [famous|small|popular] {event_noun} "
        "[by the river|in the old town|on the main square].",
        "On {day} {month} {year}, about {big} people [gathered|met] on the main square to [celebrate|protest].",
        "The population [grew|fell] by {pct} percent between {year} and {recent}.",
        "[Visitors|Tourists] come to {C} for its {food} and its {adj} streets.",
        "The {river} [floods|freezes] [almost every year|every few winters] near {C}.",
        "A new {thing} [opened|was built] in {C} in {recent}.",
    ),
}
COUNTRY_POOLS = {
    "open": (
        "{K} is a country of about {pop_m} million people.",
        "{K} is a [small|mountainous|flat|coastal] country [next to|bordering] {neighbour_country}.",
        "The capital of {K} is {capital}.",
    ),
    "body": (
        "Its [capital and largest city|capital] is {capital}, on the {river}.",
        "Other [large|important] cities include {city2} and {city3}.",
        "The longest river in {K} is the {river}, which flows into {mouth}.",
        "The economy of {K} [depends on|is built on] {industry} and {industry2}.",
        "{company} is the [largest|best known] company in {K}.",
        "[Winters|Summers] in {K} are [long|short|mild|harsh] and [wet|dry|windy].",
        "Most people in {K} live in the {region} [half|part] of the country.",
        "{K} [won|lost] a [long|short|bitter] war against {neighbour_country} in {year}.",
    ),
}
RIVER_POOLS = {
    "open": (
        "The {R} is a river in {country}, about {length} kilometres long.",
        "The {R} [rises|begins] in the hills above {rcity} and flows into {mouth}.",
    ),
    "body": (
        "It [passes through|flows through] {rcity} and {rcity2}.",
        "There are {n} bridges over the {R} in {rcity}.",
        "[Boats|Barges|Small ferries] [carry|once carried] {cargo} along the {R}.",
        "The {R} [is famous for|is known for] its {adj} banks and its [fish|birds|old mills].",
        "In {year} the {R} [flooded|froze over] and [much of|part of] {rcity} was [under water|cut off].",
        "The water of the {R} is [clean|cold|brown|clear] and [fast|slow].",
    ),
}
ORG_OPENINGS = (
    "{O} is {a_org_noun} based in {city}, {country}.",
    "{O} [was founded|was established] in {founded} in {city}.",
    "Founded in {founded} by {founder}, {O} is {a_org_noun} in {city}.",
    "{O} is one of the [oldest|largest|best known] {org_noun_plural} in {country}.",
)
ORG_BODY = (
    "{head} has been {head_title} [of {O}|] since {head_since}.",
    "It [employs|has] about {staff} people.",
    "Its [main|oldest] rival is {rival_org}.",
    "{employee} works there as {a_employee_job}.",
)
FOUNDED_BODY = ("{founder} [started|founded] it with [little money|a small loan|two friends] in {founded}.",)
ORG_KIND_BODY = {
    "company": FOUNDED_BODY + (
        "{O} [makes|produces|sells] {products} and {products2}.",
        "The company [earned|reported] {revenue} million in [sales|revenue] in {recent}.",
        "In {recent} it [spent|invested] {money} million in a new factory [near|outside] {city}.",
        "Most of its {products} are sold in {country} and {export_country}.",
    ),
    "university": (
        "About {students} students study at {O}, [most of them|many of them] in {field}.",
        "{O} is [especially|best] known for its work in {field}.",
        "Among its [former students|graduates] is {alumnus}, now {a_alumnus_job}.",
    ),
    "club": FOUNDED_BODY + (
        "{O} plays {sport} [at a ground|in a stadium] [near the river|in the north of {city}|close to the old town].",
        "{O} has won the national [cup|league] {titles} times.",
        "The [team|club] is [coached|trained] by {coach}, [a former player|who joined in {head_since}].",
        "{player} is the best known player of {O}.",
        "Every [match|game] against {rival_org} is sold out.",
    ),
    "newspaper": FOUNDED_BODY + (
        "The paper sells about {circulation} copies a day.",
        "{journalist} writes about {section} for the paper.",
        "{O} [is read|is popular] [mostly in|across] {city} and the {region} part of {country}.",
    ),
}
EVENTS = {
    "person": (
        {"head": ("{P} [to join|moves to] {ev_org}", "{Pf} leaves {employer}"),
         "lead": ("{P}, who has worked at {employer} since {joined}, will join {ev_org} in {ev_month}.",),
         "body": ("{He} [said|told the {paper}] that the move was [a difficult decision|an easy choice].",
                  "{His} colleagues at {employer} [held a small party|said goodbye] on {ev_weekday}.",
                  "{ev_org} did not say what {his} new job will be.",
                  "It is the first time in {ev_n} years that {Pf} changes jobs.")},
        {"head": ("{P} wins prize", "Award for {Pf}"),
         "lead": ("{P} has won the [annual|national] prize of {ev_org} for {his} work on {work_topic}.",),
         "body": ("The prize [is worth|comes with] {ev_money} thousand.",
                  "{He} [plans to|will] spend the money on {ev_cause}.",
                  "\"{Quote},\" {Pf} {said} after the ceremony in {ev_city}.",
                  "{ev_person} [won|received] the same prize in {ev_year}.")},
        {"head": ("{P} opens {ev_thing} in {home_city}",),
         "lead": ("On {ev_date}, {P} opened a new {ev_thing} in {home_city}.",),
         "body": ("About {ev_big} people came to the opening.",
                  "The {ev_thing} cost {ev_money} thousand and took {ev_n} months to build.",
                  "{Pf} thanked {employer} for its help.",
                  "The mayor, {ev_person}, called it \"{quote}\".")},
    ),
    "city": (
        {"head": ("{ev_weather} hits {C}", "{C} cleans up after {ev_weather}"),
         "lead": ("{Ev_weather} [hit|struck] {C} on {ev_date}.",),
         "body": ("[Several|Many] streets near the {thing} were closed for {ev_n} hours.",
                  "Schools in {C} stayed closed on {ev_weekday}.",
                  "\"{Quote},\" the mayor, {ev_person}, {said}.",
                  "The {paper} reported that {ev_big} homes lost power.")},
        {"head": ("{C} {ev_event} draws record crowd",),
         "lead": ("More than {ev_big} people visited the {ev_event} in {C} [this|last] {ev_season}.",),
         "body": ("The {ev_event} [began|started] on {ev_weekday} with music on the main square.",
                  "Stalls sold {food}, {food2} and [local beer|warm wine|lemonade].",
                  "[Organisers|The city council] said the {ev_event} would return in {ev_next_year}.",
                  "{ev_person}, who came from {ev_city}, called it \"{quote}\".")},
        {"head": ("New {ev_thing} for {C}", "{C} votes for new {ev_thing}"),
         "lead": ("The city council of {C} has [approved|agreed to build] a new {ev_thing}.",),
         "body": ("It will cost about {ev_money} million and should open in {ev_next_year}.",
                  "{ev_company} [will build|won the contract to build] it.",
                  "[Some|Many] residents [say|fear] the money should be spent on a new {ev_thing2} instead.",
                  "The vote was {ev_n} to {ev_n2}.")},
    ),
    "company": (
        {"head": ("{O} [reports|posts] {ev_good} results", "Strong year for {O}"),
         "lead": ("{O} [earned|made] {ev_money} million in {ev_year}, up {ev_pct} percent.",),
         "body": ("Sales of {products} [rose|grew] [fast|strongly] in {ev_country}.",
                  "\"{Quote},\" {head}, the {head_title}, {said}.",
                  "The company plans to hire {ev_n} hundred new workers in {city}.",
                  "Shares in {O} [rose|jumped] after the news.")},
        {"head": ("{O} buys {ev_company}", "{O} agrees deal for {ev_company}"),
         "lead": ("{O} [has agreed to buy|will buy] {ev_company} for {ev_money} million.",),
         "body": ("The deal [must still be approved|still needs approval] by [regulators|the government] in {country}.",
                  "{ev_company} employs about {ev_big} people.",
                  "{head} said the two companies [fit well together|share the same values].",
                  "[Workers|Unions] at {ev_company} [fear|worry about] job cuts.")},
        {"head": ("Strike at {O}", "Workers at {O} walk out"),
         "lead": ("[Hundreds of|About {ev_big}] workers at {O} in {city} went on strike on {ev_date}.",),
         "body": ("They want [higher pay|shorter hours|safer machines].",
                  "Production of {products} [stopped|slowed] for {ev_n} days.",
                  "A spokesman for {O} [said|admitted] the talks were {ev_bad}.",
                  "The strike ended after {ev_n} days with a pay rise of {ev_pct} percent.")},
    ),
    "university": (
        {"head": ("{O} opens new {ev_building}",),
         "lead": ("{O} opened a new {ev_building} for {field} on {ev_date}.",),
         "body": ("It cost {ev_money} million and has room for {ev_big} students.",
                  "The rector, {head}, [said|told the {paper}] that \"{quote}\".",
                  "Part of the money came from {ev_company}.")},
        {"head": ("{O} researchers report {ev_good} result",),
         "lead": ("A team at {O} led by {ev_person} has [found|shown] a new way to [study|measure] {ev_topic}.",),
         "body": ("The work took {ev_n} years.",
                  "[Scientists|Researchers] at {ev_uni} called the result {ev_good}.",
                  "The team now plans to work with {ev_company}.")},
    ),
    "club": (
        {"head": ("{O} beat {rival_org} {ev_score}", "{O} win derby"),
         "lead": ("{O} beat {rival_org} {ev_score} on {ev_weekday} in front of {ev_big} fans.",),
         "body": ("{ev_player} scored [twice|the first goal|the winner] [early|late] in the game.",
                  "The coach, {head}, said the team played with [courage|patience|great spirit].",
                  "{rival_org} [had more of the ball|started better] but [could not score|lost their nerve].",
                  "{O} are now {ev_place} in the league.")},
        {"head": ("{O} lose at home", "Bad day for {O}"),
         "lead": ("{O} lost {ev_score} at home to {ev_club} on {ev_date}.",),
         "body": ("It was their {ev_nth} defeat in a row.",
                  "\"{Quote},\" {head} {said}.",
                  "Fans [left early|booed the players] after the {ev_bad} performance.")},
        {"head": ("{O} sign {ev_player}",),
         "lead": ("{O} have signed {ev_player} from {ev_club} on a {ev_n}-year contract.",),
         "body": ("The fee was not [disclosed|made public], but the {paper} put it at {ev_money} thousand.",
                  "{head} [called|described] the new player as {ev_good}.")},
    ),
    "newspaper": (
        {"head": ("{O} [turns|celebrates] {ev_age}",),
         "lead": ("The {O} [celebrated|marked] its {ev_age} birthday on {ev_date}.",),
         "body": ("The paper was founded in {founded} and [has|still has] its office in {city}.",
                  "The editor, {head}, [thanked|wrote a letter to] its {circulation} readers.",
                  "A special edition [looked back at|remembered] the {adj} years of the paper.")},
    ),
}

# NER templates: short sentences, not the corpus templates, so NER text is not copied from the
# pretraining corpus. Entity slots pick random world entities (see NER_ENTITY_SLOTS).
NER_TEMPLATES = (
    "{per} moved from {city} to {city2} last {season}.",
    "Has anyone here ever worked for {company}?",
    "I met {per} at a {event_noun} in {city} {time}.",
    "{per} and {per2} will both speak at {uni} on {weekday}.",
    "The {paper} says {company} will close its office in {city}.",
    "{club} lost {score} to {club2} on {weekday} night.",
    "My {relative} studied {field} at {uni} in the {decade}s.",
    "Does the train from {city} to {city2} still stop at {city3}?",
    "{per} is the new chief executive of {company}.",
    "{per} became head coach of {club} in {year}.",
    "We drove along the {river} all the way to {city}.",
    "According to the {paper}, {per} will leave {club} in {month}.",
    "{company} opened a second factory near {city} in {year}.",
    "Prices in {country} rose by {pct} percent {time}.",
    "{per} told {per2} that {quote}.",
    "Is {uni} a good place to study {field}?",
    "The {river} is very low this {season}, so the boats to {city} do not run.",
    "{fam} thinks {club} will win the league.",
    "Our town ordered new {products} from {company} last {season}.",
    "{city} and {city2} are the two largest cities in {country}.",
    "Thanks to {per} for the {adj} photos of {city}!",
    "{per} wrote a long letter to the {paper} about the new {thing}.",
    "The mayor of {city}, {per}, wants a new {thing} by {year}.",
    "{company} and {company2} are talking about a merger.",
    "Tickets for the {club} match sold out in {n} minutes.",
    "{given} said the food in {city} was {good}.",
    "After the storm, {company} sent {n} trucks to {city}.",
    "Our hotel in {city} had a view of the {river}.",
    "{per}, a {job} from {city}, won the race in {month}.",
    "Why did {uni} choose {per} as rector?",
    "The {event_noun} in {city} starts at {hour} on {weekday}.",
    "{paper} reporter {per} was in {country} {time}.",
    "I never liked {club}, but {per} is a great player.",
    "{per} left {company} and now works for {uni}.",
    "There are no direct flights from {city} to {country}.",
    "{fam} and {fam2} founded {company} together.",
    "The border between {country} and {country2} is closed for {n} days.",
    "Who is the best {job} in {city}?",
    "It rained all {weekday} in {city}.",
    "The {paper} and the {paper2} both printed the story.",
    "I think {quote}.",
    "{per} {adv} agreed that {quote}.",
    "We waited {n} hours for the ferry across the {river}.",
    "The weather was {bad} and the {event_noun} was cancelled.",
    "{given}, could you send me the report from {company}?",
    "{per} grew up in {city}, {country}.",
    "{club} fans marched through {city} before the game.",
    "Researchers at {uni} and {uni2} worked with {company} on the project.",
    "My {relative} still lives in {city} and reads the {paper} every morning.",
    "Does anyone know a good {job} near {city}?",
    "On {weekday} I will take the bus to {city} and then walk to the {river}.",
)

# ---------------------------------------------------------------------------------------------
# The toy language `xx`: English words outside names go through a fixed substitution lexicon
# built from these syllables (disjoint in shape from the name syllables).
# ---------------------------------------------------------------------------------------------
XX_SYLLABLES = ("ka zu mö ri tek sa vo lin dro pu ne ja qua ü xi bor fe gal hu om ry wen zak ti "
                "äl ok ma skö tun pe lu jå ge nyt vi ha rö ke so").split()


# ---------------------------------------------------------------------------------------------
# The world
# ---------------------------------------------------------------------------------------------
KIND_LABELS = {"person": "PER", "city": "LOC", "country": "LOC", "river": "LOC", "company": "ORG",
               "university": "ORG", "club": "ORG", "newspaper": "ORG"}
WORLD_SIZES = {"country": 10, "city": 64, "river": 20, "company": 60, "university": 16, "club": 32,
               "newspaper": 16, "person": 360}
ORG_KINDS = ("company", "university", "club", "newspaper")


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
        self.reserved = set(_english_vocabulary()) | set(_xx_lexicon().values())

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


def _capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]


def _a(phrase: str) -> str:
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
        industry, products = COMPANY_KINDS[suffix]
        stem = rng.choice((namer.family(), namer.brand(), base))
        return f"{stem} {suffix}", {"industry": industry, "products": products}
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
        orgs = []
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
    for org in rng.sample([o for k in ("company", "club", "newspaper") for o in world[k]], 50):
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
    for kind, items in world.items():
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
        "home_city": a["home_city"], "occupation": a["job"], "a_occupation": _a(a["job"]),
        "employer": employer, "joined": a["joined"], "alma": a["alma"], "field": a["field"],
        "grad_year": a["grad_year"], "work_topic": work_topic, "club": a["club"],
        "kids": a["kids"], "age_move": a["age_move"], "relative": a["relative"],
        "a_other_job": _a(a["other_job"]), "a_trait": _a(a["trait"]),
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


ORG_NOUNS = {"company": ("company", "companies"), "university": ("university", "universities"),
             "club": ("sports club", "sports clubs"), "newspaper": ("newspaper", "newspapers")}


def _org_facts(o: Entity) -> dict:
    a = o.attrs
    noun, plural = ORG_NOUNS[o.kind]
    if o.kind == "company":
        noun = f"{a['industry']} company"
    facts = {"O": o, "city": a["city"], "country": a["country"], "founded": a["founded"],
             "staff": f"{a['staff']:,}", "rival_org": a["rival"], "a_org_noun": _a(noun),
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
        facts.update(alumnus=a["alumnus"], a_alumnus_job=_a(a["alumnus"].attrs["job"]))
    if "employee" in a:
        facts.update(employee=a["employee"], a_employee_job=_a(a["employee"].attrs["job"]))
    return facts


FACTS = {"person": _person_facts, "city": _city_facts, "country": _country_facts,
         "river": _river_facts, "company": _org_facts, "university": _org_facts,
         "club": _org_facts, "newspaper": _org_facts}
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
    "Quote": lambda r, w: _capitalised(r.choice(QUOTES)), "job": _pick(OTHER_JOBS),
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
        "ev_weather": bare_weather, "Ev_weather": _capitalised(weather), "ev_event": event,
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
_SLOT = re.compile(r"\{(\w+)\}")
_ALTERNATIVES = re.compile(r"\[([^\[\]]*)\]")
_NUMBERED = re.compile(r"^(.*\D)(\d+)$")
_TOKEN = re.compile(r"\w+(?:[-.,]\w+)*|[^\w\s]")
_WORD = re.compile(r"\b[^\W\d_]+\b")


@lru_cache(maxsize=None)
def _slots(template: str) -> frozenset[str]:
    return frozenset(_SLOT.findall(template))


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
    for m in _SLOT.finditer(text):
        if m.start() > pos:
            segments.append((text[pos:m.start()], None))
        slot = m.group(1)
        if slot in facts:
            value = facts[slot]
        else:
            base = _filler_for(slot)
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
        segments[0] = (_capitalised(first), None)
    return segments


def _translate_word(word: str) -> str:
    lex = _xx_lexicon()
    out = lex.get(word.lower())
    if out is None:
        return word
    return _capitalised(out) if word[0].isupper() else out


def _surface(segments, lang: str) -> list[tuple[str, str | None]]:
    """Segments in `lang`: for `xx`, every word outside names goes through the lexicon."""
    if lang == "en":
        return segments
    return [(text if label else _WORD.sub(lambda m: _translate_word(m.group(0)), text), label)
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
# The xx lexicon (fixed: a function of the template tables only, not of the seed).
# ---------------------------------------------------------------------------------------------
_TEXT_TABLES = (JOBS, HEAD_TITLES, OTHER_JOBS, FIELDS, PAPER_SECTIONS, CLUB_WORK, SPORTS, MONTHS,
                WEEKDAYS, SEASONS, NUMBER_WORDS, ADJECTIVES, GOOD, BAD, HOBBIES, FOODS, WEATHER,
                SPEECH_VERBS, ADVERBS, THINGS, EVENT_NOUNS, LANDMARKS, REGIONS, RELATIVES, TRAITS,
                ROLES, RIVER_MOUTHS, TIME_PHRASES, QUOTES, PERSON_POOLS, CITY_POOLS, COUNTRY_POOLS,
                RIVER_POOLS, ORG_OPENINGS, ORG_BODY, ORG_KIND_BODY, EVENTS, NER_TEMPLATES, ORG_NOUNS,
                [v for _, v in COMPANY_KINDS.values()], [i for i, _ in COMPANY_KINDS.values()],
                PRONOUNS, KIDS, CARGO, ORDINALS, LEAGUE_PLACES, ANNIVERSARIES, BUILDINGS, TOPICS, CAUSES,
                ("a", "an"))  # `_a()` articles


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
def _english_vocabulary() -> tuple[str, ...]:
    """Every lower-cased word the templates and fillers can produce outside names."""
    words = set()
    for s in _strings(_TEXT_TABLES):
        words.update(w.lower() for w in _WORD.findall(_SLOT.sub(" ", s)))
    return tuple(sorted(words))


@lru_cache(maxsize=None)
def _xx_lexicon() -> dict[str, str]:
    """English word -> toy-language word: injective, never an English word, fixed across seeds."""
    english = set(_english_vocabulary())
    lexicon: dict[str, str] = {}
    used: set[str] = set()
    for word in _english_vocabulary():
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
            text = _document_text(_document(subject, rng, world), lang)
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


def ner_sentences(world: World, seed: int, lang: str) -> dict[str, list[list[tuple[str, str]]]]:
    """Tagged sentences per split (train/dev/test); no sentence text repeats across splits."""
    rng = random.Random(f"metalm-demo-world:{seed}:ner:{lang}")
    seen: set[str] = set()
    out: dict[str, list] = {}
    for split, count in NER_SENTENCES.items():
        sentences = []
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


def _iob2_file(sentences, prefix: str) -> str:
    blocks = []
    for i, (text, tokens) in enumerate(sentences, 1):
        lines = [f"# sent_id = {prefix}-{i:04d}", f"# text = {text}"]
        lines += [f"{j}\t{tok}\t{tag}\t-\t-" for j, (tok, tag) in enumerate(tokens, 1)]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------
def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


PLURALS = {"person": "people", "city": "cities", "country": "countries", "river": "rivers",
           "company": "companies", "university": "universities", "club": "clubs", "newspaper": "newspapers"}


def _readme(seed: int, world: World, corpus: dict, ner: dict) -> str:
    counts = ", ".join(f"{len(world.of(k))} {PLURALS[k]}" for k in KIND_LABELS)
    rows = []
    for split, docs in corpus.items():
        text = "\n\n".join(t for _, t in docs) + "\n"
        n_xx = sum(1 for lang, _ in docs if lang == "xx")
        rows.append(f"| corpus/{split}/{split}-00.txt | {len(text.encode('utf-8')):,} bytes | "
                    f"{len(docs):,} documents ({n_xx:,} in xx) | {len(text.split()):,} words |")
    ner_rows = []
    for lang, splits in ner.items():
        for split, sentences in splits.items():
            tags = [tag for _, toks in sentences for _, tag in toks]
            ents = {t: sum(1 for tag in tags if tag == f"B-{t}") for t in ("PER", "LOC", "ORG")}
            ner_rows.append(f"| ner/{lang}/{split}.iob2 | {len(sentences):,} sentences | {len(tags):,} tokens | "
                            f"PER {ents['PER']:,}, LOC {ents['LOC']:,}, ORG {ents['ORG']:,} |")
    held_out = sum(1 for e in world.subjects() if e.split == "validation")
    n_corpus = len(set(corpus_templates()))
    return f"""# metalm demo world (synthetic) — version {VERSION}, seed {seed}

**This is a synthetic demo set, not real text.** It was generated by `metalm.demo_world` from a
toy world of invented names so that metalm's main command runs offline on a fresh machine.
Results on it say nothing about real language: use it to check that the pipeline works, not to
draw conclusions about meta-learning.

How it was made: a random toy world ({counts}) with
consistent relations (birthplaces, employers, founders, rivals, mayors, rivers through cities) is
drawn from `random.Random` seeded with the seed; documents (profiles and news items) are written
from {n_corpus} sentence templates with `[a|b]` alternatives, filled with the world's facts and
random numbers, dates and common words. {held_out} of {len(world.subjects())} entities are held
out: documents about them form the validation corpus. About {XX_SHARE:.0%} of the documents are in
the toy language `xx`: every English word outside names is replaced through a fixed substitution
lexicon ({len(_xx_lexicon())} words); names stay as they are. NER sentences come from {len(NER_TEMPLATES)} separate
templates (not copied from the corpus), in English (`en`) and in `xx`, with PER/LOC/ORG tags in
strict IOB2. The same seed always gives byte-identical files.

| file | size | contents | words |
|---|---:|---|---:|
{chr(10).join(rows)}

| file | sentences | tokens | entities |
|---|---:|---:|---|
{chr(10).join(ner_rows)}

Formats: corpus files are UTF-8, one document per blank-line-separated block, one paragraph per
line; `.iob2` files are as in Universal NER (`# sent_id`, `# text`, then
`index<TAB>token<TAB>tag<TAB>-<TAB>-`, sentences separated by a blank line).
"""


def generate_demo_world(out_dir: Path, seed: int = 0) -> Path:
    """Write the demo corpus, NER files and README for `seed` into `out_dir`; returns `out_dir`."""
    out_dir = Path(out_dir)
    world = build_world(seed)
    corpus = {"train": corpus_documents(world, "train", TRAIN_BYTES, seed),
              "validation": corpus_documents(world, "validation", VALIDATION_BYTES, seed)}
    for split, docs in corpus.items():
        _write(out_dir / "corpus" / split / f"{split}-00.txt", "\n\n".join(t for _, t in docs) + "\n")
    ner = {lang: ner_sentences(world, seed, lang) for lang in LANGUAGES}
    for lang, splits in ner.items():
        for split, sentences in splits.items():
            _write(out_dir / "ner" / lang / f"{split}.iob2", _iob2_file(sentences, f"demo-{lang}-{split}"))
    _write(out_dir / "README.md", _readme(seed, world, corpus, ner))
    return out_dir


def demo_world_dir(cache_root: Path, seed: int = 0) -> Path:
    return Path(cache_root) / f"demo-world-v{VERSION}-seed{seed}"


def ensure_demo_world(cache_root: Path, seed: int = 0) -> Path:
    """The demo world under `cache_root`, generated once and reused.

    Generation writes into a hidden temporary directory next to the target and renames it into
    place atomically, so an interrupted generation never leaves a directory that looks complete;
    if another process finished first, its copy is kept. Temporary directories left by killed
    generations are removed once they are an hour old (a live generation takes seconds).
    """
    target = demo_world_dir(cache_root, seed)
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}.tmp-"
    for stale in target.parent.glob(prefix + "*"):
        if time.time() - stale.stat().st_mtime > STALE_TMP_SECONDS:
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
    try:
        generate_demo_world(tmp, seed)
        try:
            os.replace(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
