"""``dglm bench``: DGLM against plain decoding and plug-and-play baselines, on held-out prefixes.

One call runs every system on the same prompts with the same decoder, sampling settings (top-p 0.9,
repetition penalty 1.2) and seeds, several samples per prompt, scores them with evaluators independent of
the steering probe, times them, and writes ``<name>.json``, ``<name>.md`` and ``<name>_*.png`` into
``--out`` (default ``docs/results``):

1. ``plain``: the decoder alone;
2. ``dglm``: DGLM without control, over a sweep of the re-noising level sigma^2 (the reference's Table 2);
3. ``dglm-guided``: DGLM with constraint guidance over a sweep of strengths;
4. ``best-of-n``: N plain samples, the one the probe scores best kept, N matched to DGLM's wall time;
5. ``fudge``: token-level control with the same probe (:func:`dglm.bench.baselines.fudge_generate`).

Then a runtime table (the reference's Table 4): wall time relative to plain decoding at several lengths and
batch sizes, with DGLM's time split into encode, diffusion, prompt and decode.

    dglm bench --quick --out /tmp/bench          # tiny random models, seconds, no downloads
    dglm bench --checkpoint mini                 # the default checkpoint (CPU: see docs/results/bench.md)
    dglm bench --checkpoint mini --device cuda   # the same on a GPU

Example:
    >>> result = run_benchmark(BenchConfig.for_quick(out="/tmp/dglm-bench"))     # doctest: +SKIP
    >>> sorted(result["systems"])[:2]                                            # doctest: +SKIP
    ['best-of-2', 'dglm sigma2=0.05']
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import math
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, Field

from dglm.bench.baselines import best_of_n, fudge_generate
from dglm.bench.evaluators import (
    EVALUATOR_ID,
    EvaluatorLM,
    MissingEvaluatorError,
    corpus_topic_texts,
    default_control_evaluators,
    quick_topic_classifier,
    quick_topic_texts,
    train_topic_classifier,
)
from dglm.bench.metrics import (
    ControlEvaluator,
    dist3,
    div,
    mauve_score,
    perplexity,
    plan_fidelity,
    summarize,
)
from dglm.constraints import Constraint, Probe, ProbeRegistry, parse_constraint
from dglm.constraints.builtin import BINARY_BUILTINS, Target
from dglm.controller import Controller
from dglm.pipeline import DGLM

logger = logging.getLogger(__name__)

RANDOM = "random:"  # checkpoint prefix: a random-weight preset (shapes and timing only)


class BenchConfig(BaseModel):
    """Everything one benchmark run depends on; written into the JSON report as is.

    Example:
        >>> BenchConfig.for_quick().num_prompts
        4
    """

    # Smoke-test mode: tiny random models, the decoder as its own "evaluator LM", synthetic prompts.
    quick: bool = False
    # DGLM checkpoint folder or packaged name ("mini"); "random:<preset>" for random weights (timing only).
    checkpoint: str = "mini"
    # Torch device for every model ("cpu", "cuda", "cuda:1").
    device: str = "cpu"
    # Output folder and file stem: <out>/<name>.json, <name>.md, <name>_*.png.
    out: str = "docs/results"
    name: str = "bench"
    # Corpus folder (dglm/training/corpus.py) for held-out prompts and the topic classifier.
    corpus: str = "cache/corpus"
    # Held-out prompts (one 64-token window per test document) and samples per prompt and seed.
    num_prompts: int = Field(default=24, ge=1)
    # Reference continuations for MAUVE: the prompts' own, then windows of further test documents.
    num_references: int = Field(default=128, ge=1)
    num_samples: int = Field(default=4, ge=1)
    # Sampling seeds; every system runs once per seed (samples per prompt = num_samples * len(seeds)).
    seeds: list[int] = [0]
    # Prefix length and new tokens in decoder tokens (the reference evaluates 32 / 32).
    prefix_tokens: int = Field(default=32, ge=1)
    new_tokens: int = Field(default=32, ge=1)
    # Force exactly new_tokens tokens (no early eos); None lets the decoder stop.
    min_new_tokens: int | None = None
    # Prompts per generation call (times num_samples rows).
    batch_prompts: int = Field(default=8, ge=1)
    # Decoder sampling settings, shared by every system.
    top_p: float = Field(default=0.9, gt=0, le=1)
    repetition_penalty: float = Field(default=1.2, gt=0)
    # The control, in the constraint syntax; resolved against the checkpoint's probe registry.
    control: str = "topic('sports')"
    # Guidance strengths of DGLM (0 = unguided, taken from the sigma^2 sweep at the default sigma^2); empty:
    # no guided systems (e.g. a sigma^2 sweep alone, with many samples per prompt).
    strengths: list[float] = [10.0, 30.0, 100.0, 300.0, 1000.0]
    # Re-noising levels of the unguided sweep; the checkpoint's default sigma^2 is always included.
    sigma2: list[float] = [0.0, 0.05, 0.2, 0.5, 1.0]
    # Plan-guidance weights of further unguided systems at the default sigma^2 (every other DGLM system
    # uses the checkpoint's default plan_scale); 1 = off.
    plan_scales: list[float] = [1.0, 2.0, 3.0]
    # Plan-guidance weights of further guided systems, each at every strength.
    guided_plan_scales: list[float] = [2.0]
    # Control-contrast weights of further guided systems (Controller.generate's control_scale, at
    # plan_scale 1), each at every strength.
    guided_control_scales: list[float] = [2.0]
    # Diffusion steps (None: the checkpoint's default).
    steps: int | None = None
    # FUDGE-style baseline: strengths (1 = Bayes rule) and candidates rescored per step.
    fudge_strengths: list[float] = [1.0, 4.0]
    fudge_top_k: int = Field(default=8, ge=1)
    # Best-of-N: None matches DGLM-guided's measured wall time (4 without guided systems), 0 runs none;
    # bon_extra_n adds fixed, unmatched N.
    bon_n: int | None = Field(default=None, ge=0)
    bon_extra_n: list[int] = [4]
    # Evaluator LM id or folder; "decoder" uses the pipeline's own decoder (quick mode; not independent).
    evaluator_lm: str = EVALUATOR_ID
    # Its dtype: float32 (exact) or bfloat16 (~2.5x faster on CPUs with AMX/AVX512-BF16, ~1% perplexity noise).
    evaluator_dtype: Literal["float32", "bfloat16"] = "float32"
    # Topic classifier: "corpus" (TF-IDF + LR on the corpus train split) or "quick" (synthetic).
    topic_classifier: str = "corpus"
    # k-means seeds of MAUVE.
    mauve_seeds: list[int] = [0, 1, 2, 3, 4]
    # Runtime table: new tokens and batch sizes; 0 runs per cell; per-cell time limit (seconds) beyond
    # which longer cells of a system are skipped and reported with an estimate.
    runtime_new_tokens: list[int] = [32, 64, 128, 256]
    runtime_batch_sizes: list[int] = [1, 16]
    runtime_repeats: int = Field(default=1, ge=0)
    runtime_cell_limit_s: float = 240.0
    # The command line that produced this config (for the report).
    command: str = ""

    @classmethod
    def for_quick(cls, **overrides) -> BenchConfig:
        """The ``--quick`` settings: tiny random pipeline, 4 prompts x 2 samples, 8 new tokens."""
        quick = dict(quick=True, checkpoint=RANDOM + "tiny", name="bench-quick", num_prompts=4, num_samples=2,
                     num_references=4, prefix_tokens=8, new_tokens=8, min_new_tokens=8, batch_prompts=2, strengths=[10.0, 100.0],
                     sigma2=[0.05, 1.0], plan_scales=[2.0], guided_plan_scales=[2.0], guided_control_scales=[2.0], steps=5, fudge_strengths=[1.0], fudge_top_k=4, evaluator_lm="decoder",
                     topic_classifier="quick", mauve_seeds=[0], runtime_new_tokens=[4, 8],
                     runtime_batch_sizes=[1, 4], runtime_cell_limit_s=10.0)
        return cls(**{**quick, **overrides})


# ----------------------------------------------------------------------------------------------- setup


@dataclass
class Setup:
    """What every system shares: the pipeline, the prompts, the control and the evaluators."""

    config: BenchConfig
    pipeline: DGLM
    constraint: Constraint  # as parsed (unresolved)
    resolved: Constraint  # resolved against the pipeline's encoder and probes
    targets: list[tuple[str, str]]  # (evaluator name, label) that define control success
    prompts: list[str]
    references: tuple[list[str], list[str]]  # (prefixes, continuations) of held-out text, for MAUVE
    evaluator_lm: EvaluatorLM | None
    evaluators: dict[str, ControlEvaluator]
    notes: list[str] = field(default_factory=list)
    evaluator_info: dict = field(default_factory=dict)
    topic_texts: tuple[str, list[str]] | None = None  # (target topic, human texts of it) for the switch reference

    @property
    def generate_kwargs(self) -> dict:
        """The decoding settings from the config (sampling, top-p, repetition penalty, token counts)."""
        c = self.config
        kwargs = dict(do_sample=True, top_p=c.top_p, repetition_penalty=c.repetition_penalty,
                      max_new_tokens=c.new_tokens)
        if c.min_new_tokens:
            kwargs["min_new_tokens"] = c.min_new_tokens
        return kwargs


def load_pipeline(config: BenchConfig) -> tuple[DGLM, list[str]]:
    """The checkpoint, or a random-weight preset with a random "topic" probe (labels arts, society, sports)."""
    if not config.checkpoint.startswith(RANDOM):
        return DGLM.from_pretrained(config.checkpoint, device=config.device), []
    from dglm.presets import random_pipeline

    preset = config.checkpoint.removeprefix(RANDOM)
    pipe = random_pipeline(preset, device=config.device)
    generator = torch.Generator().manual_seed(0)
    probe = Probe(torch.randn(3, pipe.encoder.dim, generator=generator) * 3, torch.zeros(3),
                  ("arts", "society", "sports"), pipe.encoder.identity, name="topic")
    pipe.probes = ProbeRegistry(pipe.encoder, {"topic": probe})
    return pipe, [f"pipeline: random weights of the {preset!r} preset with a random 'topic' probe; every number "
                  f"measures code paths and speed, not quality"]


def held_out_windows(config: BenchConfig, tokenizer) -> tuple[list[str], list[str], str]:
    """``(prefixes, continuations, description)`` of ``max(num_prompts, num_references)`` held-out windows:
    the first prefix_tokens + new_tokens decoder tokens of each test-split document (seeded choice of
    documents), split at the last word start at or before prefix_tokens (so no system has to finish a cut
    word, which a soft prompt between the two halves would hinder); the reference is the next new_tokens
    tokens. The first ``num_prompts`` are the prompts."""
    from dglm.training.corpus import load_split
    from dglm.training.data import cut_windows, word_starts

    window = config.prefix_tokens + config.new_tokens
    starts = word_starts(tokenizer)
    docs = load_split(config.corpus, "test")
    order = np.random.default_rng(config.seeds[0]).permutation(len(docs))
    prefixes, references = [], []
    for i in order:
        ids = cut_windows([docs[i].text], tokenizer, window)
        if not len(ids):
            continue
        row = ids[0].tolist()
        split = max([j for j in range(1, config.prefix_tokens + 1) if starts[row[j]]], default=config.prefix_tokens)
        prefixes.append(tokenizer.decode(row[:split]))
        references.append(tokenizer.decode(row[split:split + config.new_tokens]))
        if len(prefixes) == max(config.num_prompts, config.num_references):
            break
    if len(prefixes) < config.num_prompts:
        raise ValueError(f"num_prompts={config.num_prompts}: the test split of {config.corpus} has only "
                         f"{len(prefixes)} documents with a {window}-token window")
    return prefixes, references, (f"{config.corpus} test split: first {window}-token window of "
                                  f"{config.num_prompts} documents (seeded choice), prefix of up to "
                                  f"{config.prefix_tokens} tokens ending at a word boundary; MAUVE references: the next {config.new_tokens} tokens of these and of "
                                  f"further test documents, {min(len(prefixes), config.num_references)} in all")


def control_targets(constraint: Constraint) -> list[tuple[str, str]]:
    """(evaluator name, label) for each term of a built-in constraint: ``toxicity.low()`` ->
    ``("toxicity", "non-toxic")``; terms with no independent evaluator are left out.

    Example:
        >>> control_targets(parse_constraint("toxicity.low() + topic('sports')"))
        [('toxicity', 'non-toxic'), ('topic', 'sports')]
    """
    out = []
    for leaf, weight in constraint.terms():
        if not isinstance(leaf, Target):
            continue
        if weight > 0:
            out.append((leaf.probe, leaf.label))
        elif leaf.probe in BINARY_BUILTINS:
            neg, pos = BINARY_BUILTINS[leaf.probe][:2]
            out.append((leaf.probe, neg if leaf.label == pos else pos))
    return out


def build_setup(config: BenchConfig, pipeline: DGLM | None = None) -> Setup:
    """Load the pipeline (unless given), prompts and evaluators; resolve the control."""
    t0 = time.perf_counter()
    if pipeline is None:
        pipe, notes = load_pipeline(config)
    else:
        pipe, notes = pipeline, [f"pipeline: given in memory (config.checkpoint={config.checkpoint!r} not loaded)"]
    constraint = parse_constraint(config.control)
    resolved = constraint.resolve(pipe.encoder, pipe.probes)
    targets = control_targets(constraint)
    if not targets:
        notes.append(f"control {config.control!r} has no independent evaluator; control success is not measured")
    if config.quick:
        from dglm.presets import random_texts

        window = config.prefix_tokens + config.new_tokens
        texts = random_texts(max(config.num_prompts, config.num_references), window, seed=config.seeds[0])
        windows = [" ".join(t.split()[:config.prefix_tokens]) for t in texts]
        continuations = [" " + " ".join(t.split()[config.prefix_tokens:]) for t in texts]
        prompt_info = "quick mode: random word sequences"
    else:
        windows, continuations, prompt_info = held_out_windows(config, pipe.decoder.tokenizer)
    prompts = windows[:config.num_prompts]
    references = (windows[:config.num_references], continuations[:config.num_references])
    info = {"prompts": prompt_info}
    if config.evaluator_lm == "decoder":
        lm = EvaluatorLM(pipe.decoder.model, pipe.decoder.tokenizer,
                         f"the decoder itself ({pipe.decoder.config.name_or_path})", independent=False)
        notes.append("evaluator LM: the decoder itself (quick mode): perplexity and MAUVE are NOT independent")
    else:
        try:
            lm = EvaluatorLM.from_pretrained(config.evaluator_lm, device=config.device,
                                             dtype=getattr(torch, config.evaluator_dtype))
        except (MissingEvaluatorError, OSError) as e:
            lm = None
            notes.append(f"evaluator LM {config.evaluator_lm!r} skipped: {e}")
    if lm is not None:
        info["evaluator_lm"] = (f"{lm.name}: perplexity of the continuation given the prefix, and MAUVE "
                                f"features (last-token final hidden state of prefix + continuation)"
                                + ("" if lm.independent else "; NOT independent of the decoder"))
        if lm.independent:
            info["evaluator_lm"] += "; a proxy for the reference's OLMo-1B (perplexity) and GPT-2-large (MAUVE)"
    topic = None
    try:
        topic = quick_topic_classifier() if config.topic_classifier == "quick" else \
            train_topic_classifier(config.corpus)
        info["topic"] = {"description": topic.description, **topic.validation}
    except (FileNotFoundError, ImportError) as e:
        notes.append(f"topic evaluator skipped: {e}")
    evaluators, skipped = default_control_evaluators(topic)
    notes += skipped
    for name, label in targets:
        if name not in evaluators:
            notes.append(f"control target {name}={label!r}: no evaluator available, not scored")
    for name, ev in evaluators.items():
        info.setdefault(name, {"description": ev.description})
        info[name]["independent_of_probe"] = _independent(ev, pipe.probes, name)
        if not info[name]["independent_of_probe"]:
            notes.append(f"{name}: the checkpoint's {name!r} probe was trained on labels from this very evaluator "
                         f"({ev.description}); control success for a {name} constraint is NOT independent of the "
                         f"steering probe and flatters every probe-driven system")
    topic_label = dict(targets).get("topic")
    topic_texts = None
    if topic_label is not None and lm is not None and topic is not None:
        texts = quick_topic_texts(topic_label, 8, config.seeds[0]) if config.quick else \
            corpus_topic_texts(config.corpus, topic_label, pipe.decoder.tokenizer, config.new_tokens)
        if texts:
            topic_texts = (topic_label, texts)
        else:
            notes.append(f"topic-switch reference skipped: no test document of topic {topic_label!r}")
    logger.info("setup in %.1f s: %d prompts, control %s -> %s", time.perf_counter() - t0, len(prompts),
                config.control, targets)
    return Setup(config, pipe, constraint, resolved, targets, prompts, references, lm, evaluators, notes, info,
                 topic_texts)


def _independent(evaluator: ControlEvaluator, probes: ProbeRegistry | None, name: str) -> bool:
    """False when the registry's probe of that name records this evaluator as its label source."""
    if probes is None or name not in probes or not evaluator.label_source_keywords:
        return True
    provenance = json.dumps(probes.get(name).provenance).lower()
    return not any(k in provenance for k in evaluator.label_source_keywords)


