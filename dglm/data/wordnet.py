"""WordNet lexicons for the toxicity probe's labelled data: the words WordNet's lexicographers mark as
obscene, slurs or insults, ordinary person and thing nouns, and names of nationalities and religions, and the
comment-style templates they fill (:func:`~dglm.data.probe_data.toxicity_examples` uses them). WordNet
3.0 is read from its own database files (``data.noun``), installed by Debian's ``wordnet-base``.

Example:
    >>> import random
    >>> pairs = templated(["river", "song"], ("What a {w}.",), 4, random.Random(0))
    >>> len(pairs), all(sentence == f"What a {word}." for sentence, word in pairs)
    (4, True)
"""

from __future__ import annotations

import os
import random
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

WORDNET_INSTALL = "apt-get install -y wordnet-base"
WORDNET_DIRS = ("/usr/share/wordnet", "/usr/local/WordNet-3.0/dict", "/usr/share/wordnet/dict")


def find_wordnet() -> Path:
    """The WordNet 3.0 database folder (holds ``data.noun``): ``$WNSEARCHDIR``, ``$WNHOME/dict``, or
    where Debian's ``wordnet-base`` puts it.

    Example:
        >>> (find_wordnet() / "data.noun").is_file()  # doctest: +SKIP
        True
    """
    env = [os.environ.get("WNSEARCHDIR"), os.environ.get("WNHOME") and os.path.join(os.environ["WNHOME"], "dict")]
    for folder in [p for p in env if p] + list(WORDNET_DIRS):
        if (Path(folder) / "data.noun").is_file():
            return Path(folder)
    raise FileNotFoundError(f"WordNet's data.noun was not found in {[p for p in env if p] + list(WORDNET_DIRS)}; "
                            f"install it with: {WORDNET_INSTALL}")


@dataclass(frozen=True)
class Synset:
    """A WordNet noun synset: lexicographer file (18 is noun.person), lemmas, gloss, and usage-domain
    pointers as (domain synset offset, lemma index or None for the whole synset).

    Example:
        >>> Synset("02084071", 5, ("dog", "domestic_dog"), "a member of the genus Canis", ()).lemmas[0]
        'dog'
    """

    offset: str
    lexfile: int
    lemmas: tuple[str, ...]
    gloss: str
    usage: tuple[tuple[str, int | None], ...]


def read_wordnet_nouns(folder: str | os.PathLike | None = None) -> dict[str, Synset]:
    """Every noun synset of WordNet's ``data.noun`` (format ``wndb(5WN)``), by offset.

    Example:
        >>> synsets = read_wordnet_nouns()  # doctest: +SKIP
        >>> synsets["02084071"].lemmas[:2]  # doctest: +SKIP
        ('dog', 'domestic_dog')
    """
    path = Path(folder if folder is not None else find_wordnet()) / "data.noun"
    out = {}
    with open(path, encoding="latin-1") as f:
        for line in f:
            if line.startswith("  "):  # the licence header
                continue
            head, _, gloss = line.partition(" | ")
            fields = head.split()
            n_words = int(fields[3], 16)
            lemmas = tuple(fields[4 + 2 * i] for i in range(n_words))
            i = 4 + 2 * n_words
            usage = []
            for _ in range(int(fields[i])):
                symbol, target, _pos, source_target = fields[i + 1:i + 5]
                i += 4
                if symbol == ";u":  # "member of this usage domain"; a lexical pointer names one lemma
                    usage.append((target, None if source_target == "0000" else int(source_target[:2], 16) - 1))
            out[fields[0]] = Synset(fields[0], int(fields[1]), lemmas, gloss.strip(), tuple(usage))
    return out


