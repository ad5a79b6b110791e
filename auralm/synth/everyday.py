"""Everyday English sentences from a small grammar: people doing things somewhere at some time, requests,
questions, plans, appointments, weather and quantities, in today's vocabulary.

The book sentences of data/sentences_en.txt are 19th-century prose and a 1992 workshop report; this grammar adds
the words of ordinary modern speech in many combinations. Each family is a template over slot tables; the
sentence at index i of a family picks every slot by a hash of (family, i, slot), so the pool is the same on every
machine and Python version, and no random generator is involved. Duplicates are dropped. Numbers are written in
words and there are no acronyms, so every voice engine reads the text the same way.

The tables are written by the auralm authors (Apache-2.0, like the rest of auralm).
"""

import functools
import hashlib
import itertools

# ---- slot tables ---------------------------------------------------------------------------------------------
PEOPLE = (
    "my sister", "my brother", "our neighbour", "the teacher", "a young doctor", "the old farmer", "my best friend",
    "her cousin", "his grandmother", "the new manager", "our taxi driver", "the little boy", "a tired student",
    "the baker", "the mayor", "my uncle", "their daughter", "the nurse", "a police officer", "the postman",
    "my aunt", "the pilot", "our landlord", "the librarian", "a famous singer", "the shop assistant", "my father",
    "my mother", "the gardener", "a small child", "the head chef", "our coach", "the museum guide", "my roommate",
    "the bus driver", "a quiet engineer", "the young painter", "my grandfather", "the hotel owner", "our dentist",
)  # fmt: skip
DEEDS = (
    "bought a loaf of fresh bread", "painted the garden fence", "fixed the broken bicycle", "read a long letter",
    "found an old photograph", "cooked a big pot of soup", "carried two heavy boxes", "washed the muddy boots",
    "planted three apple trees", "sold the blue car", "lost the house keys", "wrote a short poem",
    "baked a chocolate cake", "cleaned the kitchen window", "called the insurance company", "repaired the old radio",
    "ordered a large pizza", "borrowed a ladder", "paid the electricity bill", "fed the hungry ducks",
    "took a lot of pictures", "missed the last train", "forgot the shopping list", "won a prize in the raffle",
    "drew a map of the village", "opened a new bank account", "packed a small suitcase", "returned the library books",
    "changed a flat tyre", "tried the new coffee", "met an old school friend", "watched a funny film",
    "painted the bedroom walls yellow", "sent a parcel to the coast", "booked a table for four",
    "picked a basket of strawberries", "tidied the messy garage", "ran five miles", "learned a new song",
    "caught a small fish", "swept the front steps", "built a wooden shelf", "sang a song for the children",
    "lit a fire in the stove", "sewed a button on the coat", "ironed a pile of shirts", "hung the washing out",
    "made a cup of strong tea", "walked the neighbour's dog", "counted the empty bottles",
)  # fmt: skip
PLACES = (
    "at the market", "in the park", "near the station", "behind the library", "at the corner shop",
    "on the bridge", "in the back garden", "at the airport", "by the river", "in the village hall",
    "at the swimming pool", "in the city centre", "on the beach", "at the farm", "in the waiting room",
    "outside the cinema", "at the bus stop", "in the kitchen", "on the top floor", "at the petrol station",
    "in the school yard", "near the old church", "at the football ground", "in the forest", "on the train",
)  # fmt: skip
TIMES = (
    "on Monday morning", "last night", "after lunch", "before the storm", "early this morning",
    "yesterday afternoon", "two weeks ago", "on Friday evening", "just before midnight", "at the weekend",
    "last summer", "during the holidays", "on a rainy Tuesday", "at sunrise", "after work", "in the spring",
    "on Sunday", "around noon", "last winter", "the day before yesterday",
)  # fmt: skip
TASKS = (
    "water the plants", "feed the cat", "lock the back door", "call the plumber", "buy some milk",
    "take out the rubbish", "charge my phone", "check the train times", "post this letter", "book a taxi",
    "pick up the children", "turn off the oven", "send me the address", "bring an umbrella", "clean the windows",
    "fill up the car", "collect my glasses", "print the tickets", "warm up the soup", "walk the dog",
    "close the curtains", "pay the gas bill", "return the drill", "wash the dishes", "set the table",
)  # fmt: skip
MOMENTS = (
    "before we leave", "this evening", "when you get home", "after the meeting", "first thing tomorrow",
    "before dinner", "on your way back", "while I am away", "before it gets dark", "by the end of the day",
    "later today", "when the rain stops", "before the guests arrive", "as soon as possible", "tonight",
)  # fmt: skip
THINGS = (
    "umbrella", "camera", "blue notebook", "spare key", "winter coat", "red scarf", "phone charger",
    "shopping bag", "old guitar", "reading glasses", "garden hose", "picnic basket", "laptop", "wallet",
    "train ticket", "bicycle pump", "green jacket", "photo album", "flashlight", "cookbook", "tennis racket",
    "birthday card", "kitchen scissors", "wooden box", "map of the city",
)  # fmt: skip
SPOTS = (
    "on the shelf", "under the bed", "in the car", "by the front door", "in the top drawer", "on the sofa",
    "in the cupboard", "behind the curtain", "on the kitchen table", "in the garage", "next to the sink",
    "in my bag", "at the office", "in the hallway", "on the windowsill",
)  # fmt: skip
ACTIVITIES = (
    "go for a long walk", "visit the museum", "have a picnic by the lake", "play tennis", "go fishing",
    "ride our bikes to the coast", "watch the football match", "paint the shed", "bake some bread",
    "go to the cinema", "clean out the attic", "visit grandmother", "go swimming", "climb the hill",
    "have dinner in town", "go camping", "work in the garden", "drive to the mountains", "see the fireworks",
    "take the boat out",
)  # fmt: skip
FUTURES = (
    "tomorrow", "on Saturday", "next week", "this afternoon", "at the weekend", "on Thursday", "next month",
    "after school", "in the morning", "on Sunday afternoon",
)  # fmt: skip
CONDITIONS = (
    "stays dry", "is warm enough", "clears up", "is not too windy", "is nice", "stays sunny", "gets better",
)  # fmt: skip
PROFESSIONS = (
    "doctor", "dentist", "hairdresser", "bank manager", "lawyer", "optician", "vet", "plumber", "physiotherapist",
    "accountant", "electrician", "school nurse",
)  # fmt: skip
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
CLOCK = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve")
# Times of an appointment: the hours that go with each part of the day, and every hour with "o'clock".
HOURS = (
    *(f"{h} in the morning" for h in CLOCK[6:11]),
    *(f"{h} in the afternoon" for h in CLOCK[:5]),
    *(f"{h} in the evening" for h in CLOCK[5:9]),
    *(f"{h} o'clock" for h in CLOCK),
    *(f"half past {h}" for h in CLOCK),
    *(f"quarter past {h}" for h in CLOCK),
)
WEATHER = (
    "sunny", "cloudy", "cold", "warm", "windy", "wet", "foggy", "bright", "cool", "mild", "grey", "stormy",
)  # fmt: skip
REGIONS = ("north", "south", "east", "west", "hills", "valleys", "coastal towns", "city", "islands", "mountains")  # fmt: skip
SKIES = (
    "heavy showers", "light rain", "strong winds", "a little snow", "thunderstorms", "sunny spells",
    "patchy fog", "clear skies", "scattered clouds", "a chance of hail",
)  # fmt: skip
PARTS_OF_DAY = ("morning", "afternoon", "evening", "night")
COUNTS = ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "twelve", "fifteen", "twenty")  # fmt: skip
SUPPLIES = (
    "chairs", "plates", "candles", "glasses", "sandwiches", "balloons", "blankets", "cups", "towels", "napkins",
    "pencils", "apples", "forks", "tickets", "envelopes",
)  # fmt: skip
EVENTS = (
    "party", "picnic", "meeting", "wedding", "school trip", "concert", "birthday lunch", "bake sale",
    "football match", "family dinner", "book club", "garden party",
)  # fmt: skip
ADJECTIVES = (
    "big", "small", "old", "young", "brown", "white", "black", "grey", "little", "lazy", "hungry", "shy",
)  # fmt: skip
ANIMALS = (
    "dog", "cat", "horse", "fox", "rabbit", "duck", "owl", "goat", "squirrel", "hedgehog", "sheep", "robin",
    "donkey", "swan", "pony",
)  # fmt: skip
MOVES = (
    "slept", "ran", "waited", "played", "sat", "hid", "rested", "wandered", "jumped", "stood", "walked",
)  # fmt: skip
FEELINGS = ("happy", "surprised", "worried", "pleased", "tired", "excited", "nervous", "proud", "relieved")
NEWS = (
    "the train was late again", "the bakery has closed", "the bridge is open", "the concert was sold out",
    "the shop had run out of bread", "the road was flooded", "the test was easy", "the cake was ready",
    "the library opens on Sundays now", "the match was cancelled", "the parcel had arrived", "the lake was frozen",
    "the new park is finished", "the tickets were free", "the bus was full",
)  # fmt: skip