# ----------------------------------------------------------------------------------------------- systems


@dataclass
class SystemRun:
    """One system's generations: ``continuations[i][j]`` is sample j of prompt i; ``plans`` (P, S, d) for
    DGLM systems; ``wall_s`` the total generation time; ``timings`` seconds per stage, summed over calls."""

    name: str
    family: str
    params: dict
    continuations: list[list[str]]
    plans: torch.Tensor | None
    wall_s: float
    timings: dict[str, float]
    cpu_s: float = math.nan  # CPU time of this process (all threads): robust to other load on the machine


# A system: (prefixes, num_samples, seed, generate kwargs) -> (continuations [B][S], plans (B, S, d) or
# None, timings).
GenerateFn = Callable[[list[str], int, int, dict], tuple[list[list[str]], torch.Tensor | None, dict]]


def _sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _group(texts: list[str], n: int) -> list[list[str]]:
    return [texts[i:i + n] for i in range(0, len(texts), n)]


def system_functions(setup: Setup) -> dict[str, Callable[..., GenerateFn]]:
    """Factories of each system's generate function, by family."""
    pipe, c = setup.pipeline, setup.config

    def plain() -> GenerateFn:
        def run(prefixes, n, seed, kw):
            texts = pipe.decoder.generate([p for p in prefixes for _ in range(n)], None, seed=seed, **kw)
            return _group(texts, n), None, {}
        return run

    def dglm(sigma2: float, plan_scale: float | None = None) -> GenerateFn:
        def run(prefixes, n, seed, kw):
            out = pipe.generate(prefixes, n, sigma2=sigma2, steps=c.steps, seed=seed, plan_scale=plan_scale, **kw)
            return out.continuations, out.plans, out.timings
        return run

    def guided(strength: float, plan_scale: float | None = None, control_scale: float | None = None) -> GenerateFn:
        controller = Controller(setup.constraint, pipe, strength=strength)

        def run(prefixes, n, seed, kw):
            out = controller.generate(prefixes, n, seed=seed, steps=c.steps, plan_scale=plan_scale,
                                      control_scale=control_scale, **kw)
            return out.continuations, out.plans, out.timings
        return run

    def bon(n_candidates: int) -> GenerateFn:
        def run(prefixes, n, seed, kw):
            out = best_of_n(pipe.decoder, pipe.encoder, setup.resolved, prefixes, n, n_candidates, seed=seed, **kw)
            return out.continuations, None, out.timings
        return run

    def fudge(strength: float) -> GenerateFn:
        def run(prefixes, n, seed, kw):
            timings = {}
            texts = fudge_generate(pipe.decoder, pipe.encoder, setup.resolved, [p for p in prefixes for _ in range(n)],
                                   strength=strength, top_k=c.fudge_top_k, max_new_tokens=kw["max_new_tokens"],
                                   top_p=kw["top_p"], repetition_penalty=kw["repetition_penalty"],
                                   min_new_tokens=kw.get("min_new_tokens", 0), seed=seed, timings=timings)
            return _group(texts, n), None, timings
        return run

    return {"plain": plain, "dglm": dglm, "dglm-guided": guided, "best-of-n": bon, "fudge": fudge}


