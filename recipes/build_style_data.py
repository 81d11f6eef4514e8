"""Build the benchmark's style-task data (fortunes quips vs Wikipedia prose) and check its evaluator.

Quips come from Debian's ``fortunes`` package (``apt-get install -y fortunes``; fortune-mod's data files,
BSD licence; ``/usr/share/games/fortunes/``), a source the ``mini`` checkpoint was never trained on (its
corpus is Wikipedia lead sections and Jane Austen); plain texts are word windows of the corpus's Wikipedia
documents, with lengths drawn from the quips' lengths so that length alone does not tell them apart. The
output, one JSON line per text (``text``, ``label`` fortune/plain, ``split``, ``source``), has four
disjoint splits (see :mod:`dglm.bench.style`): ``probe`` (the style probe and the peers' supervision,
plain texts from the corpus train split), ``evaluator`` and ``check`` (the independent proxy evaluator's
training and held-out texts, plain texts from the validation split) and ``fewshot`` (few-shot prompting).
Quips are assigned to splits by a hash of their text, so the split does not depend on the order of files.

Example:
    python recipes/build_style_data.py --corpus cache/corpus --out cache/style/fortunes.jsonl \
        --markdown results/style-data.md
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import shlex
import sys
from pathlib import Path

from dglm.bench.style import PLAIN, STYLE, fit_style_evaluator, read_style_data

FORTUNE_DIR = Path("/usr/share/games/fortunes")
# Files of prose quips and aphorisms (not verse, riddles, ASCII art, definitions, Q&A or dialogue-heavy files).
FILES = ("fortunes", "wisdom", "humorists", "people", "work", "love", "men-women", "education", "science",
         "computers", "food", "pets", "politics", "law", "medicine", "miscellaneous", "platitudes", "literature")
SIZES = {"probe": 300, "evaluator": 300, "check": 150, "fewshot": 12}
_CLEAN = re.compile(r"^[A-Za-z0-9 ,.;:!?'\"()\-]+$")


def read_quips(folder: Path, files=FILES, min_words: int = 6, max_words: int = 45) -> list[tuple[str, str]]:
    """``(text, file)`` of each clean prose quip: attribution lines (``-- Author``) dropped, lines joined,
    ``min_words``-``max_words`` words, plain ASCII punctuation, no Q:/A: dialogue or numbered lists."""
    out, seen = [], set()
    for name in files:
        path = folder / name
        if not path.is_file():
            continue
        for entry in path.read_text(encoding="latin-1").split("\n%\n"):
            lines = [ln for ln in entry.splitlines() if ln.strip() and not ln.strip().startswith("--")]
            if not lines or any(ln.startswith(("\t", "  ")) for ln in lines):
                continue  # indented: verse, code, dialogue layout, or an attribution we cannot separate
            text = " ".join(" ".join(lines).split())
            n = len(text.split())
            if not (min_words <= n <= max_words) or not _CLEAN.match(text) or re.match(r"^(Q:|A:|\(?\d)", text):
                continue
            if text.lower() not in seen:
                seen.add(text.lower())
                out.append((text, name))
    return out


def plain_windows(docs, lengths: list[int], seed: int) -> list[str]:
    """One window of Wikipedia prose per length, starting at a sentence start of a seeded document."""
    rng = random.Random(seed)
    out = []
    docs = [d for d in docs if d.source == "wikipedia"]
    for n in lengths:
        for _ in range(100):
            d = rng.choice(docs)
            starts = [0] + [m.end() for m in re.finditer(r"[.!?]\s+(?=[A-Z])", d.text)]
            words = d.text[rng.choice(starts):].split()[:n]
            if len(words) == n:
                out.append(" ".join(words))
                break
    return out


def split_of(text: str, fractions: dict[str, float]) -> str:
    """A split by a hash of the text (stable whatever the order of files)."""
    x = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 16 ** 8
    acc = 0.0
    for name, f in fractions.items():
        acc += f
        if x < acc:
            return name
    return next(reversed(fractions))


def build(corpus: str, folder: Path, seed: int = 0) -> tuple[list[dict], dict]:
    from dglm.data.corpus import load_split

    quips = read_quips(folder)
    if len(quips) < sum(SIZES.values()):
        raise SystemExit(f"only {len(quips)} quips under {folder}; install them with: apt-get install -y fortunes")
    total = sum(SIZES.values())
    by_split: dict[str, list[tuple[str, str]]] = {s: [] for s in SIZES}
    for text, name in quips:
        by_split[split_of(text, {s: n / total for s, n in SIZES.items()})].append((text, name))
    rows = []
    rng = random.Random(seed)
    for split, n in SIZES.items():
        chosen = rng.sample(by_split[split], min(n, len(by_split[split])))
        rows += [{"text": t, "label": STYLE, "split": split, "source": f"fortunes:{name}"} for t, name in chosen]
        if split == "fewshot":
            continue
        docs = load_split(corpus, "train" if split == "probe" else "validation")
        lengths = [len(t.split()) for t, _ in chosen]
        rows += [{"text": t, "label": PLAIN, "split": split, "source": f"corpus:{'train' if split == 'probe' else 'validation'}"}
                 for t in plain_windows(docs, lengths, seed + len(split))]
    counts = {s: {lab: sum(r["split"] == s and r["label"] == lab for r in rows) for lab in (STYLE, PLAIN)}
              for s in SIZES}
    return rows, {"quips_available": len(quips), "files": list(FILES), "counts": counts}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="cache/corpus", help="corpus folder (train and validation splits)")
    parser.add_argument("--fortunes", default=str(FORTUNE_DIR), help="folder of the fortune files")
    parser.add_argument("--out", default="cache/style/fortunes.jsonl", help="JSON-lines output")
    parser.add_argument("--markdown", default=None, help="also write provenance and evaluator accuracy here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rows, info = build(args.corpus, Path(args.fortunes), args.seed)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(out)
    data = read_style_data(out)
    clf = fit_style_evaluator(*data["evaluator"], validation=data["check"])
    command = shlex.join(["python", "recipes/build_style_data.py", *(sys.argv[1:] if argv is None else argv)])
    print(json.dumps({**info, "evaluator": clf.validation}, indent=1))
    if args.markdown:
        v = clf.validation
        md = [
            "# Style-task data: fortunes quips vs Wikipedia prose", "",
            f"Produced by `{command}`.", "",
            "- **Style texts**: quips from Debian's `fortunes` package (fortune-mod data files, BSD licence), "
            f"files {', '.join(FILES)}; {info['quips_available']} clean prose quips (6-45 words, attribution "
            "lines dropped, no verse/dialogue/lists). Never in the `mini` checkpoint's training corpus.",
            "- **Plain texts**: word windows of the corpus's Wikipedia lead sections, starting at a sentence, "
            "lengths matched to the quips' (probe split: corpus train split; evaluator and check splits: "
            "validation split).",
            "- **Splits** (by a hash of the text): "
            + "; ".join(f"{s}: {c[STYLE]} quips + {c[PLAIN]} plain" for s, c in info["counts"].items()) + ".",
            "- **Style probe**: fitted by the benchmark in one line, `Probe.fit(texts, labels, "
            "encoder=pipe.encoder, name='style')`, on the probe split; the peers (activation steering, FUDGE) "
            "use the same texts.",
            f"- **Evaluator (a proxy)**: TF-IDF character 2-5-grams + logistic regression on the evaluator "
            f"split ({v['train_texts']} texts), independent of the probe in features, model and texts. Held-out "
            f"(check split, {v['heldout_texts']} texts): accuracy {v['heldout_accuracy']:.3f}, fortune precision "
            f"{v['heldout_style_precision']:.3f}, recall {v['heldout_style_recall']:.3f}. It measures 'reads "
            "like the fortune file rather than Wikipedia', not wit or quality.", ""]
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text("\n".join(md), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
