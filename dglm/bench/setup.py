"""What every system of the benchmark shares: the pipeline, the prompt sets, the control, the evaluators, and
the peers' supervision (steering vectors' activations and FUDGE's discriminators, from the labelled passages
the probes were trained on).

Example:
    >>> setup = build_setup(BenchConfig.for_quick())          # doctest: +SKIP
    >>> sorted(setup.prompt_sets)                             # doctest: +SKIP
    ['neutral', 'topical']
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field

import torch

from dglm.bench.config import RANDOM, BenchConfig
from dglm.bench.evaluators import (
    EvaluatorLM,
    MissingEvaluatorError,
    corpus_topic_texts,
    default_control_evaluators,
    quick_topic_classifier,
    quick_topic_texts,
    train_topic_classifier,
)
from dglm.bench.fudge import PrefixDiscriminator
from dglm.bench.metrics import ControlEvaluator
from dglm.bench.prompts import held_out_windows, neutral_openers
from dglm.bench.steering import LabelledActivations, mean_activations, residual_norms
from dglm.constraints import Constraint, Probe, ProbeRegistry, parse_constraint
from dglm.constraints.builtin import BINARY_BUILTINS, Target
from dglm.pipeline import DGLM

logger = logging.getLogger(__name__)

NOT = "not "  # a target label "not sports": the evaluator puts the text in any class but sports


@dataclass
class PromptSet:
    """One set of prompts: ``samples`` continuations per prompt and seed; ``references`` (prefixes,
    continuations) of held-out text for MAUVE (topical set only); ``description`` says where they come from.

    Example:
        >>> openers = PromptSet("neutral", ["The house", "In 1923 the"], 2, "first words of test documents")
        >>> len(openers.prompts) * openers.samples, openers.references
        (4, None)
    """

    name: str
    prompts: list[str]
    samples: int
    description: str
    references: tuple[list[str], list[str]] | None = None


@dataclass
class Peers:
    """The peers' supervision: per probe name, the labelled passages' mean decoder activations at the
    candidate steering layers, and FUDGE's prefix discriminator; ``info`` records sizes and accuracies.

    Example (usually made by :func:`build_peers`):
        >>> bank = LabelledActivations(torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]]), ["sports", "arts"], [1])
        >>> peers = Peers(banks={"topic": bank})
        >>> peers.banks["topic"].vector("sports").directions, peers.discriminators
        ({1: tensor([ 1., -1.])}, {})
    """

    banks: dict[str, LabelledActivations] = field(default_factory=dict)
    discriminators: dict[str, PrefixDiscriminator] = field(default_factory=dict)
    info: dict = field(default_factory=dict)


@dataclass
class Setup:
    """What every system shares: the pipeline, the prompt sets, the control and the evaluators.

    Example (usually made by :func:`build_setup`):
        >>> config = BenchConfig.for_example()
        >>> setup = build_setup(config)
        >>> setup.targets, sorted(setup.prompt_sets), setup.generate_kwargs["max_new_tokens"]
        ([('topic', 'sports')], ['avoidance', 'neutral', 'topical'], 4)
    """

    config: BenchConfig
    pipeline: DGLM
    constraint: Constraint  # as parsed (unresolved)
    resolved: Constraint  # resolved against the pipeline's encoder and probes
    targets: list[tuple[str, str]]  # (evaluator name, label) that define control success
    prompt_sets: dict[str, PromptSet]
    evaluator_lm: EvaluatorLM | None
    evaluators: dict[str, ControlEvaluator]
    notes: list[str] = field(default_factory=list)
    evaluator_info: dict = field(default_factory=dict)
    topic_texts: tuple[str, list[str]] | None = None  # (target topic, human texts of it) for the switch reference
    peers: Peers = field(default_factory=Peers)
    requests: dict[str, str] = field(default_factory=dict)  # prompting style -> what it asks (default: the control's)
    dev_sets: dict[str, PromptSet] = field(default_factory=dict)  # validation-split prompts: steering's layer pick
    style_data: dict | None = None  # style task: {split: (texts, labels)}

    @property
    def generate_kwargs(self) -> dict:
        """The decoding settings from the config (sampling, top-p, repetition penalty, token counts).

        Example:
            >>> config = BenchConfig.for_example()
            >>> setup = build_setup(config)
            >>> kwargs = setup.generate_kwargs
            >>> kwargs["do_sample"], kwargs["top_p"], kwargs["max_new_tokens"], kwargs["min_new_tokens"]
            (True, 0.9, 4, 4)
        """
        c = self.config
        kwargs = dict(do_sample=True, top_p=c.top_p, repetition_penalty=c.repetition_penalty,
                      max_new_tokens=c.new_tokens)
        if c.min_new_tokens:
            kwargs["min_new_tokens"] = c.min_new_tokens
        return kwargs


def with_plan_temperature(pipe: DGLM, plan_temperature: float | None) -> DGLM:
    """``pipe`` with its default plan temperature replaced (None: unchanged), for every system of a run.

    Example:
        >>> from dglm.presets import random_pipeline
        >>> with_plan_temperature(random_pipeline("tiny"), 0.5).sampling.plan_temperature
        0.5
    """
    if plan_temperature is not None:
        pipe.sampling = pipe.sampling.merge(plan_temperature=plan_temperature)
    return pipe


def load_pipeline(config: BenchConfig) -> tuple[DGLM, list[str]]:
    """The checkpoint, or a random-weight preset with random probes "topic" (arts, society, sports),
    "sentiment" and "toxicity".

    Example:
        >>> pipe, notes = load_pipeline(BenchConfig.for_quick())
        >>> pipe.probes.names, pipe.probes.get("topic").labels
        (('sentiment', 'topic', 'toxicity'), ('arts', 'society', 'sports'))
        >>> notes[0][:45]
        "pipeline: random weights of the 'tiny' preset"
    """
    if not config.checkpoint.startswith(RANDOM):
        pipe = DGLM.from_pretrained(config.checkpoint, device=config.device)
        return with_plan_temperature(pipe, config.plan_temperature), []
    from dglm.presets import random_pipeline

    preset = config.checkpoint.removeprefix(RANDOM)
    pipe = with_plan_temperature(random_pipeline(preset, device=config.device), config.plan_temperature)
    g = torch.Generator().manual_seed(0)
    labels = {"topic": ("arts", "society", "sports"), **{k: v[:2] for k, v in BINARY_BUILTINS.items()}}
    probes = {name: Probe(torch.randn(len(ls) if len(ls) > 2 else 1, pipe.encoder.dim, generator=g) * 3,
                          torch.zeros(len(ls) if len(ls) > 2 else 1), ls, pipe.encoder.identity, name=name)
              for name, ls in labels.items()}
    pipe.probes = ProbeRegistry(pipe.encoder, probes)
    return pipe, [f"pipeline: random weights of the {preset!r} preset with random probes; every number measures "
                  f"code paths and speed, not quality"]


def control_targets(constraint: Constraint) -> list[tuple[str, str]]:
    """(evaluator name, label) for each term of a built-in constraint: ``toxicity.low()`` ->
    ``("toxicity", "non-toxic")``; terms with no independent evaluator are left out.

    Example:
        >>> control_targets(parse_constraint("toxicity.low() + topic('sports')"))
        [('toxicity', 'non-toxic'), ('topic', 'sports')]
        >>> control_targets(parse_constraint("-topic('sports')"))
        [('topic', 'not sports')]
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
        else:  # a negated class of a multi-class probe: success is "any other class"
            out.append((leaf.probe, NOT + leaf.label))
    return out