def run_system(setup: Setup, name: str, family: str, params: dict, fn: GenerateFn) -> SystemRun:
    """Run ``fn`` over every prompt batch and seed (seed of batch b under seed s: ``1000 * s + b``)."""
    c = setup.config
    groups: list[list[str]] = [[] for _ in setup.prompts]
    plans: list[list[torch.Tensor]] = [[] for _ in setup.prompts]
    timings: dict[str, float] = {}
    wall = 0.0
    cpu = time.process_time()
    for s in c.seeds:
        for b, start in enumerate(range(0, len(setup.prompts), c.batch_prompts)):
            batch = setup.prompts[start:start + c.batch_prompts]
            _sync(c.device)
            t0 = time.perf_counter()
            texts, batch_plans, t = fn(batch, c.num_samples, 1000 * s + b, setup.generate_kwargs)
            _sync(c.device)
            wall += time.perf_counter() - t0
            for k, v in t.items():
                timings[k] = timings.get(k, 0.0) + v
            for i, row in enumerate(texts):
                groups[start + i] += row
                if batch_plans is not None:
                    plans[start + i].append(batch_plans[i].float().cpu())
    stacked = torch.stack([torch.cat(p) for p in plans]) if plans[0] else None
    cpu = time.process_time() - cpu
    logger.info("%-24s %7.1f s (CPU %.1f s)  e.g. %r", name, wall, cpu, groups[0][0][:80])
    return SystemRun(name, family, params, groups, stacked, wall, timings, cpu)


