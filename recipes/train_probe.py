"""Train one probe on your own labelled texts: a local CSV / JSONL file or a Hugging Face `datasets` dataset.

The probe is a logistic regression on the encoder's raw embeddings (``dglm.Probe.fit``). A random,
class-stratified 10% (``--held-out``) is kept out of training and the probe's accuracy on it is printed and
stored in the probe's provenance; the saved probe is the one trained on the other 90%. The probe is saved
to ``--out`` and/or added to the probe registry in ``--registry`` (created if missing), e.g. the folder a
pipeline checkpoint ships as ``probes/``. The built-in constraints expect ``sentiment`` with labels
("negative", "positive"), ``toxicity`` with ("non-toxic", "toxic"), and ``topic`` with topic names
(``topic('sports')``); ``--label-names`` names integer labels.

Examples (the Hugging Face ones need ``pip install datasets`` and the network)::

    # SST-2: labels 0/1 are named ("negative", "positive") by the dataset itself
    python recipes/train_probe.py --hf-dataset stanfordnlp/sst2 --text-column sentence --name sentiment \\
        --registry cache/mini/probes
    # AG News topics
    python recipes/train_probe.py --hf-dataset fancyzhx/ag_news --label-names world,sports,business,sci_tech \\
        --name topic --max-examples 20000 --out cache/probes/ag_news
    # Jigsaw toxic comments (Kaggle's train.csv, downloaded by hand)
    python recipes/train_probe.py --data train.csv --text-column comment_text --label-column toxic \\
        --label-names non-toxic,toxic --name toxicity --registry cache/mini/probes
    # any local file with a text and a label column
    python recipes/train_probe.py --data reviews.jsonl --name stars --out cache/probes/stars

Encoding runs at roughly 50-100 short texts/s on one CPU core with MiniLM: use ``--max-examples`` (a random
sample) or ``--device cuda`` for large datasets.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import random
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

from dglm.constraints import Probe, ProbeRegistry
from dglm.constraints.builtin import BINARY_BUILTINS
from dglm.data.probe_data import held_out_metrics

logger = logging.getLogger("train_probe")

DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
DATASETS_INSTALL = "pip install datasets"


# ---------------------------------------------------------------------------------------------- reading


def read_file(path: str | Path, text_column: str = "text", label_column: str = "label") -> tuple[list[str], list]:
    """Texts and raw labels from a ``.csv`` (header row) or ``.jsonl`` / ``.json`` (one object per line)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--data {path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
        columns = list(rows[0]) if rows else []
    elif suffix in (".jsonl", ".json", ".ndjson"):
        rows = []
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, start=1):
                if line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise ValueError(f"{path}, line {n}: not a JSON object ({e}); expected one object per "
                                         f"line (JSON Lines)") from e
                    if not isinstance(row, dict):
                        raise ValueError(f"{path}, line {n}: expected a JSON object, got {type(row).__name__}")
                    rows.append(row)
        columns = sorted({k for row in rows for k in row})
    else:
        raise ValueError(f"--data {path}: unknown file type {suffix!r}; accepted: .csv, .jsonl (.json, .ndjson)")
    if not rows:
        raise ValueError(f"--data {path}: no rows")
    for column, flag in ((text_column, "--text-column"), (label_column, "--label-column")):
        if column not in columns:
            raise ValueError(f"{flag} {column!r} is not a column of {path}; its columns: {columns}")
    missing = [i for i, row in enumerate(rows) if row.get(text_column) is None or row.get(label_column) in (None, "")]
    if missing:
        raise ValueError(f"{path}: {len(missing)} rows lack {text_column!r} or {label_column!r} (first: row "
                         f"{missing[0] + 1})")
    return [str(row[text_column]) for row in rows], [row[label_column] for row in rows]


def read_hf(name: str, config: str | None = None, split: str = "train", text_column: str = "text",
            label_column: str = "label") -> tuple[list[str], list, list[str] | None]:
    """Texts, raw labels and, for a ``ClassLabel`` column, its class names, from a ``datasets`` dataset."""
    try:
        import datasets
    except ImportError as e:
        raise ImportError(f"--hf-dataset needs the Hugging Face datasets library; install it with: "
                          f"{DATASETS_INSTALL} (or export the data to CSV / JSONL and use --data)") from e
    data = datasets.load_dataset(name, config, split=split)
    for column, flag in ((text_column, "--text-column"), (label_column, "--label-column")):
        if column not in data.column_names:
            raise ValueError(f"{flag} {column!r} is not a column of {name} ({split}); its columns: "
                             f"{data.column_names}")
    feature = data.features[label_column]
    names = list(feature.names) if hasattr(feature, "names") else None
    return [str(t) for t in data[text_column]], list(data[label_column]), names