def _evaluator_lm(config: BenchConfig, pipe: DGLM, notes: list[str], info: dict) -> EvaluatorLM | None:
    if config.evaluator_lm == "decoder":
        notes.append("evaluator LM: the decoder itself (quick mode): perplexity and MAUVE are NOT independent")
        lm = EvaluatorLM(pipe.decoder.model, pipe.decoder.tokenizer,
                         f"the decoder itself ({pipe.decoder.config.name_or_path})", independent=False)
    else:
        try:
            lm = EvaluatorLM.from_pretrained(config.evaluator_lm, device=config.device,
                                             dtype=getattr(torch, config.evaluator_dtype))
        except (MissingEvaluatorError, OSError) as e:
            notes.append(f"evaluator LM {config.evaluator_lm!r} skipped: {e}")
            return None
    info["evaluator_lm"] = (f"{lm.name}: perplexity of the continuation given the prefix, and MAUVE features "
                            f"(last-token final hidden state of prefix + continuation)"
                            + ("; a proxy for the reference's OLMo-1B (perplexity) and GPT-2-large (MAUVE)"
                               if lm.independent else "; NOT independent of the decoder"))
    return lm


NEUTRAL_TASKS = {"neutral", "graded", "style", "composition"}  # the tasks on neutral openers


def needed_sets(config: BenchConfig) -> list[str]:
    """The prompt sets the chosen tasks use: ``neutral`` (openers), ``topical`` (continuation),
    ``avoidance`` (prefixes of the avoided topic).

    Example:
        >>> needed_sets(BenchConfig(tasks=["continuation", "style"]))
        ['neutral', 'topical']
    """
    tasks = set(config.tasks)
    return [name for name, need in (("neutral", tasks & NEUTRAL_TASKS), ("topical", "continuation" in tasks),
                                    ("avoidance", "avoidance" in tasks)) if need]