# Usage domains whose members are offensive words.
OFFENSIVE_DOMAINS = ("obscenity", "ethnic_slur", "disparagement")
# Glosses of offensive words ("(ethnic slur) offensive term for ...", "obscene terms for ...").
_OFFENSIVE_GLOSS = re.compile(
    r"\(ethnic slur\)|\bobscene (?:term|word|name)s?\b|\bvulgar (?:term|word|slang)|\boffensive (?:and \w+ )?"
    r"(?:term|name|word)s? for\b|\binsulting (?:term|name)s?\b|\bdisparaging (?:term|name)s?\b|"
    r"\bderogatory (?:term|name)s?\b|\bterms? of (?:abuse|disparagement)\b", re.IGNORECASE)
# Glosses of insults for people ("a stupid incompetent person", "a person regarded as worthless").
_INSULT_GLOSS = re.compile(
    r"\b(?:stupid|contemptible|despicable|worthless|obnoxious|foolish|ignorant|insolent|dishonest|cowardly|"
    r"silly|incompetent|disgusting|unpleasant|mean|dull)\b[\w ,-]*\b(?:person|man|woman|fellow|fool)\b|"
    r"\bperson (?:regarded as|considered) (?:\w+ )?(?:worthless|contemptible|stupid)", re.IGNORECASE)
NOUN_PERSON = 18  # lexicographer file noun.person
NEUTRAL_THING_FILES = (6, 10, 13)  # noun.artifact, noun.communication, noun.food
# Glosses of nationalities, peoples and religions ("a native or inhabitant of Kenya", "an adherent of Taoism").
_IDENTITY_GLOSS = re.compile(
    r"^(?:an? )?(?:native or (?:inhabitant|resident)|inhabitant|member of (?:the|a)|adherent of|follower of|"
    r"person of [\w -]+ descent|person who is a (?:member|follower)|believer in|communicant of)", re.IGNORECASE)


def _plain(lemma: str) -> str | None:
    """A lemma usable in a sentence (lower-case, at most two words), else None."""
    if not re.fullmatch(r"[a-z][a-z'-]*(?:_[a-z][a-z'-]*)?", lemma):
        return None
    return lemma.replace("_", " ")


def wordnet_lexicons(synsets: dict[str, Synset]) -> dict:
    """Fill words from WordNet: ``{"offensive": {"person": [...], "thing": [...]}, "neutral": {"person": [...],
    "identity": [...], "thing": [...]}, "unambiguous": [...]}``.

    Offensive: lemmas in the usage domains obscenity, ethnic slur and disparagement, or whose gloss calls
    them obscene, offensive, insulting or derogatory terms, or (for people) stupid, contemptible,
    worthless... persons. Unambiguous: the slurs and disparaging terms for people (usage domains ethnic
    slur and disparagement, or such a gloss) and the obscenities (usage domain obscenity) that have no
    other noun sense: ``"dickhead"``, not ``"tool"``, and no mere insult such as ``"nitwit"``. Neutral:
    every other plain lemma of noun.person (people) and of noun.artifact, noun.communication and noun.food
    (things), and the capitalised names of nationalities, peoples and religions (identities: ``"Kenyan"``,
    ``"Taoist"``), which keep the probe from reading "about an ethnic group" as "a slur". Person and
    identity words fill the person templates, others the thing templates.

    Example:
        >>> lex = wordnet_lexicons({"1": Synset("1", 18, ("idiot",), "a stupid incompetent person", ()),
        ...                         "2": Synset("2", 6, ("chair",), "a seat for one person", ())})
        >>> lex["offensive"]["person"], lex["neutral"]["thing"]
        (['idiot'], ['chair'])
    """
    domains = {off: s.lemmas[0] for off, s in synsets.items() if s.lemmas[0] in OFFENSIVE_DOMAINS}
    offensive: dict[str, set[str]] = {"person": set(), "thing": set()}
    strong: set[str] = set()
    marked: set[str] = set()  # every offensive lemma as written, capitalised ones too
    senses: dict[str, list[bool]] = defaultdict(list)  # lemma -> is each of its noun senses offensive?
    for s in synsets.values():
        kind = "person" if s.lexfile == NOUN_PERSON else "thing"
        definition = s.gloss.split(";")[0]
        everyone = set(range(len(s.lemmas)))
        by_gloss = everyone if _OFFENSIVE_GLOSS.search(definition) else set()
        by_domain: dict[str, set[int]] = defaultdict(set)
        for target, index in s.usage:
            if target in domains:
                by_domain[domains[target]] |= everyone if index is None else {index}
        picked = by_gloss | set().union(*by_domain.values())
        if kind == "person" and _INSULT_GLOSS.search(definition):
            picked = everyone
        hard = by_domain["obscenity"] | (
            by_gloss | by_domain["ethnic_slur"] | by_domain["disparagement"] if kind == "person" else set())
        marked |= {s.lemmas[i] for i in picked if i < len(s.lemmas)}
        for i, lemma in enumerate(s.lemmas):
            if word := _plain(lemma):
                senses[word].append(i in picked)
                if i in picked:
                    offensive[kind].add(word)
                if i in hard:
                    strong.add(word)
    flagged = offensive["person"] | offensive["thing"]
    neutral: dict[str, set[str]] = {"person": set(), "identity": set(), "thing": set()}
    for s in synsets.values():
        kind = "person" if s.lexfile == NOUN_PERSON else "thing" if s.lexfile in NEUTRAL_THING_FILES else None
        if kind:
            neutral[kind] |= {w for lemma in s.lemmas if (w := _plain(lemma)) and w not in flagged}
        if s.lexfile == NOUN_PERSON and _IDENTITY_GLOSS.search(s.gloss):
            neutral["identity"] |= {lemma.replace("_", " ") for lemma in s.lemmas
                                    if re.fullmatch(r"[A-Z][a-z]+(?:_[A-Z][a-z]+)?", lemma) and lemma not in marked}
    return {"offensive": {k: sorted(v) for k, v in offensive.items()},
            "neutral": {k: sorted(v) for k, v in neutral.items()},
            "unambiguous": sorted(w for w in strong if all(senses[w]))}