def name_labels(raw: Sequence, label_names: Sequence[str] | None = None) -> list[str]:
    """Class names for raw labels: ``label_names[i]`` for integer labels (ints, bools, "0", "1.0"), else the
    label as a string.

    Example:
        >>> name_labels([0, 1, "1"], ["negative", "positive"]), name_labels(["pos", 3])
        (['negative', 'positive', 'positive'], ['pos', '3'])
    """
    if label_names is None:
        return [str(v).strip() for v in raw]
    out = []
    for v in raw:
        try:
            index = float(v)
        except (TypeError, ValueError):
            index = math.nan
        if not (math.isfinite(index) and index == int(index) and 0 <= index < len(label_names)):
            raise ValueError(f"label {v!r} is not an integer in 0..{len(label_names) - 1}, so --label-names "
                             f"{','.join(label_names)} cannot name it")
        out.append(label_names[int(index)])
    return out


def stratified_split(labels: Sequence[str], fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """(train, held-out) indices: a random ``fraction`` of each class held out (none of a 1-example class).

    Example:
        >>> train, held = stratified_split(["a"] * 10 + ["b"] * 10, 0.2)
        >>> len(train), len(held)
        (16, 4)
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"--held-out {fraction} must lie in [0, 1)")
    rng = random.Random(seed)
    by_class: dict[str, list[int]] = defaultdict(list)
    for i, y in enumerate(labels):
        by_class[y].append(i)
    train, held = [], []
    for c in sorted(by_class):
        idx = by_class[c]
        rng.shuffle(idx)
        k = min(len(idx) - 1, round(fraction * len(idx)))
        held += idx[:k]
        train += idx[k:]
    return sorted(train), sorted(held)


# ---------------------------------------------------------------------------------------------- training


def check_builtin_labels(name: str, labels: Sequence[str]) -> None:
    """The built-in binary probes need their exact labels: refuse others before any encoding."""
    if name in BINARY_BUILTINS:
        expected = set(BINARY_BUILTINS[name][:2])
        if set(labels) != expected:
            raise ValueError(f"a probe named {name!r} is what {name}.{BINARY_BUILTINS[name][2]}() / "
                             f"{name}.{BINARY_BUILTINS[name][3]}() look up, so its labels must be "
                             f"{sorted(expected)}, got {sorted(set(labels))}; name integer labels with "
                             f"--label-names {','.join(BINARY_BUILTINS[name][:2])}, or choose another --name")


def train_probe(texts: Sequence[str], labels: Sequence[str], encoder, name: str, held_out: float = 0.1,
                seed: int = 0, C: float = 1000.0, class_weight: str | None = "balanced", batch_size: int = 64,
                provenance: dict | None = None) -> tuple[Probe, dict | None]:
    """Fit a probe on ``encoder``'s embeddings of ``texts`` minus a stratified held-out ``held_out``
    fraction; return it (its provenance holds the held-out metrics) and those metrics (None without a
    held-out part). Exact duplicate texts are dropped first, so none is on both sides."""
    if len(texts) != len(labels):
        raise ValueError(f"got {len(texts)} texts but {len(labels)} labels")
    first: dict[str, int] = {}
    for i, t in enumerate(texts):
        first.setdefault(t, i)
    keep = sorted(first.values())
    if len(keep) < len(texts):
        logger.info("dropped %d duplicate texts", len(texts) - len(keep))
    texts, labels = [texts[i] for i in keep], [labels[i] for i in keep]
    check_builtin_labels(name, labels)
    train, held = stratified_split(labels, held_out, seed)
    logger.info("%d examples %s: %d to train, %d held out; encoding with %s", len(labels),
                dict(sorted(Counter(labels).items())), len(train), len(held), encoder.identity)
    start = time.perf_counter()
    x = encoder.encode(list(texts), batch_size=batch_size, show_progress_bar=len(texts) > 1000).float().cpu()
    logger.info("encoded in %.1fs", time.perf_counter() - start)
    record = {"held_out_fraction": held_out, "seed": seed, **dict(provenance or {})}
    probe = Probe.fit(x[train], [labels[i] for i in train], encoder, name=name, C=C, class_weight=class_weight,
                      provenance=record)
    metrics = held_out_metrics(probe, x[held], [labels[i] for i in held]) if held else None
    probe = Probe(probe.weight, probe.bias, probe.labels, probe.encoder, name=name,
                  provenance={**probe.provenance, "held_out": metrics})
    return probe, metrics


def main(argv: list[str] | None = None, encoder=None) -> Probe:
    """Run the recipe; ``encoder`` (a SemanticEncoder) replaces ``--encoder`` when given (tests, notebooks)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n", 2)[2])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="a local .csv (with a header row) or .jsonl file")
    source.add_argument("--hf-dataset", help="a Hugging Face datasets name, e.g. stanfordnlp/sst2")
    parser.add_argument("--hf-config", default=None, help="the dataset's configuration name, if it has several")
    parser.add_argument("--split", default="train", help="the dataset split to train on (default: train)")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--label-names", default=None,
                        help="comma-separated class names for integer labels 0, 1, ... (default: the dataset's "
                             "ClassLabel names, else the labels as they are)")
    parser.add_argument("--name", required=True, help="the probe's name (its registry key), e.g. sentiment")
    parser.add_argument("--encoder", default=DEFAULT_ENCODER, help="sentence-transformers id or folder")
    parser.add_argument("--device", default=None, help="encoder device, e.g. cuda")
    parser.add_argument("--out", default=None, help="save the probe to this folder")
    parser.add_argument("--registry", default=None, help="add the probe to the registry in this folder")
    parser.add_argument("--held-out", type=float, default=0.1, help="fraction held out to measure accuracy")
    parser.add_argument("--max-examples", type=int, default=None, help="train on a random sample of this size")
    parser.add_argument("--C", type=float, default=1000.0, help="inverse L2 regularisation (the reference: 1000)")
    parser.add_argument("--class-weight", choices=["balanced", "none"], default="balanced")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not args.out and not args.registry:
        parser.error("give --out FOLDER and/or --registry FOLDER: where should the probe go?")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    label_names = args.label_names.split(",") if args.label_names else None
    if args.data:
        texts, raw = read_file(args.data, args.text_column, args.label_column)
        where = {"source": str(args.data)}
    else:
        texts, raw, class_names = read_hf(args.hf_dataset, args.hf_config, args.split, args.text_column,
                                          args.label_column)
        label_names = label_names or class_names
        where = {"source": f"hf:{args.hf_dataset}", "config": args.hf_config, "split": args.split}
    labels = name_labels(raw, label_names)
    if args.max_examples is not None and len(texts) > args.max_examples:
        keep = sorted(random.Random(args.seed).sample(range(len(texts)), args.max_examples))
        texts, labels = [texts[i] for i in keep], [labels[i] for i in keep]
    check_builtin_labels(args.name, labels)
    registry = None
    if args.registry and (Path(args.registry) / "registry.json").is_file():
        registry = ProbeRegistry.load(args.registry)  # load (and fail) before the expensive part

    if encoder is None:
        from dglm.assets import load_encoder

        encoder = load_encoder(args.encoder, device=args.device)
    if registry is not None:
        registry.check_encoder(encoder)
    provenance = {**where, "text_column": args.text_column, "label_column": args.label_column,
                  "labelling": "the dataset's labels", "proxy": False,
                  "command": "python recipes/train_probe.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    probe, metrics = train_probe(texts, labels, encoder, args.name, held_out=args.held_out, seed=args.seed,
                                 C=args.C, class_weight=None if args.class_weight == "none" else "balanced",
                                 batch_size=args.batch_size, provenance=provenance)
    if metrics is not None:
        print(f"{args.name}: held-out accuracy {metrics['accuracy']:.3f} on {metrics['n']} examples "
              f"(balanced {metrics['balanced_accuracy']:.3f}, majority class {metrics['majority_baseline']:.3f})")
        for c, m in metrics["per_class"].items():
            print(f"  {c:24} n={m['n']:<6} precision={m['precision']}  recall={m['recall']}")
    if args.out:
        probe.save(args.out)
        print(f"saved {probe!r} to {args.out}")
    if args.registry:
        registry = registry or ProbeRegistry(encoder)
        registry.add(args.name, probe)
        registry.save(args.registry)
        print(f"added {args.name!r} to the registry in {args.registry}: {list(registry.names)}")
    return probe


if __name__ == "__main__":
    main()