def _topic_prefixes(docs, tokenizer, label: str, num: int, config: BenchConfig, seed: int) -> list[str]:
    """Up to ``num`` prefixes of documents of topic ``label``: windows starting at each sentence start."""
    from dataclasses import replace as dc_replace

    from dglm.bench.prompts import _SENTENCE_START
    from dglm.data.probe_data import topic_of

    pieces = []
    for d in docs:
        if topic_of(d) == label:
            pieces += [dc_replace(d, text=d.text[m.start():]) for m in _SENTENCE_START.finditer(d.text)]
    prefixes, _ = held_out_windows(pieces, tokenizer, num, config.prefix_tokens, config.new_tokens, seed=seed)
    return prefixes


def prompt_sets(config: BenchConfig, pipe: DGLM, topic_label: str | None, topic_eval,
                dev: bool = False) -> dict[str, PromptSet]:
    """The prompt sets the tasks need (:func:`needed_sets`, see :mod:`dglm.bench.prompts`) from the test
    split; ``dev=True``: the same kinds from the validation split, for choices made before the test
    (steering's layer), ``steering_pick_prompts`` of each. Quick mode uses random word sequences.

    Example (quick mode reads neither the pipeline nor a topic evaluator):
        >>> config = BenchConfig.for_quick(num_neutral=3, num_prompts=2, prefix_tokens=4)
        >>> sets = prompt_sets(config, None, None, None)
        >>> {name: (len(s.prompts), s.samples) for name, s in sets.items()}
        {'neutral': (3, 2), 'topical': (2, 2), 'avoidance': (4, 1)}
        >>> [len(p.split()) for p in sets["topical"].prompts], len(sets["topical"].references[0])
        ([4, 4], 4)
    """
    out = {}
    need = needed_sets(config)
    avoid_label = dict(control_targets(parse_constraint(config.avoidance_control))).get("topic", "")
    avoid_label = avoid_label.removeprefix(NOT)
    n_neutral, n_topical, n_avoid = ((config.steering_pick_prompts,) * 3 if dev else
                                     (config.num_neutral, config.num_prompts, config.num_avoidance))
    if config.quick:
        from dglm.presets import random_texts

        window = config.prefix_tokens + config.new_tokens
        seed = config.seeds[0] + (100 if dev else 0)
        texts = random_texts(max(n_topical, config.num_references), window, seed=seed)
        windows = [" ".join(t.split()[:config.prefix_tokens]) for t in texts]
        conts = [" " + " ".join(t.split()[config.prefix_tokens:]) for t in texts]
        openers = [" ".join(t.split()[:3]) for t in random_texts(n_neutral, 3, seed=seed + 1)]
        avoid = [" ".join(t.split()[:config.prefix_tokens]) for t in
                 quick_topic_texts(avoid_label or "sports", n_avoid, seed)]
        neutral_info = topical_info = avoid_info = "quick mode: random word sequences"
    else:
        from dglm.data.corpus import load_split
        from dglm.data.probe_data import topic_of

        split = "validation" if dev else "test"
        docs = load_split(config.corpus, split)
        windows, conts, topical_info = [], [], ""
        if "topical" in need:
            windows, conts = held_out_windows(docs, pipe.decoder.tokenizer, max(n_topical, config.num_references),
                                              config.prefix_tokens, config.new_tokens, seed=config.seeds[0])
            if len(windows) < n_topical:
                raise ValueError(f"num_prompts={n_topical}: the {split} split of {config.corpus} has only "
                                 f"{len(windows)} documents long enough")
            topical_info = (f"{config.corpus} {split} split: first {config.prefix_tokens + config.new_tokens}-token "
                            f"window of {n_topical} documents (seeded choice), prefix of up to "
                            f"{config.prefix_tokens} tokens ending at a word boundary; MAUVE references: the next "
                            f"{config.new_tokens} tokens of these and of further {split} documents, "
                            f"{min(len(windows), config.num_references)} in all")
        openers, neutral_info = [], ""
        if "neutral" in need:
            banned = [topic_label.rstrip("s"), *topic_label.split("_")] if topic_label else []

            def flagged(texts):  # openers the topic evaluator already puts in the target topic
                return topic_eval.score(texts, topic_label).success if topic_label and topic_eval else [False] * len(texts)

            openers = neutral_openers(docs, n_neutral, seed=config.seeds[0],
                                      exclude_doc=(lambda d: topic_of(d) == topic_label) if topic_label else None,
                                      banned=banned, exclude_text=flagged)
            neutral_info = (f"{config.corpus} {split} split: the first 2-5 words of documents and of their sentences "
                            f"(seeded), at most 2 per document, deduplicated; none from a {topic_label!r} document, "
                            f"containing {banned}, or classified {topic_label!r} by the topic evaluator"
                            if topic_label else f"first 2-5 words of {split} documents and sentences")
        avoid, avoid_info = [], ""
        if "avoidance" in need:
            avoid = _topic_prefixes(docs, pipe.decoder.tokenizer, avoid_label, n_avoid, config, config.seeds[0])
            if not avoid:
                raise ValueError(f"avoidance_control={config.avoidance_control!r}: no {split} document of topic "
                                 f"{avoid_label!r} is long enough for a prefix")
            avoid_info = (f"{config.corpus} {split} split: {len(avoid)} prefixes of up to {config.prefix_tokens} "
                          f"tokens starting at sentence starts of the {avoid_label!r} documents (several per "
                          f"document)")
    if "neutral" in need:
        out["neutral"] = PromptSet("neutral", openers[:n_neutral], config.neutral_samples, neutral_info)
    if "topical" in need:
        out["topical"] = PromptSet("topical", windows[:n_topical], config.num_samples, topical_info,
                                   (windows[:config.num_references], conts[:config.num_references]))
    if "avoidance" in need:
        out["avoidance"] = PromptSet("avoidance", avoid[:n_avoid], config.avoidance_samples, avoid_info)
    return out