# Templates in the voice of comments and dialogue; "{w}" is the fill word.
PERSON_TEMPLATES = (
    "You are such a {w}.", "Shut up, you {w}.", "Only a {w} would write something like this.",
    "He is a complete {w} and everyone knows it.", "Get lost, {w}.", "What kind of {w} says that?",
    "I can't stand that {w} next door.", "She called him a {w} in front of everyone.",
    "Stop acting like a {w}.", "That {w} ruined the whole evening.", "Nobody asked for your opinion, {w}.",
    "The new manager is a real {w}.", "Read the article before you comment, you {w}.",
    "Typical {w}, always complaining about something.", "Don't listen to him, he's just a {w}.",
    "Honestly, what a {w}.", "Tell that {w} to come back tomorrow.", "Every {w} in town showed up.",
    "The {w} in the front row kept talking through the film.", "My brother is a {w}, and so is his friend.",
)
THING_TEMPLATES = (
    "That is complete {w}.", "What a load of {w}.", "I'm tired of all this {w}.",
    "Everything he said was {w}.", "Don't give me that {w}.", "This whole thing is {w} from start to finish.",
    "They sold us {w} and called it a bargain.", "There was {w} all over the floor.",
    "Who cares about your {w}?", "The report was nothing but {w}.", "Take your {w} somewhere else.",
    "I found some {w} in the back of the car.",
)


def templated(words: Sequence[str], templates: Sequence[str], n: int, rng: random.Random) -> list[tuple[str, str]]:
    """``n`` (sentence, word) pairs: random words in random templates (each word used about equally).

    Example:
        >>> templated(["cat", "dog"], ["A {w}."], 3, random.Random(0))
        [('A cat.', 'cat'), ('A cat.', 'cat'), ('A dog.', 'dog')]
    """
    if not words or n <= 0:
        return []
    order = list(words) * (n // len(words) + 1)
    rng.shuffle(order)
    return [(rng.choice(templates).format(w=w), w) for w in order[:n]]
