"""Golden outputs of plan guidance and control contrast, pinned before they were batched into one pass.

``tests/data/contrast_golden.json`` was written by the two-forward implementation (a second decoder forward
per token inside the logits processor). The batched implementation (both branches as one batch inside one
``generate``) must write the same text, and its combined scores must match the reference processor's.
The golden values depend on torch's RNG and kernels; regenerate them only from the old implementation.
"""

import json
from pathlib import Path

import torch

from dglm import DGLM, Controller, FunctionConstraint
from dglm.config import PRESETS
from dglm.diffusion import SemanticDiffuser
from dglm.presets import fit_random, random_decoder, random_encoder
from dglm.prompt import PromptGenerator

GOLDEN = Path(__file__).parent / "data" / "contrast_golden.json"
PREFIXES = ["the game was", "a river of water in the city today", ""]  # different lengths and an empty one
DECODE = dict(max_new_tokens=12, min_new_tokens=12)


def _tiny_pipeline() -> DGLM:
    """``random_pipeline("tiny")`` as it was when the golden file was written: the diffusion and prompt networks
    at their training initialisation (random_pipeline now also draws their zero-initialised layers, which
    changes every text; the old two-forward implementation is gone, so the file cannot be rewritten)."""
    config = PRESETS["tiny"]
    torch.manual_seed(0)
    encoder, decoder = random_encoder(config.encoder), random_decoder(config.decoder)
    diffuser, prompt_generator = SemanticDiffuser(config.diffusion).eval(), PromptGenerator(config.prompt).eval()
    return DGLM(fit_random(encoder), diffuser, prompt_generator, decoder, config.sampling)


def _adapted(pipe):
    torch.manual_seed(1)
    for p in pipe.decoder.add_adapter(rank=4):
        torch.nn.init.normal_(p, std=0.3)
    pipe.decoder.model.eval().requires_grad_(False)
    return pipe


def golden_cases() -> dict:
    """Texts of plan guidance (no adapter) and control contrast (with an adapter), greedy and sampled, and
    of the same calls without the contrast."""
    out = {}
    for adapter in (False, True):
        pipe = _tiny_pipeline()
        if adapter:
            pipe = _adapted(pipe)
        ctl = Controller(FunctionConstraint(lambda x: x[..., 0], name="first_dim_low"), pipe, strength=30.0)
        for sampled in (False, True):
            kw = dict(DECODE, steps=4, seed=7, num_samples=2, do_sample=sampled,
                      **(dict(top_p=0.9) if sampled else {}))
            key = f"adapter={adapter} sampled={sampled}"
            if adapter:
                out[f"control_scale {key}"] = ctl.generate(PREFIXES, control_scale=3.0, **kw).continuations
                out[f"plain {key}"] = ctl.generate(PREFIXES, **kw).continuations
            else:
                out[f"plan_scale {key}"] = pipe.generate(PREFIXES, plan_scale=2.5, **kw).continuations
                out[f"plain {key}"] = pipe.generate(PREFIXES, **kw).continuations
    return out


def test_contrasts_write_the_pinned_text():
    golden = json.loads(GOLDEN.read_text())
    now = golden_cases()
    assert now.keys() == golden.keys()
    for key in golden:
        assert now[key] == golden[key], key
    # The cases are not degenerate: the contrast changes the text.
    assert golden["plan_scale adapter=False sampled=True"] != golden["plain adapter=False sampled=True"]
    assert golden["control_scale adapter=True sampled=True"] != golden["plain adapter=True sampled=True"]