def build_setup(config: BenchConfig, pipeline: DGLM | None = None) -> Setup:
    """Load the pipeline (unless given), prompt sets, evaluators and peers' supervision; resolve the control.

    Example (the ``--quick`` settings, without steering and FUDGE):
        >>> config = BenchConfig.for_example()
        >>> setup = build_setup(config)
        >>> setup.targets, list(setup.evaluators), setup.evaluator_lm.independent
        ([('topic', 'sports')], ['toxicity', 'sentiment', 'topic', 'style'], False)
        >>> setup.topic_texts[0], len(setup.topic_texts[1]), setup.peers.banks
        ('sports', 8, {})
    """
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
    info: dict = {}
    lm = _evaluator_lm(config, pipe, notes, info)
    topic = None
    try:
        topic = quick_topic_classifier() if config.topic_classifier == "quick" else train_topic_classifier(config.corpus)
        info["topic"] = {"description": topic.description, **topic.validation}
    except (FileNotFoundError, ImportError) as e:
        notes.append(f"topic evaluator skipped: {e}")
    evaluators, skipped = default_control_evaluators(topic)
    notes += skipped
    style_data = _style(config, pipe, evaluators, info, notes) if "style" in config.tasks else None
    for name, label in targets:
        if name not in evaluators:
            notes.append(f"control target {name}={label!r}: no evaluator available, not scored")
    for name, ev in evaluators.items():
        info.setdefault(name, {"description": ev.description})
        info[name]["independent_of_probe"] = _independent(ev, pipe.probes, name)
        if not info[name]["independent_of_probe"]:
            notes.append(f"{name}: the checkpoint's {name!r} probe was trained on labels from this very evaluator "
                         f"({ev.description}); control success for a {name} constraint is NOT independent of the "
                         f"steering probe (nor of the peers' supervision, the same labelled texts)")
    topic_label = dict(targets).get("topic")
    sets = prompt_sets(config, pipe, topic_label, topic)
    info["prompts"] = {name: s.description for name, s in sets.items()}
    topic_texts = None
    if topic_label is not None and lm is not None and topic is not None and "topical" in sets:
        texts = quick_topic_texts(topic_label, 8, config.seeds[0]) if config.quick else \
            corpus_topic_texts(config.corpus, topic_label, pipe.decoder.tokenizer, config.new_tokens)
        if texts:
            topic_texts = (topic_label, texts)
        else:
            notes.append(f"topic-switch reference skipped: no test document of topic {topic_label!r}")
    setup = Setup(config, pipe, constraint, resolved, targets, sets, lm, evaluators, notes, info, topic_texts,
                  style_data=style_data)
    if config.steering_scales:
        setup.dev_sets = prompt_sets(config, pipe, topic_label, topic, dev=True)
        info["dev_prompts"] = {name: s.description for name, s in setup.dev_sets.items()}
    setup.peers = build_peers(setup)
    logger.info("setup in %.1f s: %s, control %s -> %s", time.perf_counter() - t0,
                {k: len(s.prompts) for k, s in sets.items()}, config.control, targets)
    return setup