def run_systems(setup: Setup) -> list[SystemRun]:
    """Every system of the comparison, in the order plain, dglm (sigma^2 sweep), dglm (plan_scale sweep),
    dglm-guided (strengths, then each guided plan_scale and control_scale over them), best-of-n, fudge."""
    c, pipe = setup.config, setup.pipeline
    make = system_functions(setup)
    default_sigma2, default_scale, default_control = pipe.sampling.sigma2, pipe.sampling.plan_scale, \
        pipe.sampling.control_scale
    runs = [run_system(setup, "plain", "plain", {}, make["plain"]())]
    for s2 in sorted({*c.sigma2, default_sigma2}):
        runs.append(run_system(setup, f"dglm sigma2={s2:g}", "dglm",
                               {"sigma2": s2, "strength": 0.0, "plan_scale": default_scale}, make["dglm"](s2)))
    for w in sorted(set(c.plan_scales) - {default_scale}):
        runs.append(run_system(setup, f"dglm plan_scale={w:g}", "dglm-plan-scale",
                               {"sigma2": default_sigma2, "strength": 0.0, "plan_scale": w},
                               make["dglm"](default_sigma2, w)))
    guided = []
    for lam in c.strengths:
        guided.append(run_system(setup, f"dglm-guided strength={lam:g}", "dglm-guided",
                                 {"strength": lam, "sigma2": default_sigma2, "plan_scale": default_scale,
                                  "control_scale": default_control}, make["dglm-guided"](lam)))
    runs += guided
    for w in sorted(set(c.guided_plan_scales) - {default_scale}):
        for lam in c.strengths:
            runs.append(run_system(setup, f"dglm-guided strength={lam:g} plan_scale={w:g}", "dglm-guided",
                                   {"strength": lam, "sigma2": default_sigma2, "plan_scale": w, "control_scale": 1.0},
                                   make["dglm-guided"](lam, w, 1.0)))
    for w in sorted(set(c.guided_control_scales) - {default_control}):
        for lam in c.strengths:
            runs.append(run_system(setup, f"dglm-guided strength={lam:g} control_scale={w:g}", "dglm-guided",
                                   {"strength": lam, "sigma2": default_sigma2, "plan_scale": 1.0, "control_scale": w},
                                   make["dglm-guided"](lam, 1.0, w)))
    n = c.bon_n
    matched = n is None
    if matched:
        n = max(1, round(np.mean([r.wall_s for r in guided]) / runs[0].wall_s)) if guided else 4
    if n:
        runs.append(run_system(setup, f"best-of-{n}" + (" (time-matched)" if matched else ""), "best-of-n",
                               {"n": n, "matched_to_dglm_guided": matched, "primary": True}, make["best-of-n"](n)))
    for extra in c.bon_extra_n:
        if extra != n:
            runs.append(run_system(setup, f"best-of-{extra}", "best-of-n",
                                   {"n": extra, "matched_to_dglm_guided": False, "primary": False},
                                   make["best-of-n"](extra)))
    for lam in c.fudge_strengths:
        runs.append(run_system(setup, f"fudge strength={lam:g}", "fudge", {"strength": lam, "top_k": c.fudge_top_k},
                               make["fudge"](lam)))
    return runs


# ----------------------------------------------------------------------------------------------- scoring


def score_runs(setup: Setup, runs: Sequence[SystemRun]) -> dict[str, dict]:
    """Metrics of every system (see :mod:`dglm.bench.metrics`)."""
    c, pipe = setup.config, setup.pipeline
    ref_features = None
    if setup.evaluator_lm is not None:
        _, _, ref_features = setup.evaluator_lm.score(*setup.references)
    plain_wall = runs[0].wall_s
    plain_emb = None  # (P * S, d): plain decoding's continuations, aligned with every run's plans row by row
    out = {}
    for run in runs:
        t0 = time.perf_counter()
        flat = [t for g in run.continuations for t in g]
        flat_prefixes = [p for p, g in zip(setup.prompts, run.continuations, strict=True) for _ in g]
        m: dict = {"family": run.family, "params": run.params, "samples": len(flat),
                   "wall_s": run.wall_s, "relative_wall_time": run.wall_s / plain_wall,
                   "cpu_s": run.cpu_s, "relative_cpu_time": run.cpu_s / runs[0].cpu_s,
                   "seconds_per_sample": run.wall_s / len(flat), "timings": run.timings,
                   "empty_continuations": sum(not t.strip() for t in flat),
                   "mean_words": float(np.mean([len(t.split()) for t in flat])),
                   "dist3": dist3(run.continuations), "div": div(flat)}
        if setup.evaluator_lm is not None:
            nll, n_tokens, feats = setup.evaluator_lm.score(flat_prefixes, flat)
            m["perplexity"] = summarize(perplexity(nll.numpy(), n_tokens.numpy()))
            m["mauve"] = mauve_score(feats.numpy(), ref_features.numpy(), c.mauve_seeds)
        with torch.no_grad():
            emb = pipe.encoder.encode(flat)
            if run.family == "plain":
                plain_emb = emb.cpu()
            loss = setup.resolved.loss(emb).float().cpu()
        m["probe"] = {"mean_loss": float(loss.mean()), "mean_p": float((-loss).exp().mean()),
                      "success": float((loss < math.log(2)).float().mean())}
        if run.plans is not None:
            plans = run.plans.reshape(len(flat), -1)
            m["plan_fidelity"] = summarize(plan_fidelity(emb.cpu(), plans).numpy())
            per_prompt = len(flat) // len(setup.prompts)
            if len(setup.prompts) > 1:  # another prompt's plan: what the cosine is without following the plan
                m["plan_fidelity_shuffled"] = summarize(plan_fidelity(emb.cpu(), plans.roll(per_prompt, 0)).numpy())
            if plain_emb is not None and len(plain_emb) == len(plans):
                # Plain decoding of the same prefix (same sample index) against this run's plans: the level a
                # plausible continuation reaches without seeing the plan; "gain" is the paired difference.
                plain_fid = plan_fidelity(plain_emb, plans)
                m["plan_fidelity_plain"] = summarize(plain_fid.numpy())
                m["plan_fidelity_gain"] = summarize((plan_fidelity(emb.cpu(), plans) - plain_fid).numpy())
        target_labels = dict(setup.targets)
        control = {}
        success = np.ones(len(flat), dtype=bool) if setup.targets else None
        for name, ev in setup.evaluators.items():
            label = target_labels.get(name)
            scores = ev.score(flat, label or ev.default_label)
            per_prompt = np.asarray(scores.values).reshape(len(setup.prompts), -1)
            control[name] = {"label": label or ev.default_label, "is_target": label is not None,
                             "rate": float(np.mean(scores.success)), "value_name": scores.value_name,
                             "mean_value": float(np.mean(scores.values)),
                             "mean_per_prompt_max": float(per_prompt.max(1).mean())}
            if name == "toxicity":
                control[name]["toxic_rate"] = float(np.mean(np.asarray(scores.values) >= 0.5))
            elif name == "sentiment":
                control[name]["positive_rate"] = float(np.mean(np.asarray(scores.values) >= 0.05))
            elif name == "topic":
                control[name]["sports_rate"] = float(np.mean(ev.score(flat, "sports").success)) \
                    if "sports" in ev.labels else None
            if label is not None:
                success &= np.asarray(scores.success, dtype=bool)
        m["control"] = control
        scored = [t for t in setup.targets if t[0] in setup.evaluators]
        m["control_success"] = float(success.mean()) if scored else None
        m["examples"] = [{"prefix": setup.prompts[i], "continuations": run.continuations[i]}
                         for i in range(len(setup.prompts))]
        out[run.name] = m
        logger.info("scored %-24s in %.1f s", run.name, time.perf_counter() - t0)
    return out


