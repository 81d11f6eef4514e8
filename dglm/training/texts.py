"""Read a user's training texts: a folder of ``.txt`` files, a JSON Lines file, a corpus folder
(``train.jsonl`` + ``validation.jsonl``, as :func:`dglm.data.corpus.build_corpus` writes) or a Hugging Face
``datasets`` dataset, split into training and held-out documents.

Example:
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     _ = Path(d, "a.txt").write_text("The river runs to the sea.")
    ...     _ = Path(d, "b.txt").write_text("The match was won late.")
    ...     train, held_out = read_documents(d, validation=d)
    >>> train == held_out, sorted(train)
    (True, ['The match was won late.', 'The river runs to the sea.'])
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from dglm.data.corpus import balance_sources, load_split, split_of

MAX_FILE_BYTES = 1 << 30  # one .txt or .jsonl file read at most (1 GiB)
MAX_PIECE_CHARS = 100_000  # documents are cut into pieces of at most this many characters before tokenizing


def _read(path: Path) -> str:
    with open(path, "rb") as f:
        raw = f.read(MAX_FILE_BYTES + 1)
    if len(raw) > MAX_FILE_BYTES:
        raise ValueError(f"{path} is larger than {MAX_FILE_BYTES:,} bytes (dglm.training.texts.MAX_FILE_BYTES); "
                         f"split it into several files")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text (byte {e.start}); accepted: UTF-8 .txt / .jsonl files") from None


def pieces(text: str, limit: int = MAX_PIECE_CHARS) -> list[str]:
    """``text`` cut at whitespace into pieces of at most ``limit`` characters (a piece without whitespace is
    cut anywhere), so one huge line never reaches the tokenizer whole (its memory grows with the text).

    Example:
        >>> pieces("one two three four", limit=9)
        ['one two', 'three', 'four']
        >>> pieces("x" * 10, limit=4)
        ['xxxx', 'xxxx', 'xx']
    """
    out = []
    while len(text) > limit:
        cut = text.rfind(" ", 0, limit + 1)
        cut = cut if cut > 0 else limit
        out.append(text[:cut])
        text = text[cut:].lstrip(" ")
    return out + ([text] if text else [])


def _records(source: str | os.PathLike, text_field: str, hf_split: str) -> list[tuple[str, str]]:
    """(document id, text) pairs of one source."""
    text = str(source)
    if text.startswith("hf:"):
        try:
            import datasets
        except ImportError:
            raise ImportError(f"data={text!r} needs the datasets package: pip install datasets") from None
        name = text[3:]
        data = datasets.load_from_disk(name) if Path(name).is_dir() else datasets.load_dataset(name, split=hf_split)
        if isinstance(data, datasets.DatasetDict):
            data = data[hf_split]
        if text_field not in data.column_names:
            raise ValueError(f"text_field={text_field!r} is not a column of {name}; columns: {data.column_names}")
        return [(f"{name}:{i}", t) for i, t in enumerate(data[text_field])]
    path = Path(source)
    if path.is_dir():
        files = sorted(f for f in path.rglob("*.txt") if f.is_file())  # (not a folder named x.txt, nor a FIFO)
        if not files:
            raise ValueError(f"data={text!r} is a folder without .txt files (or train.jsonl for a corpus folder)")
        return [(str(f.relative_to(path)), _read(f)) for f in files]
    if path.is_file() and path.suffix in (".jsonl", ".json"):
        out = []
        for n, line in enumerate(_read(path).splitlines()):
            if line.strip():
                try:
                    record = json.loads(line)
                except (json.JSONDecodeError, RecursionError) as e:
                    raise ValueError(f"line {n + 1} of {path} is not JSON ({str(e)[:100]}); accepted: one JSON "
                                     f"object per line") from None
                if not isinstance(record, dict):
                    raise ValueError(f"line {n + 1} of {path} is a JSON {type(record).__name__}; accepted: one "
                                     f"JSON object per line, the text under {text_field!r} (text_field)")
                if text_field not in record:
                    raise ValueError(f"line {n + 1} of {path} has no {text_field!r} field (text_field); keys: "
                                     f"{sorted(record)[:10]}")
                if not isinstance(record[text_field], str):
                    raise ValueError(f"line {n + 1} of {path}: {text_field!r} is a JSON "
                                     f"{type(record[text_field]).__name__}; accepted: a string")
                out.append((str(record.get("doc_id", record.get("id", f"{path.name}:{n}"))), record[text_field]))
        if not out:
            raise ValueError(f"data={text!r} holds no JSON record (an empty file)")
        return out
    raise ValueError(f"data={text!r} is not a folder of .txt files, a .jsonl file or hf:NAME (a datasets dataset)")


def read_documents(data: str | os.PathLike, validation: str | os.PathLike | None = None, text_field: str = "text",
                   hf_split: str = "train", validation_fraction: float = 0.05, seed: int = 0,
                   source_weights: dict[str, float] | None = None) -> tuple[list[str], list[str]]:
    """Training and held-out texts. Held out: ``validation`` if given, else a corpus folder's
    ``validation.jsonl``, else the documents whose id hashes into ``validation_fraction`` (stable when
    documents are added). ``source_weights`` (a corpus folder only) balances the training documents' sources
    (:func:`~dglm.data.corpus.balance_sources`: whole documents of over-represented sources left out); the
    held-out texts are never changed, so held-out numbers stay comparable.

    Example (a JSON Lines file; with no ``validation`` a stable half of the ids is held out):
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     lines = [json.dumps({"id": f"doc{i}", "text": f"text {i}"}) for i in range(6)]
        ...     _ = Path(d, "docs.jsonl").write_text("\\n".join(lines))
        ...     train, held_out = read_documents(Path(d, "docs.jsonl"), validation_fraction=0.5)
        >>> len(train) + len(held_out), sorted(train + held_out) == [f"text {i}" for i in range(6)]
        (6, True)
    """
    train, held_out = _documents(data, validation, text_field, hf_split, validation_fraction, seed, source_weights)
    if not train or not held_out:
        which = "training" if not train else "held-out"
        raise ValueError(f"data={str(data)!r} gives no {which} document (of {len(train) + len(held_out)}); "
                         + ("give more documents, raise --validation-fraction, or pass --validation" if train else
                            "give more documents, or lower --validation-fraction"))
    return [p for t in train for p in pieces(t)], [p for t in held_out for p in pieces(t)]


def _documents(data, validation, text_field, hf_split, validation_fraction, seed,
               source_weights) -> tuple[list[str], list[str]]:
    corpus = Path(data).is_dir() and (Path(data) / "train.jsonl").is_file()
    if source_weights and not corpus:
        raise ValueError(f"source_weights={source_weights} needs a corpus folder (train.jsonl with each document's "
                         f"source, recipes/build_corpus.py); data={str(data)!r} is not one")
    if corpus:
        docs = load_split(data, "train")
        train = [d.text for d in (balance_sources(docs, source_weights, seed) if source_weights else docs)]
    else:
        records = _records(data, text_field, hf_split)
        if validation is None:
            split = {doc_id: split_of(doc_id, seed, validation_fraction, 0.0) for doc_id, _ in records}
            return ([t for i, t in records if split[i] == "train"], [t for i, t in records if split[i] != "train"])
        train = [t for _, t in records]
    if validation is not None:
        return train, [t for _, t in _records(validation, text_field, hf_split)]
    return train, [d.text for d in load_split(data, "validation")]