def _style(config: BenchConfig, pipe: DGLM, evaluators: dict, info: dict, notes: list[str]) -> dict | None:
    """The style task's data (:mod:`dglm.bench.style`): its independent evaluator joins ``evaluators`` and
    the style probe, fitted in one line on the probe split, joins the pipeline's probes. None (and a note)
    when the data is missing."""
    from dglm.bench.style import PROBE_NAME, fit_style_evaluator, quick_style_data, read_style_data

    try:
        data = quick_style_data() if config.quick else read_style_data(config.style_data)
    except FileNotFoundError as e:
        notes.append(f"style task skipped: {e}")
        return None
    ev = fit_style_evaluator(*data["evaluator"], validation=data["check"])
    evaluators["style"] = ev
    info["style"] = {"description": ev.description, **ev.validation}
    probe = Probe.fit(*data["probe"], encoder=pipe.encoder, name=PROBE_NAME)  # the one line a user writes
    if pipe.probes is None:
        pipe.probes = ProbeRegistry(pipe.encoder)
    pipe.probes.add(PROBE_NAME, probe)
    info["style"]["probe"] = {"texts": len(data["probe"][0]), "fit": "Probe.fit(texts, labels, encoder, name='style')",
                              "train_accuracy": probe.provenance.get("train_accuracy")}
    return data