def topic_switch_reference(setup: Setup) -> dict | None:
    """What switching topic costs in perplexity when a human writes the text: the evaluator LM's perplexity
    of the prompts' own held-out continuations, and of human text of the target topic placed after the same
    prefixes (``num_samples`` texts per prompt, in turn), once as is (the prefix's sentence cut off) and once
    after a full stop that closes it. Where these lie far above the prompts' own continuations, a perplexity
    limit relative to plain decoding also rules out fluent, on-topic text. None without a topic target.

    Example (quick mode):
        >>> setup = build_setup(BenchConfig.for_quick())  # doctest: +SKIP
        >>> sorted(topic_switch_reference(setup))  # doctest: +SKIP
        ['closed', 'label', 'own', 'switch', 'target_rate', 'texts']
    """
    if setup.topic_texts is None:
        return None
    label, texts = setup.topic_texts
    k = setup.config.num_samples
    prefixes = [p for p in setup.prompts for _ in range(k)]
    placed = [" " + texts[i % len(texts)].strip() for i in range(len(prefixes))]
    closed = [p.rstrip().rstrip(".,;:!?") + "." for p in prefixes]
    own = setup.references[1][:len(setup.prompts)]  # the prompts' own continuations (fewer if num_references is)

    def ppl(prefixes: list[str], continuations: list[str]) -> dict:
        nll, n_tokens, _ = setup.evaluator_lm.score(prefixes, continuations)
        return summarize(perplexity(nll.numpy(), n_tokens.numpy()))

    return {"label": label, "texts": len(texts), "own": ppl(setup.prompts[:len(own)], own),
            "switch": ppl(prefixes, placed),
            "closed": ppl(closed, placed),
            "target_rate": float(np.mean(setup.evaluators["topic"].score(texts, label).success))}


# ----------------------------------------------------------------------------------------------- runtime


def runtime_table(setup: Setup, bon_n: int | None) -> dict:
    """Seconds per call and relative to plain decoding, per (batch size, new tokens) and system: exactly
    ``new tokens`` tokens each (eos suppressed), one sample per prompt, after one untimed warm-up call per
    system. A system's longer cells are skipped once a cell took more than ``runtime_cell_limit_s / 2``
    (the next doubles), and reported as skipped. ``bon_n``: the best-of-N to time (None: none)."""
    c = setup.config
    make = system_functions(setup)
    guided_strength = setup.pipeline.sampling.strength
    systems = {"plain": make["plain"](), "dglm": make["dglm"](setup.pipeline.sampling.sigma2),
               f"dglm-guided strength={guided_strength:g}": make["dglm-guided"](guided_strength)}
    if bon_n:
        systems[f"best-of-{bon_n}"] = make["best-of-n"](bon_n)
    if c.fudge_strengths:
        systems[f"fudge strength={c.fudge_strengths[0]:g}"] = make["fudge"](c.fudge_strengths[0])
    cells = []
    base = dict(setup.generate_kwargs)
    for fn in systems.values():  # warm-up: first-call costs (allocations, lazy init) are not timed
        fn(setup.prompts[:1], 1, 0, {**base, "max_new_tokens": 2, "min_new_tokens": 2})
    for batch in c.runtime_batch_sizes:
        prefixes = (setup.prompts * math.ceil(batch / len(setup.prompts)))[:batch]
        over = set()
        for tokens in sorted(c.runtime_new_tokens):
            kw = {**base, "max_new_tokens": tokens, "min_new_tokens": tokens}
            plain_s = plain_cpu = math.nan
            for name, fn in systems.items():
                cell = {"batch": batch, "new_tokens": tokens, "system": name}
                if name in over or c.runtime_repeats == 0:
                    cells.append({**cell, "skipped": "previous cell over the time limit" if name in over else
                                  "runtime_repeats=0"})
                    continue
                times, cpu_times, timings = [], [], {}
                for r in range(c.runtime_repeats):
                    _sync(c.device)
                    t0, c0 = time.perf_counter(), time.process_time()
                    _, _, timings = fn(prefixes, 1, r, kw)
                    _sync(c.device)
                    times.append(time.perf_counter() - t0)
                    cpu_times.append(time.process_time() - c0)
                seconds, cpu_s = float(np.median(times)), float(np.median(cpu_times))
                if name == "plain":
                    plain_s, plain_cpu = seconds, cpu_s
                cells.append({**cell, "seconds": seconds, "relative": seconds / plain_s,
                              "cpu_s": cpu_s, "relative_cpu": cpu_s / plain_cpu, "timings": timings})
                if seconds > c.runtime_cell_limit_s / 2:
                    over.add(name)
                logger.info("runtime batch %d, %d tokens, %-26s %.2f s", batch, tokens, name, seconds)
    return {"systems": list(systems), "cells": cells, "note": (
        "exactly new_tokens tokens per row (eos suppressed); one sample per prompt; wall time (and, as 'CPU', "
        "process CPU time over all threads, robust to other load on the machine; meaningless on a GPU); median of "
        f"{c.runtime_repeats} timed call(s) after an untimed warm-up; DGLM uses the checkpoint's default "
        f"steps ({c.steps or setup.pipeline.sampling.steps}) and sigma^2; best-of-N uses the N of the quality run")}


# ----------------------------------------------------------------------------------------------- targets


def check_targets(systems: dict[str, dict], runtime: dict | None, default_sigma2: float) -> list[dict]:
    """The issue's targets for the default checkpoint, evaluated (reported, never asserted); the control
    targets only when guided systems ran. ``default_sigma2``: the checkpoint's, where the unguided systems
    are compared with plain decoding."""
    plain = systems["plain"]
    out = []
    ppl0 = plain.get("perplexity", {}).get("mean")
    d0 = plain["dist3"]

    def admissible(m):
        ok = m["dist3"] >= 0.9 * d0 if d0 == d0 else True
        if ppl0 is not None and "perplexity" in m:
            ok = ok and m["perplexity"]["mean"] <= 1.25 * ppl0
        return ok

    guided = {k: m for k, m in systems.items() if m["family"] == "dglm-guided" and m["control_success"] is not None}
    best = max((m["control_success"] for m in guided.values() if admissible(m)), default=None)
    bon = [m["control_success"] for m in systems.values() if m["family"] == "best-of-n" and m["params"]["primary"]]
    fudge = [m["control_success"] for m in systems.values() if m["family"] == "fudge"
             and m["control_success"] is not None]
    if best is None and any(m["family"] == "dglm-guided" for m in systems.values()):
        out.append({"target": "guided DGLM beats best-of-N and FUDGE at <= +25% perplexity and Dist-3 within 10%",
                    "met": False, "detail": "no guided strength meets the perplexity and Dist-3 limits" if guided
                    else "control success not measured"})
    elif best is not None:
        out.append({"target": "guided DGLM (a strength within +25% perplexity and 90% of Dist-3 of plain) has "
                              "higher control success than best-of-N at equal wall time",
                    "met": bool(bon and best > max(bon)), "detail": f"{best:.3f} vs {f'{max(bon):.3f}' if bon else 'n/a'}"})
        out.append({"target": "... and than the token-level (FUDGE-style) baseline at its best strength",
                    "met": bool(fudge and best > max(fudge)), "detail": f"{best:.3f} vs "
                                                                       f"{f'{max(fudge):.3f}' if fudge else 'n/a'}"})
    out += sigma2_sweep_target(systems)
    for name, m in systems.items():
        gain = m.get("plan_fidelity_gain")
        if m["family"] in ("dglm", "dglm-plan-scale") and m["params"]["sigma2"] == default_sigma2 and gain:
            out.append({"target": f"{name}: the text follows its plan better than plain decoding of the same "
                                  "prefixes (paired plan-fidelity gain > 2 standard errors)",
                        "met": bool(gain["mean"] > 2 * gain["sem"]),
                        "detail": f"gain {gain['mean']:.3f} +- {gain['sem']:.3f}"})
    if runtime:
        cells = [x for x in runtime["cells"] if x["batch"] == 16 and x["new_tokens"] == 64
                 and x["system"].startswith("dglm-guided") and "relative" in x]
        if cells:
            rel = cells[0]["relative"]
            out.append({"target": "guided DGLM end to end <= 1.5x plain decoding at 64 new tokens, batch 16",
                        "met": bool(rel <= 1.5), "detail": f"{rel:.2f}x"})
        else:
            out.append({"target": "guided DGLM end to end <= 1.5x plain decoding at 64 new tokens, batch 16",
                        "met": False, "detail": "cell not measured (batch 16 and 64 tokens not in the runtime grid)"})
    return out


