"""What the synthetic speakers say: numbers, a home-assistant grammar with its own German, French and Spanish
phrase tables, spoken arithmetic, general questions, broad English sentences from books, everyday sentences
from a grammar (everyday.py) and wide-vocabulary sentences for common words the others lack, each split into
train/dev/test by content so that dev and test sentences and numbers are never heard in training.

The split of an item is a hash of its text (`holdout_split`), independent of the generation seed, so a test
item stays a test item in every world.
"""

import dataclasses
import functools
import hashlib
import importlib.resources
import itertools

from num2words import num2words

from auralm.synth.everyday import all_everyday

NUMBER_RANGE = range(10_000)
LANGUAGES = ("en", "de", "fr", "es")
# Shares of items per split (percent); the rest is train.
DEV_PERCENT, TEST_PERCENT = 10, 10


def holdout_split(key: str) -> str:
    """The split that owns the item `key` ("train", "dev" or "test"), from a stable hash of the key."""
    bucket = int.from_bytes(hashlib.sha1(f"auralm-holdout:{key}".encode()).digest()[:4], "big") % 100
    if bucket < TEST_PERCENT:
        return "test"
    if bucket < TEST_PERCENT + DEV_PERCENT:
        return "dev"
    return "train"


def number_words(n: int, language: str = "en") -> str:
    """`n` as spoken words, e.g. 4207 -> "four thousand two hundred and seven" (num2words, commas removed)."""
    if language not in LANGUAGES:
        raise ValueError(f"unknown language {language!r}; expected one of {LANGUAGES}")
    return num2words(n, lang=language).replace(",", "")


@functools.cache
def numbers(split: str) -> tuple[int, ...]:
    """The numbers 0-9999 that belong to `split`."""
    return tuple(n for n in NUMBER_RANGE if holdout_split(f"number:{n}") == split)


def _sentence(text: str) -> str:
    """Capitalise the first letter and end with a period unless there is already a final mark."""
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".?!" else text + "."


@dataclasses.dataclass(frozen=True)
class Command:
    """One home-assistant request with its translations and the assistant's short reply."""

    en: str  # what the user says, English, written out (numbers in words)
    de: str  # German translation
    fr: str  # French translation
    es: str  # Spanish translation
    reply: str  # the assistant's brief answer in English

    def text(self, language: str) -> str:
        """The request in `language`."""
        return getattr(self, language)