# ---- families: (name, template, slot tables, how many sentences; None: every combination) ---------------------
FAMILIES = (
    ("deed", "{0} {1} {2} {3}.", (PEOPLE, DEEDS, PLACES, TIMES), 16_000),
    ("request", "could you please {0} {1}?", (TASKS, MOMENTS), None),
    ("reminder", "please remember to {0} {1}.", (TASKS, MOMENTS), None),
    ("ask", "did {0} remember to {1} {2}?", (PEOPLE, TASKS, MOMENTS), 6_000),
    ("where", "have you seen the {0} I left {1}?", (THINGS, SPOTS), None),
    ("found", "{0} found the {1} {2} {3}.", (PEOPLE, THINGS, SPOTS, TIMES), 6_000),
    ("plan", "{0} wants to {1} {2} if the weather {3}.", (PEOPLE, ACTIVITIES, FUTURES, CONDITIONS), 8_000),
    ("visit", "your appointment with the {0} is on {1} at {2}.", (PROFESSIONS, DAYS, HOURS), None),
    ("weather", "tomorrow will be {0} in the {1} with {2} in the {3}.", (WEATHER, REGIONS, SKIES, PARTS_OF_DAY), None),
    ("count", "{0} needs {1} more {2} for the {3} {4}.", (PEOPLE, COUNTS, SUPPLIES, EVENTS, FUTURES), 8_000),
    ("animal", "the {0} {1} {2} {3} {4}.", (ADJECTIVES, ANIMALS, MOVES, PLACES, TIMES), 8_000),
    ("news", "{0} was {1} to hear that {2}.", (PEOPLE, FEELINGS, NEWS), None),
)  # fmt: skip


def _pick(family: str, index: int, slot: int, size: int) -> int:
    """A stable index into a slot table of `size` entries for sentence `index` of `family`."""
    digest = hashlib.sha1(f"auralm-everyday:{family}:{index}:{slot}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % size


def _sentence(text: str) -> str:
    return text[0].upper() + text[1:]


@functools.cache
def all_everyday() -> tuple[str, ...]:
    """Every sentence of the grammar, in a fixed order, without duplicates."""
    out: dict[str, None] = {}
    for family, template, tables, count in FAMILIES:
        if count is None:
            combinations = itertools.product(*tables)
        else:
            combinations = (
                [table[_pick(family, i, k, len(table))] for k, table in enumerate(tables)]
                for i in range(count)
            )
        for slots in combinations:
            out.setdefault(_sentence(template.format(*slots)), None)
    return tuple(out)