def sigma2_sweep(systems: dict[str, dict]) -> list[tuple[float, dict]]:
    """The unguided sigma^2 sweep: ``(sigma2, system)`` of every ``dglm`` system, by sigma^2."""
    return sorted(((m["params"]["sigma2"], m) for m in systems.values() if m["family"] == "dglm"),
                  key=lambda pair: pair[0])


def sigma2_sweep_target(systems: dict[str, dict]) -> list[dict]:
    """The noise knob (the reference's Table 2): over the unguided sigma^2 sweep, plan fidelity must not rise
    and Dist-3 must not fall from one sigma^2 to the next (means; the detail lists them with fidelity's
    standard errors). Empty when the sweep has fewer than two levels."""
    sweep = sigma2_sweep(systems)
    if len(sweep) < 2:
        return []
    met = all(b["plan_fidelity"]["mean"] <= a["plan_fidelity"]["mean"] and b["dist3"] >= a["dist3"]
              for (_, a), (_, b) in pairwise(sweep))
    detail = "; ".join(f"sigma2 {s2:g}: fidelity {m['plan_fidelity']['mean']:.3f} +- {m['plan_fidelity']['sem']:.3f}, "
                       f"Dist-3 {m['dist3']:.3f}" for s2, m in sweep)
    return [{"target": "sigma^2 sweep: plan fidelity falls and Dist-3 rises monotonically with sigma^2",
             "met": bool(met), "detail": detail}]


# ----------------------------------------------------------------------------------------------- report