def _independent(evaluator: ControlEvaluator, probes: ProbeRegistry | None, name: str) -> bool:
    """False when the registry's probe of that name records this evaluator as its label source."""
    if probes is None or name not in probes or not evaluator.label_source_keywords:
        return True
    provenance = json.dumps(probes.get(name).provenance).lower()
    return not any(k in provenance for k in evaluator.label_source_keywords)


# ----------------------------------------------------------------------------------------------- peers

_QUICK_WORDS = {"sentiment": {"positive": "good great love win happy", "negative": "bad war lost sad night"},
                "toxicity": {"toxic": "bad war lost night", "non-toxic": "good peace love song"}}


def labelled_passages(config: BenchConfig, probe: str, split: str = "train") -> tuple[list[str], list[str]]:
    """The labelled passages behind a shipped probe, made as recipes/train_probes.py makes them
    (:mod:`dglm.data.probe_data`), at most ``peer_texts_per_class`` per class (quick mode: synthetic).

    Example:
        >>> texts, labels = labelled_passages(BenchConfig.for_quick(peer_texts_per_class=10), "sentiment")
        >>> len(texts), sorted(set(labels)), len(texts[0].split())
        (10, ['negative', 'positive'], 8)
    """
    k = config.peer_texts_per_class
    if probe == "style":
        from dglm.bench.style import quick_style_data, read_style_data

        data = quick_style_data() if config.quick else read_style_data(config.style_data)
        texts, labels = data["probe" if split == "train" else "check"]
        keep = [i for label in sorted(set(labels)) for i in [j for j, x in enumerate(labels) if x == label][:k]]
        return [texts[i] for i in keep], [labels[i] for i in keep]
    if config.quick:
        import random

        rng = random.Random(f"{probe}:{split}")
        if probe == "topic":
            pairs = [(t, label) for label in ("arts", "society", "sports") for t in quick_topic_texts(label, k // 3)]
        else:
            pairs = [(" ".join(rng.choices(words.split(), k=8)), label)
                     for label, words in _QUICK_WORDS[probe].items() for _ in range(k // 2)]
        return [t for t, _ in pairs], [label for _, label in pairs]
    from dglm.data import probe_data as pd
    from dglm.data.corpus import load_split

    docs = load_split(config.corpus, split)
    if probe == "topic":
        examples = pd.topic_examples(docs, per_class=k, seed=0)
    elif probe == "sentiment":
        examples, _ = pd.sentiment_examples(docs, per_class=k, seed=0)
    elif probe == "toxicity":
        from dglm.data.wordnet import read_wordnet_nouns, wordnet_lexicons

        lexicons = wordnet_lexicons(read_wordnet_nouns())
        examples, _ = pd.toxicity_examples(docs, lexicons, held_out=split != "train", seed=0,
                                           sizes={"corpus": k, "template": k, "spliced": k // 2})
    else:
        raise ValueError(f"probe={probe!r}: labelled passages are known for topic, sentiment and toxicity")
    return [e.text for e in examples], [e.label for e in examples]


def _cached_activations(config: BenchConfig, decoder, probe: str, texts: list[str]) -> torch.Tensor:
    """:func:`mean_activations` of ``texts``, kept in ``<corpus>/../bench-activations/`` (safetensors, keyed by
    the decoder, the layers and the texts) so that runs split by task compute them once (not in quick mode)."""
    if config.quick:
        return mean_activations(decoder, texts, config.steering_layers)
    import hashlib
    from pathlib import Path

    from safetensors.torch import load_file, save_file

    key = hashlib.sha256(json.dumps([str(getattr(decoder.model.config, "_name_or_path", "")), config.checkpoint,
                                     sorted(set(config.steering_layers)), texts]).encode()).hexdigest()[:16]
    path = Path(config.corpus).parent / "bench-activations" / f"{probe}-{key}.safetensors"
    if path.is_file():
        logger.info("steering activations of %s from %s", probe, path)
        return load_file(str(path))["activations"]
    acts = mean_activations(decoder, texts, config.steering_layers)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        save_file({"activations": acts.contiguous()}, str(tmp))
        tmp.replace(path)
    except OSError as e:  # a cache: not writing it loses nothing
        logger.info("steering activations not cached: %s", e)
    return acts


def build_peers(setup: Setup) -> Peers:
    """Steering activations for every probe the control and the compositions use (when steering runs), and a
    FUDGE discriminator for each probe of the control (when FUDGE runs): token features chosen between the
    decoder's input embeddings and one-hot tokens by held-out balanced accuracy on 8-token prefixes.

    Example (steering activations at decoder blocks 0 and 1 for the control's probe, no FUDGE):
        >>> config = BenchConfig.for_quick(fudge_strengths=[], peer_texts_per_class=12)
        >>> setup = build_setup(config)
        >>> peers = build_peers(setup)
        >>> bank = peers.banks["topic"]
        >>> tuple(bank.activations.shape), bank.layers, peers.info["topic"]["steering"]["per_class"]
        ((12, 2, 32), [0, 1], {'arts': 4, 'society': 4, 'sports': 4})
    """
    c, dec = setup.config, setup.pipeline.decoder
    peers = Peers()
    # the main control steers the neutral, continuation and graded tasks and the layer pick of compositions
    controls = [setup.constraint] if set(c.tasks) & {"neutral", "continuation", "graded", "composition"} else []
    if "avoidance" in c.tasks:
        controls.append(parse_constraint(c.avoidance_control))
    if "style" in c.tasks and setup.style_data is not None:
        from dglm.bench.style import CONTROL

        controls.append(parse_constraint(CONTROL))
    probes = {leaf.probe for ctl in controls for leaf, _ in ctl.terms() if isinstance(leaf, Target)}
    steer_probes = set(probes)
    for text in (c.compositions if "composition" in c.tasks else []):
        steer_probes |= {leaf.probe for leaf, _ in parse_constraint(text).terms() if isinstance(leaf, Target)}
    cache: dict[str, tuple[list[str], list[str]]] = {}
    norms = None
    for probe in sorted(steer_probes if c.steering_scales else set()):
        t0 = time.perf_counter()
        texts, labels = cache.setdefault(probe, labelled_passages(c, probe))
        if norms is None:  # the scale of steering strengths r: the mean residual norm at each candidate layer
            norms = residual_norms(dec, texts[::max(1, len(texts) // 64)], c.steering_layers)
            peers.info["residual_norms"] = norms
        acts = _cached_activations(c, dec, probe, texts)
        peers.banks[probe] = LabelledActivations(acts, labels, sorted(set(c.steering_layers)), norms)
        peers.info.setdefault(probe, {})["steering"] = {
            "passages": len(texts), "per_class": {k: labels.count(k) for k in sorted(set(labels))},
            "seconds": round(time.perf_counter() - t0, 1)}
        logger.info("steering activations of %d %s passages in %.0f s", len(texts), probe, time.perf_counter() - t0)
    for probe in sorted(probes if c.fudge_strengths else set()):
        t0 = time.perf_counter()
        texts, labels = cache.setdefault(probe, labelled_passages(c, probe))
        held = labelled_passages(c, probe, "validation")
        vocab = dec.model.get_output_embeddings().weight.shape[0]
        fits = [PrefixDiscriminator.fit(dec.tokenizer, texts, labels, embeddings=emb, max_tokens=c.new_tokens,
                                        held_out=held, vocab_size=vocab)
                for emb in (dec.embeddings.weight.detach().float().cpu(), None)]
        best = max(fits, key=lambda d: d.info["held_out"]["first_8_tokens"])
        peers.discriminators[probe] = best
        peers.info.setdefault(probe, {})["fudge"] = {"chosen": best.info, "candidates": [d.info for d in fits],
                                                     "seconds": round(time.perf_counter() - t0, 1)}
        logger.info("FUDGE discriminator for %s: %s in %.0f s", probe, best.info, time.perf_counter() - t0)
    return peers
