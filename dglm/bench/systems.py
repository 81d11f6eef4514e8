"""The systems of the benchmark, each a generate function over one prompt set, and the loops that run them.

Families: ``plain`` (the decoder alone), ``dglm`` / ``dglm-plan-scale`` (unguided DGLM), ``dglm-guided``
(constraint guidance over strengths, also with plan guidance or control contrast), and the peers
(:mod:`dglm.bench.baselines`): ``steering`` (activation steering over multipliers, at the layer a small sweep
picks), ``fudge`` (over strengths), ``prompting`` (over wordings), ``best-of-n`` (N matched to each DGLM
variant's wall time, and a fixed ceiling); and ``dglm-guided+prompting`` (guided DGLM on prompts wrapped in a
prompting style: the plan and the request together). Every system runs on the same prompts, decoder, sampling
settings and seeds (seed of batch b under seed s: ``1000 * s + b``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from dglm.bench.baselines import (
    best_of_n,
    fudge_generate,
    fudge_terms,
    prompt_requests,
    requested_prefixes,
    steered_generate,
)
from dglm.bench.setup import PromptSet, Setup
from dglm.bench.steering import SteeringVector, constraint_vector
from dglm.constraints import parse_constraint
from dglm.controller import Controller

logger = logging.getLogger(__name__)

# A system: (prefixes, num_samples, seed, generate kwargs) -> (continuations [B][S], plans (B, S, d) or None,
# timings).
GenerateFn = Callable[[list[str], int, int, dict], tuple[list[list[str]], torch.Tensor | None, dict]]


@dataclass
class SystemRun:
    """One system's generations on one prompt set: ``continuations[i][j]`` is sample j of prompt i; ``plans``
    (P, S, d) for DGLM systems; ``wall_s`` the total generation time; ``timings`` seconds per stage.

    Example (usually made by :func:`run_system`):
        >>> run = SystemRun("plain", "plain", {}, [["a b", "c d"], ["e f", "g h"]], None, wall_s=2.0,
        ...                 timings={}, cpu_s=3.0)
        >>> sum(map(len, run.continuations)), cost(run, "cpu"), cost(run, "cuda")
        (4, 3.0, 2.0)
    """

    name: str
    family: str
    params: dict
    continuations: list[list[str]]
    plans: torch.Tensor | None
    wall_s: float
    timings: dict[str, float]
    cpu_s: float = math.nan  # CPU time of this process (all threads): robust to other load on the machine


def cost(run: SystemRun, device) -> float:
    """The time a run is charged: process CPU time on a CPU (robust to other load on a shared machine),
    wall time on an accelerator (where CPU time means nothing).

    Example:
        >>> run = SystemRun("plain", "plain", {}, [["a b"]], None, wall_s=2.0, timings={}, cpu_s=3.0)
        >>> cost(run, "cpu"), cost(run, "cuda:0")
        (3.0, 2.0)
    """
    return run.cpu_s if torch.device(device).type == "cpu" else run.wall_s


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _group(texts: list[str], n: int) -> list[list[str]]:
    return [texts[i:i + n] for i in range(0, len(texts), n)]


def _rows(prefixes: list[str], n: int) -> list[str]:
    return [p for p in prefixes for _ in range(n)]


def subject(setup: Setup) -> str:
    """What prompting asks for: the control's target labels in words (``topic('sports')`` -> ``sports``).

    Example:
        >>> from dglm.bench.config import BenchConfig
        >>> from dglm.bench.setup import build_setup
        >>> config = BenchConfig.for_example(control="topic('sports') + sentiment.positive()")
        >>> setup = build_setup(config)
        >>> subject(setup)
        'sports and positive'
    """
    return " and ".join(label.replace("_", " ") for _, label in setup.targets) or setup.config.control


class Factory:
    """Makers of each family's generate function (see the module docstring), bound to one setup.

    Example (each function maps B prefixes and n samples to B lists of n continuations):
        >>> from dglm.bench.config import BenchConfig
        >>> from dglm.bench.setup import build_setup
        >>> config = BenchConfig.for_example()
        >>> setup = build_setup(config)
        >>> make = Factory(setup)
        >>> texts, plans, timings = make.dglm(sigma2=1.0)(["the game was", "a new song"], 2, 0,
        ...                                               setup.generate_kwargs)
        >>> [len(group) for group in texts], tuple(plans.shape), sorted(timings)
        ([2, 2], (2, 2, 32), ['decode', 'diffusion', 'encode', 'prompt'])
        >>> texts, plans, _ = make.prompting("header")(["the game was"], 3, 0, setup.generate_kwargs)
        >>> [len(group) for group in texts], plans
        ([3], None)
    """

    def __init__(self, setup: Setup):
        self.setup, self.pipe, self.c = setup, setup.pipeline, setup.config

    def plain(self) -> GenerateFn:
        def run(prefixes, n, seed, kw):
            return _group(self.pipe.decoder.generate(_rows(prefixes, n), None, seed=seed, **kw), n), None, {}
        return run

    def dglm(self, sigma2: float, plan_scale: float | None = None) -> GenerateFn:
        def run(prefixes, n, seed, kw):
            out = self.pipe.generate(prefixes, n, sigma2=sigma2, steps=self.c.steps, seed=seed, plan_scale=plan_scale,
                                     **kw)
            return out.continuations, out.plans, out.timings
        return run

    def guided(self, strength: float, plan_scale: float | None = None, control_scale: float | None = None,
               constraint=None, style: str | None = None, **settings) -> GenerateFn:
        """Guided DGLM; with a prompting ``style``, on the prompts that style wraps (plan and request together).
        ``settings``: further :class:`~dglm.config.GenerationConfig` fields of every call (``max_nll``, ...)."""
        controller = Controller(constraint or self.setup.constraint, self.pipe, strength=strength)
        request = self.request(style, constraint) if style else None

        def run(prefixes, n, seed, kw):
            if style:
                prefixes = requested_prefixes(self.pipe.decoder.tokenizer, prefixes, style, request)
            out = controller.generate(prefixes, n, seed=seed, steps=self.c.steps, plan_scale=plan_scale,
                                      control_scale=control_scale, **settings, **kw)
            return out.continuations, out.plans, out.timings
        return run

    def bon(self, n_candidates: int) -> GenerateFn:
        def run(prefixes, n, seed, kw):
            out = best_of_n(self.pipe.decoder, self.pipe.encoder, self.setup.resolved, prefixes, n, n_candidates,
                            seed=seed, **kw)
            return out.continuations, None, out.timings
        return run

    def fudge(self, strength: float) -> GenerateFn:
        terms = fudge_terms(self.setup.constraint, self.setup.peers.discriminators)

        def run(prefixes, n, seed, kw):
            texts = fudge_generate(self.pipe.decoder, terms, _rows(prefixes, n), strength, self.c.fudge_top_k,
                                   seed=seed, **kw)
            return _group(texts, n), None, {}
        return run

    def steering(self, vector: SteeringVector, scale: float) -> GenerateFn:
        def run(prefixes, n, seed, kw):
            return _group(steered_generate(self.pipe.decoder, vector, _rows(prefixes, n), scale, seed=seed, **kw),
                          n), None, {}
        return run

    def request(self, style: str, constraint=None) -> str:
        """What prompting in ``style`` asks for: the setup's own words for the task when it has them, else
        the control's (:func:`~dglm.bench.baselines.prompt_requests`; for a constraint of a composition,
        :func:`dglm.instructions.instruction_for`)."""
        if constraint is not None:
            from dglm.instructions import instruction_for

            return instruction_for(constraint)
        return self.setup.requests.get(style) or prompt_requests(subject(self.setup))[style]

    def prompting(self, style: str, constraint=None) -> GenerateFn:
        request = self.request(style, constraint)

        def run(prefixes, n, seed, kw):
            rows = requested_prefixes(self.pipe.decoder.tokenizer, _rows(prefixes, n), style, request)
            return _group(self.pipe.decoder.generate(rows, None, seed=seed, **kw), n), None, {}
        return run


def run_system(setup: Setup, prompts: PromptSet, name: str, family: str, params: dict, fn: GenerateFn,
               limit: int | None = None) -> SystemRun:
    """Run ``fn`` over every prompt batch of the set (its first ``limit`` prompts) and seed.

    Example:
        >>> from dglm.bench.config import BenchConfig
        >>> from dglm.bench.setup import build_setup
        >>> config = BenchConfig.for_example(seeds=[0, 1])
        >>> setup = build_setup(config)
        >>> neutral = setup.prompt_sets["neutral"]
        >>> run = run_system(setup, neutral, "plain", "plain", {}, Factory(setup).plain())
        >>> len(run.continuations), [len(g) for g in run.continuations], run.plans  # 2 seeds x 2 samples
        (2, [4, 4], None)
        >>> [len(t.split()) for t in run.continuations[0]], run.wall_s > 0
        ([4, 4, 4, 4], True)
    """
    c = setup.config
    texts_of = prompts.prompts[:limit]
    groups: list[list[str]] = [[] for _ in texts_of]
    plans: list[list[torch.Tensor]] = [[] for _ in texts_of]
    timings: dict[str, float] = {}
    wall, cpu = 0.0, time.process_time()
    for s in c.seeds:
        for b, start in enumerate(range(0, len(texts_of), c.batch_prompts)):
            batch = texts_of[start:start + c.batch_prompts]
            _sync(c.device)
            t0 = time.perf_counter()
            texts, batch_plans, t = fn(batch, prompts.samples, 1000 * s + b, setup.generate_kwargs)
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
    logger.info("%-8s %-40s %7.1f s  e.g. %r", prompts.name, name, wall, groups[0][0][:70])
    return SystemRun(name, family, params, groups, stacked, wall, timings, cpu)


def steering_vector(setup: Setup, layer: int, constraint=None) -> SteeringVector:
    """The control's (or ``constraint``'s) steering vector at one layer.

    Example:
        >>> from dglm.bench.config import BenchConfig
        >>> from dglm.bench.setup import build_setup
        >>> config = BenchConfig.for_quick(fudge_strengths=[], peer_texts_per_class=12)
        >>> setup = build_setup(config)
        >>> vec = steering_vector(setup, 1)
        >>> vec.layers, tuple(vec.directions[1].shape)
        ([1], (32,))
        >>> steering_vector(setup, 0, parse_constraint("-topic('sports')")).layers
        [0]
    """
    return constraint_vector(constraint or setup.constraint, setup.peers.banks, [layer])


def pick_steering_layer(setup: Setup, score: Callable, dev: PromptSet | None = None,
                        ) -> tuple[int | None, list[dict]]:
    """The steering layer: over the candidate layers and every strength r, on ``dev`` (default: the
    development neutral openers, from the validation split, never the test prompts), the layer with the
    highest control success at perplexity within ``ppl_limit`` of plain decoding on those prompts (ties: lower
    perplexity). ``score(prompt_set, run) -> (success, perplexity)``. Returns (layer, table).

    Example (quick mode: candidate layers 0 and 1, one multiplier):
        >>> from dglm.bench.config import BenchConfig
        >>> from dglm.bench.scoring import success_and_ppl
        >>> from dglm.bench.setup import build_setup
        >>> config = BenchConfig.for_quick(fudge_strengths=[], peer_texts_per_class=12, new_tokens=4,
        ...                                min_new_tokens=4)
        >>> setup = build_setup(config)
        >>> def score(prompts, run):
        ...     return success_and_ppl(setup, prompts, run)
        >>> layer, table = pick_steering_layer(setup, score)
        >>> layer in (0, 1), [(row["layer"], row["scale"]) for row in table]
        (True, [(0, 0.5), (1, 0.5)])
    """
    c = setup.config
    if not c.steering_scales or not setup.peers.banks:
        return None, []
    prompts = dev or setup.dev_sets.get("neutral") or next(iter(setup.dev_sets.values()))
    make = Factory(setup)
    limit = c.steering_pick_prompts
    _, ppl0 = score(prompts, run_system(setup, prompts, "plain", "plain", {}, make.plain(), limit))
    scales = sorted(c.steering_scales)
    table = []
    for layer in sorted(set(c.steering_layers)):
        vec = steering_vector(setup, layer)
        for scale in scales:
            run = run_system(setup, prompts, f"steering layer={layer} scale={scale:g}", "steering", {}, make.steering(
                vec, scale), limit)
            success, ppl = score(prompts, run)
            table.append({"layer": layer, "scale": scale, "control_success": success, "perplexity": ppl,
                          "plain_perplexity": ppl0})

    def key(row):
        ok = ppl0 is None or row["perplexity"] is None or row["perplexity"] <= c.ppl_limit * ppl0
        return (ok, row["control_success"] or 0.0, -(row["perplexity"] or 0.0))
    best = max(table, key=key)
    return best["layer"], table


def run_systems(setup: Setup, prompts: PromptSet, layer: int | None) -> list[SystemRun]:
    """Every system on one prompt set, in the order plain, dglm (sigma^2 levels), dglm (plan_scale), dglm-guided
    (strengths, then each plan_scale and control_scale over them), steering, fudge, prompting, best-of-n (N matched
    to each DGLM-guided variant's mean :func:`cost` over its strengths, rounded up).

    Example (a few systems on the quick neutral openers):
        >>> from dglm.bench.config import BenchConfig
        >>> from dglm.bench.setup import build_setup
        >>> config = BenchConfig.for_example(plan_scales=[],
        ...                                  guided_plan_scales=[], guided_control_scales=[],
        ...                                  prompt_styles=["header"], bon_extra_n=[])
        >>> setup = build_setup(config)
        >>> runs = run_systems(setup, setup.prompt_sets["neutral"], layer=None)
        >>> [run.family for run in runs]  # dglm at the sweep's sigma2 (1) and at the checkpoint's
        ['plain', 'dglm', 'dglm', 'dglm-guided', 'prompting', 'dglm-guided+prompting', 'best-of-n']
        >>> runs[3].name, [len(g) for g in runs[3].continuations]
        ('dglm-guided strength=100', [2, 2])
    """
    c, pipe = setup.config, setup.pipeline
    make = Factory(setup)
    s2, w0, v0 = pipe.sampling.sigma2, pipe.sampling.plan_scale, pipe.sampling.control_scale

    def go(name, family, params, fn):
        runs.append(run_system(setup, prompts, name, family, params, fn))
        return runs[-1]

    runs: list[SystemRun] = []
    go("plain", "plain", {}, make.plain())
    for level in sorted({*c.sigma2, s2}):
        go(f"dglm sigma2={level:g}", "dglm", {"sigma2": level, "strength": 0.0, "plan_scale": w0}, make.dglm(level))
    for w in sorted(set(c.plan_scales) - {w0}):
        go(f"dglm plan_scale={w:g}", "dglm-plan-scale", {"sigma2": s2, "strength": 0.0, "plan_scale": w},
           make.dglm(s2, w))
    variants = [(w0, v0, "")] + [(w, 1.0, f" plan_scale={w:g}") for w in sorted(set(c.guided_plan_scales) - {w0})] \
        + [(1.0, v, f" control_scale={v:g}") for v in sorted(set(c.guided_control_scales) - {v0})]
    guided_walls: dict[str, list[float]] = {}
    for w, v, suffix in variants:
        for lam in c.strengths:
            r = go(f"dglm-guided strength={lam:g}{suffix}", "dglm-guided",
                   {"strength": lam, "sigma2": s2, "plan_scale": w, "control_scale": v}, make.guided(lam, w, v))
            guided_walls.setdefault("dglm-guided" + suffix, []).append(cost(r, c.device))
    if layer is not None:
        vec = steering_vector(setup, layer)
        for scale in c.steering_scales:
            go(f"steering scale={scale:g}", "steering", {"layer": layer, "scale": scale}, make.steering(vec, scale))
    if setup.peers.discriminators:
        for lam in c.fudge_strengths:
            go(f"fudge strength={lam:g}", "fudge", {"strength": lam, "top_k": c.fudge_top_k}, make.fudge(lam))
    for style in c.prompt_styles:
        go(f"prompting {style}", "prompting", {"style": style, "subject": subject(setup)}, make.prompting(style))
    for style in c.guided_prompt_styles:
        for lam in c.strengths:
            go(f"dglm-guided strength={lam:g} + prompting {style}", "dglm-guided+prompting",
               {"strength": lam, "sigma2": s2, "style": style, "subject": subject(setup)},
               make.guided(lam, style=style))
    plain_wall = cost(runs[0], c.device)
    matched: dict[int, list[str]] = {}
    if c.bon_n is None:
        for variant, walls in guided_walls.items():
            matched.setdefault(max(1, math.ceil(float(np.mean(walls)) / plain_wall)), []).append(variant)
    elif c.bon_n:
        matched[c.bon_n] = []
    for n in sorted(set(matched) | set(c.bon_extra_n)):
        go(f"best-of-{n}", "best-of-n", {"n": n, "matched_to": matched.get(n, []), "primary": n in matched},
           make.bon(n))
    return runs


def run_compositions(setup: Setup, layer: int | None) -> list[dict]:
    """Each composed control (``config.compositions``) on the neutral openers: plain decoding, guided DGLM at
    ``composition_strengths`` and activation steering (the sum of the terms' vectors, at ``layer``) at
    ``composition_scales``. Returns ``[{"control", "targets", "runs": [SystemRun]}]`` (scored by the caller).

    Example:
        >>> from dglm.bench.config import BenchConfig
        >>> from dglm.bench.setup import build_setup
        >>> config = BenchConfig.for_example(compositions=["topic('sports') + sentiment.positive()"])
        >>> setup = build_setup(config)
        >>> [comp] = run_compositions(setup, layer=None)
        >>> comp["targets"], [run.name for run in comp["runs"]]  # doctest: +NORMALIZE_WHITESPACE
        ([('topic', 'sports'), ('sentiment', 'positive')], ['plain', 'dglm-guided strength=100',
          'prompting instruction', 'dglm-guided strength=100 + prompting instruction'])
    """
    from dglm.bench.setup import control_targets

    c = setup.config
    prompts = setup.prompt_sets.get("neutral")
    if prompts is None or not c.compositions or "composition" not in c.tasks:
        return []
    make = Factory(setup)
    plain = run_system(setup, prompts, "plain", "plain", {}, make.plain())
    out = []
    for text in c.compositions:
        constraint = parse_constraint(text)
        runs = [plain]
        for lam in c.composition_strengths:
            runs.append(run_system(setup, prompts, f"dglm-guided strength={lam:g}", "dglm-guided", {"strength": lam},
                                   make.guided(lam, constraint=constraint)))
        if "instruction" in c.prompt_styles:
            runs.append(run_system(setup, prompts, "prompting instruction", "prompting", {"style": "instruction"},
                                   make.prompting("instruction", constraint)))
        for style in c.guided_prompt_styles:
            for lam in c.composition_strengths:
                runs.append(run_system(setup, prompts, f"dglm-guided strength={lam:g} + prompting {style}",
                                       "dglm-guided+prompting", {"strength": lam, "style": style},
                                       make.guided(lam, constraint=constraint, style=style)))
        if layer is not None and setup.peers.banks:
            vec = steering_vector(setup, layer, constraint)
            for scale in c.composition_scales:
                runs.append(run_system(setup, prompts, f"steering scale={scale:g}", "steering",
                                       {"layer": layer, "scale": scale}, make.steering(vec, scale)))
        out.append({"control": text, "targets": control_targets(constraint), "runs": runs})
    return out


def runtime_table(setup: Setup, layer: int | None, bon_n: int | None) -> dict:
    """Seconds per call and relative to plain decoding, per (batch size, new tokens) and system: exactly
    ``new tokens`` tokens each (eos suppressed), one sample per prompt, after one untimed warm-up call per
    system. A system's longer cells are skipped once a cell took more than ``runtime_cell_limit_s / 2``.

    Example (quick mode: batch 2, 8 new tokens):
        >>> from dglm.bench.config import BenchConfig
        >>> from dglm.bench.setup import build_setup
        >>> config = BenchConfig.for_example(prompt_styles=["header"])
        >>> setup = build_setup(config)
        >>> table = runtime_table(setup, layer=None, bon_n=None)
        >>> table["systems"]  # guided at the checkpoint's strength
        ['plain', 'dglm', 'dglm-guided strength=20', 'prompting header']
        >>> cells = table["cells"]
        >>> [(cell["batch"], cell["new_tokens"]) for cell in cells][:2], cells[0]["relative"]
        ([(2, 8), (2, 8)], 1.0)
    """
    c, pipe = setup.config, setup.pipeline
    make = Factory(setup)
    lam = pipe.sampling.strength
    systems = {"plain": make.plain(), "dglm": make.dglm(pipe.sampling.sigma2),
               f"dglm-guided strength={lam:g}": make.guided(lam)}
    if bon_n:
        systems[f"best-of-{bon_n}"] = make.bon(bon_n)
    if setup.peers.discriminators and c.fudge_strengths:
        systems[f"fudge strength={c.fudge_strengths[0]:g}"] = make.fudge(c.fudge_strengths[0])
    if layer is not None and c.steering_scales:
        systems[f"steering scale={c.steering_scales[0]:g}"] = make.steering(steering_vector(setup, layer),
                                                                            c.steering_scales[0])
    if c.prompt_styles:
        systems[f"prompting {c.prompt_styles[0]}"] = make.prompting(c.prompt_styles[0])
    pool = [p for s in setup.prompt_sets.values() for p in s.prompts]
    base = dict(setup.generate_kwargs)
    for fn in systems.values():  # warm-up: first-call costs (allocations, lazy init) are not timed
        fn(pool[:1], 1, 0, {**base, "max_new_tokens": 2, "min_new_tokens": 2})
    cells = []
    for batch in c.runtime_batch_sizes:
        prefixes = (pool * math.ceil(batch / len(pool)))[:batch]
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
        "exactly new_tokens tokens per row (eos suppressed); one sample per prompt (prompts of both sets); wall "
        "time (and, as 'CPU', process CPU time over all threads, robust to other load on the machine); median of "
        f"{c.runtime_repeats} timed call(s) after an untimed warm-up; DGLM uses the checkpoint's default steps "
        f"({c.steps or pipe.sampling.steps}) and sigma^2")}