# Phrase tables: each entry gives (en, de, fr, es).
ROOMS = (
    ("in the kitchen", "in der Küche", "dans la cuisine", "en la cocina"),
    ("in the living room", "im Wohnzimmer", "dans le salon", "en el salón"),
    ("in the bedroom", "im Schlafzimmer", "dans la chambre", "en el dormitorio"),
    ("in the bathroom", "im Badezimmer", "dans la salle de bain", "en el baño"),
    ("in the office", "im Büro", "dans le bureau", "en la oficina"),
    ("in the hallway", "im Flur", "dans le couloir", "en el pasillo"),
    ("in the garage", "in der Garage", "dans le garage", "en el garaje"),
)
DEVICES = (  # German in the accusative
    ("the lights", "das Licht", "la lumière", "la luz"),
    ("the fan", "den Ventilator", "le ventilateur", "el ventilador"),
    ("the heater", "die Heizung", "le chauffage", "la calefacción"),
    ("the radio", "das Radio", "la radio", "la radio"),
    ("the television", "den Fernseher", "la télévision", "la televisión"),
    ("the coffee machine", "die Kaffeemaschine", "la machine à café", "la cafetera"),
)
SWITCH = (  # (en, de, fr, es) templates; the reply verb
    (("turn on {d} {r}", "schalte {d} {r} ein", "allume {d} {r}", "enciende {d} {r}"), "Turning on"),
    (("turn off {d} {r}", "schalte {d} {r} aus", "éteins {d} {r}", "apaga {d} {r}"), "Turning off"),
)
CITIES = (
    ("Paris", "Paris", "Paris", "París"), ("London", "London", "Londres", "Londres"),
    ("Berlin", "Berlin", "Berlin", "Berlín"), ("Madrid", "Madrid", "Madrid", "Madrid"),
    ("Rome", "Rom", "Rome", "Roma"), ("Vienna", "Wien", "Vienne", "Viena"),
    ("Lisbon", "Lissabon", "Lisbonne", "Lisboa"), ("Prague", "Prag", "Prague", "Praga"),
    ("Munich", "München", "Munich", "Múnich"), ("Athens", "Athen", "Athènes", "Atenas"),
    ("Warsaw", "Warschau", "Varsovie", "Varsovia"), ("Brussels", "Brüssel", "Bruxelles", "Bruselas"),
    ("Geneva", "Genf", "Genève", "Ginebra"), ("Moscow", "Moskau", "Moscou", "Moscú"),
    ("Tokyo", "Tokio", "Tokyo", "Tokio"), ("Amsterdam", "Amsterdam", "Amsterdam", "Ámsterdam"),
    ("Dublin", "Dublin", "Dublin", "Dublín"), ("Oslo", "Oslo", "Oslo", "Oslo"),
    ("Boston", "Boston", "Boston", "Boston"), ("Chicago", "Chicago", "Chicago", "Chicago"),
    ("Toronto", "Toronto", "Toronto", "Toronto"), ("Sydney", "Sydney", "Sydney", "Sídney"),
)  # fmt: skip
MUSIC = (
    ("jazz", "Jazz", "du jazz", "jazz"),
    ("rock", "Rock", "du rock", "rock"),
    ("blues", "Blues", "du blues", "blues"),
    ("classical music", "klassische Musik", "de la musique classique", "música clásica"),
    ("pop music", "Popmusik", "de la musique pop", "música pop"),
    ("relaxing music", "entspannende Musik", "de la musique relaxante", "música relajante"),
)
GROCERIES = (
    ("milk", "Milch", "du lait", "leche"), ("eggs", "Eier", "des œufs", "huevos"),
    ("bread", "Brot", "du pain", "pan"), ("apples", "Äpfel", "des pommes", "manzanas"),
    ("coffee", "Kaffee", "du café", "café"), ("butter", "Butter", "du beurre", "mantequilla"),
    ("cheese", "Käse", "du fromage", "queso"), ("rice", "Reis", "du riz", "arroz"),
    ("tomatoes", "Tomaten", "des tomates", "tomates"), ("orange juice", "Orangensaft", "du jus d'orange", "zumo de naranja"),
)  # fmt: skip
FIXED = (  # requests without slots: (en, de, fr, es, reply)
    ("turn the volume up", "mach die Musik lauter", "monte le volume", "sube el volumen", "Turning the volume up."),
    ("turn the volume down", "mach die Musik leiser", "baisse le volume", "baja el volumen", "Turning the volume down."),
    ("stop the music", "stoppe die Musik", "arrête la musique", "para la música", "Stopping the music."),
    ("skip this song", "überspringe dieses Lied", "passe cette chanson", "salta esta canción", "Skipping to the next song."),
    ("lock the front door", "schließ die Haustür ab", "verrouille la porte d'entrée", "cierra la puerta principal con llave",
     "Locking the front door."),
    ("open the garage door", "öffne das Garagentor", "ouvre la porte du garage", "abre la puerta del garaje",
     "Opening the garage door."),
    ("close the garage door", "schließ das Garagentor", "ferme la porte du garage", "cierra la puerta del garaje",
     "Closing the garage door."),
)  # fmt: skip


def _command(en: str, de: str, fr: str, es: str, reply: str) -> Command:
    question = en.startswith(("what", "will"))
    end = "?" if question else "."
    spanish = f"¿{es[0].upper()}{es[1:]}?" if question else _sentence(es)
    return Command(_sentence(en + end), _sentence(de + end), _sentence(fr + end), spanish, reply)