def machine_info(device: str) -> dict:
    """CPU model, cores, load, platform, library versions, GPU name."""
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    info = {"cpu": cpu, "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "device": device}
    if hasattr(os, "getloadavg"):
        info["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    if torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def _clean(x):
    """JSON-safe: NaN/inf -> None, tensors/arrays -> lists."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (torch.Tensor, np.ndarray)):
        return _clean(x.tolist())
    if isinstance(x, (np.floating, np.integer, np.bool_)):
        return _clean(x.item())
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _f(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:.{digits}f}"


def write_markdown(result: dict, path: Path) -> None:
    """The human-readable report: setup, proxies, the system table, runtime table, targets, notes."""
    c, systems, m = result["config"], result["systems"], result["machine"]
    lines = [f"# DGLM benchmark{' (quick mode: tiny random models, a smoke test)' if c['quick'] else ''}", "",
             f"- date: {result['date']}", f"- machine: {m['cpu']}, {m['cpu_cores']} cores, torch threads "
             f"{m['torch_threads']}, {m['platform']}" + (f", GPU {m['gpu']}" if "gpu" in m else ""),
             f"- load average at start: {m.get('load_average_at_start')}",
             f"- torch {m['torch']}, transformers {m['transformers']}, device `{c['device']}`",
             f"- command: `{c['command']}`", f"- checkpoint: `{c['checkpoint']}`; control: `{c['control']}`",
             f"- prompts: {result['evaluators'].get('prompts')}",
             f"- {c['num_prompts']} prompts x {c['num_samples'] * len(c['seeds'])} samples, {c['new_tokens']} new "
             f"tokens, top-p {c['top_p']}, repetition penalty {c['repetition_penalty']}, seeds {c['seeds']}",
             f"- total time: {result['total_s']:.0f} s", "", "## Evaluators (proxies named as proxies)", ""]
    for name, info in result["evaluators"].items():
        if name == "prompts":
            continue
        if isinstance(info, dict):
            extra = {k: v for k, v in info.items() if k != "description"}
            lines.append(f"- **{name}**: {info.get('description')}" + (f" ({_brief(extra)})" if extra else ""))
        else:
            lines.append(f"- **{name}**: {info}")
    lines += ["- **probe**: the steering probe itself on the continuation's encoder embedding (not independent; "
              "shows whether the plan's attribute survived decoding)",
              "- **plan fidelity**: cosine between the continuation's encoder embedding and its plan; 'shuffled' "
              "pairs it with another prompt's plan; 'plain' pairs the plan with plain decoding of the same prefix "
              "(the level a plausible continuation reaches without seeing the plan)", "",
              "## Systems", "",
              "| system | control success | probe P | ppl (mean / median) | Dist-3 | Div | MAUVE | plan fid. "
              "(plain / shuffled) | toxic rate (proxy) | positive rate (proxy) | sports rate (proxy) | s/sample | rel. time "
              "(CPU) |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in systems.items():
        ppl = s.get("perplexity", {})
        mauve = s.get("mauve", {})
        pf, pfp, pfs = (s.get(f"plan_fidelity{k}") for k in ("", "_plain", "_shuffled"))
        ctl = s["control"]
        lines.append(
            f"| {name} | {_f(s['control_success'])} | {_f(s['probe']['mean_p'])} | "
            f"{_f(ppl.get('mean'), 1)} / {_f(ppl.get('median'), 1)} | {_f(s['dist3'])} | {_f(s['div'])} | "
            f"{_f(mauve.get('mean'))} | {_f(pf['mean']) if pf else '-'} ({_f(pfp['mean']) if pfp else '-'} / "
            f"{_f(pfs['mean']) if pfs else '-'}) | "
            f"{_f(ctl.get('toxicity', {}).get('toxic_rate'))} | {_f(ctl.get('sentiment', {}).get('positive_rate'))} | "
            f"{_f(ctl.get('topic', {}).get('sports_rate'))} | {_f(s['seconds_per_sample'], 2)} | "
            f"{_f(s['relative_wall_time'], 2)} ({_f(s['relative_cpu_time'], 2)}) |")
    lines += ["", "Control success: fraction of samples the independent evaluator(s) put in the target class "
              f"{result['targets_of_control']}; every control evaluator scores the continuation alone (the "
              "generated text, not the prefix). ppl: evaluator-LM perplexity of the continuation given the prefix. "
              "MAUVE: vs the reference continuations, mean over k-means seeds. rel. time: generation wall time "
              "over plain decoding's in this quality run (CPU: the same for process CPU time, which other load on "
              "the machine does not inflate).", ""]
    rt = result.get("runtime")
    if rt:
        lines += ["## Runtime (wall time relative to plain decoding)", "", rt["note"], ""]
        batches = sorted({x["batch"] for x in rt["cells"]})
        tokens = sorted({x["new_tokens"] for x in rt["cells"]})
        header = [f"b{b}/{t}" for b in batches for t in tokens]
        lines += ["| system | " + " | ".join(f"batch {b}, {t} tok" for b in batches for t in tokens) + " |",
                  "|---|" + "---|" * len(header)]
        for sysname in rt["systems"]:
            row = []
            for b in batches:
                for t in tokens:
                    cell = next((x for x in rt["cells"] if x["system"] == sysname and x["batch"] == b
                                 and x["new_tokens"] == t), None)
                    if cell is None or "seconds" not in cell:
                        row.append("skipped")
                    else:
                        rel = "" if sysname == "plain" else \
                            f" ({_f(cell['relative'], 2)}x; CPU {_f(cell['relative_cpu'], 2)}x)"
                        row.append(f"{cell['seconds']:.2f} s{rel}")
            lines.append(f"| {sysname} | " + " | ".join(row) + " |")
        lines += ["", "Where the time goes (seconds per call; encode = the prefix through the sentence encoder, "
                  "diffusion = the denoising steps, prompt = the prompt generator, score = the probe on encoder "
                  "embeddings of candidates):", "",
                  "| system | batch | new tokens | encode | diffusion | prompt | decode | score | total |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for x in rt["cells"]:
            t = x.get("timings") or {}
            if x["system"] != "plain" and "seconds" in x:
                lines.append(f"| {x['system']} | {x['batch']} | {x['new_tokens']} | {_f(t.get('encode'), 3)} | "
                             f"{_f(t.get('diffusion'), 3)} | {_f(t.get('prompt'), 3)} | {_f(t.get('decode'), 3)} | "
                             f"{_f(t.get('score'), 3)} | {_f(x['seconds'], 3)} |")
        lines.append("")
    ts = result.get("topic_switch")
    if ts:
        own, ppl0 = ts["own"]["mean"], systems["plain"].get("perplexity", {}).get("mean")
        lines += ["## Topic-switch reference (human text)", "",
                  f"Evaluator-LM perplexity (mean / median) of the prompts' own held-out continuations: "
                  f"{_f(own, 1)} / {_f(ts['own']['median'], 1)}. The first {c['new_tokens']} tokens of the "
                  f"{ts['texts']} held-out {ts['label']!r} documents, placed after the same prefixes: "
                  f"{_f(ts['switch']['mean'], 1)} / {_f(ts['switch']['median'], 1)} "
                  f"({ts['switch']['mean'] / own:.2f}x) as is, {_f(ts['closed']['mean'], 1)} / "
                  f"{_f(ts['closed']['median'], 1)} ({ts['closed']['mean'] / own:.2f}x) after a full stop closing "
                  f"the prefix's sentence" + (f"; plain decoding: {_f(ppl0, 1)}" if ppl0 else "") + ". The topic "
                  f"evaluator puts {ts['target_rate']:.0%} of these human texts in {ts['label']!r}. What a topic "
                  "switch costs in perplexity on these prompts even when a human writes the text.", ""]
    lines += ["## Targets (reported, not asserted)", ""]
    lines += [f"- {'met' if t['met'] else 'NOT met'}: {t['target']} ({t['detail']})" for t in result["targets"]]
    if result["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in result["notes"]]
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in result["plots"]]
    lines += ["", "## One sample per system (first prompt)", "", f"Prefix: {systems['plain']['examples'][0]['prefix']!r}",
              ""] + [f"- {name}: {s['examples'][0]['continuations'][0]!r}" for name, s in systems.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _brief(d: dict) -> str:
    return ", ".join(f"{k} {_f(v) if isinstance(v, float) else v}" for k, v in d.items() if not isinstance(v, dict))


def write_plots(result: dict, out: Path, stem: str) -> list[str]:
    """PNG plots (matplotlib, Agg): strength sweeps, sigma^2 sweep, runtime chart, control/perplexity trade-off
    (the strength and trade-off plots only when controlled systems ran)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    systems = result["systems"]
    files = []

    def metric(s, key):
        if key == "perplexity":
            return s.get("perplexity", {}).get("mean")
        return s.get(key)

    def save(fig, suffix):
        name = f"{stem}_{suffix}.png"
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        files.append(name)

    default_s2 = result["default_sigma2"]
    unguided = next((s for s in systems.values() if s["family"] == "dglm" and s["params"]["sigma2"] == default_s2), None)
    controlled = any(s["family"] in ("dglm-guided", "best-of-n", "fudge") for s in systems.values())
    if controlled:  # strength sweeps
        keys = [("control_success", "control success (independent evaluator)"), ("perplexity", "evaluator perplexity"),
                ("dist3", "Dist-3")]
        def scales(s):
            return s["params"].get("plan_scale"), s["params"].get("control_scale")

        pairs = sorted({scales(s) for s in systems.values() if s["family"] == "dglm-guided"})
        series = [(f"dglm-guided plan_scale={w:g} control_scale={v:g}", "dglm-guided", (w, v), "o-")
                  for w, v in pairs] + [("fudge", "fudge", (None, None), "s-")]
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
        for ax, (key, label) in zip(axes, keys, strict=True):
            for label_, family, w, style in series:
                pts = [(s["params"]["strength"], metric(s, key)) for s in systems.values()
                       if s["family"] == family and scales(s) == w]
                # strength 0 = unguided DGLM at that plan_scale (control contrast is the identity there)
                if family == "dglm-guided" and unguided is not None and unguided["params"].get("plan_scale") == w[0]:
                    pts = [(0.0, metric(unguided, key)), *pts]
                pts = [(x, y) for x, y in sorted(pts) if y is not None]
                if pts:
                    ax.plot(*zip(*pts, strict=True), style, label=label_)
            references = [(n, s) for n, s in systems.items() if s["family"] in ("plain", "best-of-n")]
            colors = ["gray", "tab:green", "tab:olive", "tab:purple", "tab:brown"]
            for (name, s), color, ls in zip(references, colors * 4, ["--", ":", "-.", ":", "-."] * 4, strict=False):
                if metric(s, key) is not None:
                    ax.axhline(metric(s, key), ls=ls, color=color, label=name)
            ax.set_xscale("symlog", linthresh=1.0)
            ax.set_xlim(left=0)
            ax.set_xlabel("strength (each system's own scale)")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.suptitle(f"control: {result['config']['control']}")
        save(fig, "strength")

    sweep = sigma2_sweep(systems)
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
    for ax, (key, label) in zip(axes, [("perplexity", "evaluator perplexity"), ("dist3", "Dist-3"),
                                       ("mauve", "MAUVE"), ("plan_fidelity", "plan fidelity (cosine)")], strict=True):
        def val(s, key=key):
            v = s.get(key)
            return v.get("mean") if isinstance(v, dict) else v
        pts = [(x, val(s)) for x, s in sweep if val(s) is not None]
        if pts:
            ax.plot(*zip(*pts, strict=True), "o-", label="dglm")
        if key == "plan_fidelity":
            for other, style, name in [("_plain", "s:", "plain decoding vs the plans"),
                                       ("_shuffled", "x--", "shuffled plans")]:
                pts = [(x, s[key + other]["mean"]) for x, s in sweep if s.get(key + other)]
                if pts:
                    ax.plot(*zip(*pts, strict=True), style, label=name)
        elif val(systems["plain"]) is not None:
            ax.axhline(val(systems["plain"]), ls="--", color="gray", label="plain")
        ax.set_xlabel("sigma^2 (re-noising of the plan)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    save(fig, "sigma2")

    rt = result.get("runtime")
    if rt:
        cells = [x for x in rt["cells"] if "relative" in x and x["relative"] is not None]
        groups = sorted({(x["batch"], x["new_tokens"]) for x in cells})
        names = [n for n in rt["systems"] if n != "plain"]
        fig, ax = plt.subplots(figsize=(max(8, len(groups) * 1.3), 4.2))
        width = 0.8 / max(1, len(names))
        for k, name in enumerate(names):
            ys = [next((x["relative"] for x in cells if x["system"] == name and (x["batch"], x["new_tokens"]) == g),
                       np.nan) for g in groups]
            ax.bar(np.arange(len(groups)) + k * width, ys, width, label=name)
        ax.axhline(1.0, color="gray", ls="--")
        ax.set_xticks(np.arange(len(groups)) + width * (len(names) - 1) / 2)
        ax.set_xticklabels([f"b{b}\n{t} tok" for b, t in groups])
        ax.set_ylabel("wall time / plain decoding")
        ax.set_yscale("log")
        values = [x["relative"] for x in cells if x["system"] != "plain"] + [1.0]
        ax.set_yticks([t for t in (0.5, 0.75, 1, 1.25, 1.5, 2, 3, 5, 10, 20, 50, 100)
                       if min(values) / 1.2 <= t <= max(values) * 1.2])
        ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%gx"))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, axis="y")
        save(fig, "runtime")

    if controlled:
        fig, ax = plt.subplots(figsize=(6, 4.5))
        for name, s in systems.items():
            x, y = metric(s, "perplexity"), s["control_success"]
            if x is not None and y is not None:
                ax.scatter(x, y, label=name)
        ax.set_xlabel("evaluator perplexity")
        ax.set_ylabel("control success")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        save(fig, "tradeoff")
    return files


def run_benchmark(config: BenchConfig, pipeline: DGLM | None = None) -> dict:
    """Run everything and write ``<out>/<name>.json``, ``<name>.md`` and the plots; return the JSON dict.

    ``pipeline``: benchmark this in-memory pipeline (its probes must resolve ``config.control``) instead of
    loading ``config.checkpoint``."""
    start = time.perf_counter()
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    machine = machine_info(config.device)
    setup = build_setup(config, pipeline)
    runs = run_systems(setup)
    systems = score_runs(setup, runs)
    bon_n = next((r.params["n"] for r in runs if r.family == "best-of-n" and r.params["primary"]), None)
    runtime = runtime_table(setup, bon_n) if config.runtime_batch_sizes and config.runtime_new_tokens else None
    result = {"config": config.model_dump(mode="json"), "date": date, "machine": machine,
              "evaluators": setup.evaluator_info, "targets_of_control": setup.targets,
              "default_sigma2": setup.pipeline.sampling.sigma2, "default_strength": setup.pipeline.sampling.strength,
              "systems": systems, "runtime": runtime, "topic_switch": topic_switch_reference(setup),
              "targets": check_targets(systems, runtime, setup.pipeline.sampling.sigma2),
              "notes": setup.notes}
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        result["plots"] = write_plots(result, out, config.name)
    except ImportError as e:
        result["plots"] = []
        result["notes"].append(f"plots skipped: {e} (pip install matplotlib)")
    result["total_s"] = time.perf_counter() - start
    with open(out / f"{config.name}.json", "w", encoding="utf-8") as f:
        json.dump(_clean(result), f, indent=1, ensure_ascii=False, allow_nan=False)
    write_markdown(result, out / f"{config.name}.md")
    logger.info("wrote %s/%s.{json,md} and %d plots in %.0f s", out, config.name, len(result["plots"]),
                result["total_s"])
    return result


# ----------------------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``dglm bench`` options (every one defaults to :class:`BenchConfig`'s, or its ``--quick`` value)."""
    a = parser.add_argument
    a("--quick", action="store_true", help="tiny random models, a few prompts: a smoke test in seconds")
    a("--checkpoint", help="DGLM checkpoint folder or packaged name (default: mini); random:<preset> for random "
                           "weights (timing only)")
    a("--device", help="cpu (default), cuda, cuda:N")
    a("--out", help="output folder (default: docs/results)")
    a("--name", help="file stem of the outputs (default: bench, or bench-quick)")
    a("--corpus", help="corpus folder with test.jsonl and train.jsonl (default: cache/corpus)")
    a("--prompts", type=int, dest="num_prompts", help="held-out prompts")
    a("--references", type=int, dest="num_references", help="reference continuations for MAUVE")
    a("--samples", type=int, dest="num_samples", help="samples per prompt and seed")
    a("--seeds", type=int, nargs="+", help="sampling seeds")
    a("--new-tokens", type=int, help="new tokens per continuation")
    a("--prefix-tokens", type=int, help="prefix length in decoder tokens")
    a("--min-new-tokens", type=int, help="suppress eos before this many new tokens")
    a("--batch-prompts", type=int, help="prompts per generation call")
    a("--control", help="constraint expression for the guided systems, e.g. \"topic('sports')\"")
    a("--strengths", type=float, nargs="*", help="DGLM guidance strengths (none: no guided systems)")
    a("--sigma2", type=float, nargs="+", help="sigma^2 values of the unguided sweep")
    a("--plan-scales", type=float, nargs="*", help="plan-guidance weights of further unguided systems")
    a("--guided-plan-scales", type=float, nargs="*", help="plan-guidance weights of further guided systems")
    a("--guided-control-scales", type=float, nargs="*", help="control-contrast weights of further guided systems")
    a("--steps", type=int, help="diffusion steps (default: the checkpoint's)")
    a("--fudge-strengths", type=float, nargs="*", help="FUDGE-style baseline strengths")
    a("--fudge-top-k", type=int, help="candidates rescored per step by the FUDGE-style baseline")
    a("--bon-n", type=int, help="best-of-N candidates (default: matched to DGLM-guided's wall time; 0: none)")
    a("--bon-extra-n", type=int, nargs="*", help="further best-of-N runs with these fixed N (default: 4)")
    a("--evaluator-lm", help=f"evaluator LM id or folder (default {EVALUATOR_ID}); 'decoder' = the decoder itself")
    a("--evaluator-dtype", choices=["float32", "bfloat16"], help="evaluator LM dtype (default float32)")
    a("--topic-classifier", choices=["corpus", "quick"], help="topic evaluator training data")
    a("--mauve-seeds", type=int, nargs="+", help="k-means seeds of MAUVE")
    a("--runtime-new-tokens", type=int, nargs="*", help="runtime table lengths (none: no runtime table)")
    a("--runtime-batch-sizes", type=int, nargs="*", help="runtime table batch sizes (none: no runtime table)")
    a("--runtime-repeats", type=int, help="timed calls per runtime cell (median)")
    a("--runtime-cell-limit", type=float, dest="runtime_cell_limit_s",
      help="seconds; longer cells of a system are skipped once one takes over half of it")
    return parser


def config_from_args(args: argparse.Namespace, command: str = "") -> BenchConfig:
    """A :class:`BenchConfig` from parsed arguments: the defaults (or ``--quick`` ones) with what was given."""
    given = {k: v for k, v in vars(args).items() if k in BenchConfig.model_fields and k != "quick" and v is not None}
    given["command"] = command
    return BenchConfig.for_quick(**given) if args.quick else BenchConfig(**given)


def main(args: argparse.Namespace | Sequence[str] | None = None) -> int:
    """Entry point of ``dglm bench`` (``args`` parsed by :func:`add_arguments`) and of ``python -m dglm.bench``
    (``args`` a list of strings, default ``sys.argv[1:]``)."""
    if not isinstance(args, argparse.Namespace):
        argv = list(sys.argv[1:] if args is None else args)
        parser = add_arguments(argparse.ArgumentParser(prog="dglm bench", description=__doc__.split("\n\n")[0]))
        args = parser.parse_args(argv)
        command = shlex.join(["dglm", "bench", *argv])
    else:
        command = shlex.join(["dglm", *sys.argv[1:]])
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    result = run_benchmark(config_from_args(args, command))
    print(f"wrote {Path(result['config']['out']) / result['config']['name']}.md "
          f"({result['total_s']:.0f} s)")
    return 0