@functools.cache
def all_commands() -> tuple[Command, ...]:
    """Every request the home-assistant grammar can produce, in a fixed order."""
    out = []
    for (templates, verb), (d_en, *d_tr), (r_en, *r_tr) in itertools.product(SWITCH, DEVICES, ROOMS):
        en, de, fr, es = (t.format(d=d, r=r) for t, d, r in zip(templates, [d_en, *d_tr], [r_en, *r_tr]))
        out.append(_command(en, de, fr, es, f"{verb} {d_en} {r_en}."))
    for r_en, r_de, r_fr, r_es in ROOMS:
        out.append(
            _command(
                f"dim the lights {r_en}",
                f"dimme das Licht {r_de}",
                f"baisse la lumière {r_fr}",
                f"baja la luz {r_es}",
                f"Dimming the lights {r_en}.",
            )
        )
        for verb, de_verb, fr_verb, es_verb in (
            ("open", "öffne", "ouvre", "abre"),
            ("close", "schließ", "ferme", "cierra"),
        ):
            out.append(
                _command(
                    f"{verb} the blinds {r_en}",
                    f"{de_verb} die Jalousien {r_de}",
                    f"{fr_verb} les stores {r_fr}",
                    f"{es_verb} las persianas {r_es}",
                    f"{verb.capitalize()}ing the blinds {r_en}.".replace("Closeing", "Closing"),
                )
            )
    for n in range(2, 61):
        w = {lang: number_words(n, lang) for lang in LANGUAGES}
        out.append(
            _command(
                f"set a timer for {w['en']} minutes",
                f"stelle einen Timer auf {w['de']} Minuten",
                f"règle un minuteur sur {w['fr']} minutes",
                f"pon un temporizador de {w['es']} minutos",
                f"Timer set for {w['en']} minutes.",
            )
        )
    for n in range(10, 95, 5):
        w = {lang: number_words(n, lang) for lang in LANGUAGES}
        out.append(
            _command(
                f"set a timer for {w['en']} seconds",
                f"stelle einen Timer auf {w['de']} Sekunden",
                f"règle un minuteur sur {w['fr']} secondes",
                f"pon un temporizador de {w['es']} segundos",
                f"Timer set for {w['en']} seconds.",
            )
        )
    for h in range(2, 13):
        w = {lang: number_words(h, lang) for lang in LANGUAGES}
        out.append(
            _command(
                f"wake me up at {w['en']} o'clock",
                f"weck mich um {w['de']} Uhr",
                f"réveille-moi à {w['fr']} heures",
                f"despiértame a las {w['es']}",
                f"Alarm set for {w['en']} o'clock.",
            )
        )
    for n in range(16, 29):
        w = {lang: number_words(n, lang) for lang in LANGUAGES}
        out.append(
            _command(
                f"set the temperature to {w['en']} degrees",
                f"stelle die Temperatur auf {w['de']} Grad",
                f"règle la température à {w['fr']} degrés",
                f"pon la temperatura a {w['es']} grados",
                f"Setting the temperature to {w['en']} degrees.",
            )
        )
    for c_en, c_de, c_fr, c_es in CITIES:
        out.append(
            _command(
                f"what is the weather like in {c_en}",
                f"wie ist das Wetter in {c_de}",
                f"quel temps fait-il à {c_fr}",
                f"qué tiempo hace en {c_es}",
                f"Here is the current weather for {c_en}.",
            )
        )
        out.append(
            _command(
                f"will it rain in {c_en} tomorrow",
                f"wird es morgen in {c_de} regnen",
                f"va-t-il pleuvoir demain à {c_fr}",
                f"va a llover mañana en {c_es}",
                f"Here is tomorrow's forecast for {c_en}.",
            )
        )
    for g_en, g_de, g_fr, g_es in MUSIC:
        out.append(
            _command(
                f"play some {g_en}",
                f"spiel etwas {g_de}",
                f"mets {g_fr}",
                f"pon algo de {g_es}",
                f"Playing some {g_en}.",
            )
        )
    for i_en, i_de, i_fr, i_es in GROCERIES:
        out.append(
            _command(
                f"add {i_en} to the shopping list",
                f"setz {i_de} auf die Einkaufsliste",
                f"ajoute {i_fr} à la liste de courses",
                f"añade {i_es} a la lista de la compra",
                f"I added {i_en} to your shopping list.",
            )
        )
    for en, de, fr, es, reply in FIXED:
        out.append(_command(en, de, fr, es, reply))
    return tuple(out)


@functools.cache
def commands(split: str) -> tuple[Command, ...]:
    """The home-assistant requests of `split` (held out by the English sentence)."""
    return tuple(c for c in all_commands() if holdout_split(f"command:{c.en}") == split)


OPERATORS = {"plus": lambda a, b: a + b, "minus": lambda a, b: a - b, "times": lambda a, b: a * b}
ARITHMETIC_TEMPLATES = (
    "What is {a} {op} {b}?",
    "How much is {a} {op} {b}?",
    "Can you tell me what {a} {op} {b} is?",
)


@functools.cache
def arithmetic(split: str) -> tuple[tuple[int, str, int], ...]:
    """(a, operator, b) problems of `split` with operands 0-20; minus only when the answer is not negative."""
    problems = [
        (a, op, b) for op in OPERATORS for a in range(21) for b in range(21) if not (op == "minus" and b > a)
    ]
    return tuple(p for p in problems if holdout_split(f"arithmetic:{p}") == split)


def arithmetic_answer(a: int, op: str, b: int) -> int:
    """The value of `a op b`."""
    return OPERATORS[op](a, b)


# Open questions for voice chat. Their answers are left to the language model (records carry answer=None).
GENERAL_QUESTIONS = (
    "Why is the sky blue?", "How do bees make honey?", "What is the tallest mountain in the world?",
    "Can you recommend a good book for a long train ride?", "What should I cook for dinner tonight?",
    "How far away is the moon?", "Why do cats purr?", "What is the difference between weather and climate?",
    "How do airplanes stay in the air?", "What is a good way to fall asleep faster?",
    "Tell me a fun fact about octopuses.", "How many continents are there?", "What causes thunder?",
    "Why do leaves change color in autumn?", "How do I make a cup of tea?", "What is the capital of Canada?",
    "Who painted the Mona Lisa?", "How long does it take to boil an egg?", "What is photosynthesis?",
    "Why is the ocean salty?", "How do I stay motivated when studying?", "What is the largest animal on earth?",
    "Can you tell me a short joke?", "How does a rainbow form?", "What is the speed of light?",
    "Why do we have seasons?", "How can I save energy at home?", "What is the boiling point of water?",
    "How many legs does a spider have?", "What language is spoken in Brazil?", "Why do birds migrate?",
    "What is the best way to learn a new language?", "How do vaccines work?", "What is a black hole?",
    "How do I water a cactus?", "What makes bread rise?", "Why do onions make you cry?",
    "How many days are there in a leap year?", "What is the longest river in the world?",
    "Give me a tip for a job interview.", "How do magnets work?", "Why do we dream?",
    "What is the smallest country in the world?", "How can I improve my handwriting?",
    "What is the difference between a virus and bacteria?", "How do I remove a coffee stain?",
    "What is the chemical symbol for gold?", "Why is exercise good for you?", "How are clouds formed?",
    "Suggest a name for a small grey kitten.", "What is the hottest planet in the solar system?",
    "How do I start running as a beginner?", "What does a bee do in winter?", "Why does ice float?",
    "How many strings does a guitar usually have?", "What is the main ingredient of guacamole?",
    "Explain what a volcano is.", "How do I keep basil fresh?", "What is the freezing point of water?",
    "Why do we yawn?", "What is an easy plant to keep indoors?", "How do I tie a tie?",
    "What is the fastest land animal?", "Why is the sun hot?", "How do submarines dive?",
    "What are some fun things to do on a rainy day?", "How many hours of sleep does an adult need?",
    "Who wrote Romeo and Juliet?", "What is the largest desert in the world?", "How do earthquakes happen?",
    "What is the capital of Australia?", "Why do stars twinkle?", "How do I make pancakes?",
    "What is the difference between a frog and a toad?", "How do solar panels work?",
    "Describe a giraffe in one sentence.", "What is the square root of sixty four?", "Why is grass green?",
    "How can I be more productive in the morning?", "What do pandas eat?", "How do trees drink water?",
    "What is the biggest ocean?", "Why do we need sleep?", "Recommend a board game for four players.",
    "How does a compass work?", "What is the capital of Japan?", "How do I clean a cast iron pan?",
    "What is a haiku?", "Why do dogs wag their tails?", "How is chocolate made?",
)  # fmt: skip


@functools.cache
def general_questions(split: str) -> tuple[str, ...]:
    """The open questions of `split`."""
    return tuple(q for q in GENERAL_QUESTIONS if holdout_split(f"question:{q}") == split)


def _shipped_lines(name: str) -> tuple[str, ...]:
    """The non-empty lines of the text file `data/{name}` shipped with the package (see data/SOURCES.md)."""
    text = importlib.resources.files("auralm.synth").joinpath(f"data/{name}").read_text("utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip())


@functools.cache
def all_sentences() -> tuple[str, ...]:
    """The broad English sentences shipped in data/sentences_en.txt."""
    return _shipped_lines("sentences_en.txt")


@functools.cache
def sentences(split: str) -> tuple[str, ...]:
    """The broad English sentences of `split`."""
    return tuple(s for s in all_sentences() if holdout_split(f"sentence:{s}") == split)


@functools.cache
def all_wide() -> tuple[str, ...]:
    """Sentences for common words the other pools lack, shipped in data/sentences_wide_en.txt."""
    return _shipped_lines("sentences_wide_en.txt")


@functools.cache
def wide(split: str) -> tuple[str, ...]:
    """The wide-vocabulary sentences of `split`."""
    return tuple(s for s in all_wide() if holdout_split(f"wide:{s}") == split)


@functools.cache
def everyday(split: str) -> tuple[str, ...]:
    """The everyday English sentences of `split` (everyday.py's grammar, 65,693 sentences in all)."""
    return tuple(s for s in all_everyday() if holdout_split(f"everyday:{s}") == split)


def words_of(text: str) -> list[str]:
    """The words of a sentence without surrounding punctuation, as a timestamp transcript lists them."""
    out = [w.strip(".,!?;:\"'¿¡") for w in text.split()]
    return [w for w in out if w]
