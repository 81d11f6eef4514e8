"""Golden generation: text and plans for fixed seeds, pinned before the generation path was refactored
(issue 16: one generation config, a Control value, guidance by role) and unchanged by it.

``tests/data/generation_golden.json`` holds what the code wrote before the refactor for each case below, on a
tiny random pipeline built here (its own seed and a non-zero init of the diffusion network's zero-initialised
layers, so classifier-free guidance and every other knob change the output and the golden values do not
depend on how a preset initialises them); the ``mini`` cases (slow) use the packaged checkpoint. Plans are
compared within float tolerance, texts exactly. Regenerate only on purpose, explaining the change:
``python tests/test_generation_golden.py [--mini]``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from dglm import DGLM, Controller, FunctionConstraint
from dglm.config import DGLMConfig, GenerationConfig
from dglm.constraints import near
from dglm.diffusion import SemanticDiffuser
from dglm.presets import random_decoder, random_encoder, random_texts
from dglm.prompt import PromptGenerator

GOLDEN = Path(__file__).parent / "data" / "generation_golden.json"
PREFIXES = ["the game was", "", "a river of water in the city"]
DECODE = dict(max_new_tokens=6, min_new_tokens=6)
CONFIG = DGLMConfig.model_validate({
    "encoder": {"name_or_path": "tiny-bert", "dim": 32},
    "diffusion": {"dim": 32, "num_tokens": 4, "token_features": 8, "width": 32, "depth": 2, "heads": 2},
    "prompt": {"dim": 32, "out_dim": 32, "num_soft_tokens": 4, "width": 32, "depth": 2, "heads": 2},
    "decoder": {"name_or_path": "tiny-gpt2", "hidden_size": 32},
    "sampling": {"steps": 6},
})


def tiny_pipeline() -> DGLM:
    """A random pipeline of CONFIG whose diffusion network's zero-initialised layers are made non-zero."""
    torch.manual_seed(11)
    encoder, decoder = random_encoder(CONFIG.encoder), random_decoder(CONFIG.decoder)
    diffuser, prompt = SemanticDiffuser(CONFIG.diffusion).eval(), PromptGenerator(CONFIG.prompt).eval()
    with torch.no_grad():
        for p in diffuser.parameters():
            if not p.any():  # the output layer, the null prefix and the blocks' adaptive-norm gates
                p.normal_(0, 0.2)
    encoder.fit_standardization(random_texts(32, 24, seed=11))
    return DGLM(encoder, diffuser, prompt, decoder, GenerationConfig(steps=6))


def _first_dim_low():
    return FunctionConstraint(lambda x: x[..., 0] * 10, name="first_dim_low")


def _result(out) -> dict:
    return {"continuations": out.continuations, "plans": out.plans.flatten(0, 1).tolist()}


def tiny_cases(pipe: DGLM) -> dict:
    """Each case's continuations and plans (rows x d)."""
    ctl = Controller(_first_dim_low(), pipe, strength=30.0, guidance_samples=8)
    kw = dict(DECODE, num_samples=2, seed=7)
    cases = {
        "unguided": pipe.generate(PREFIXES, **kw),
        "unguided ddim cfg sigma2": pipe.generate(PREFIXES, sampler="ddim", cfg_scale=2.5, sigma2=0.3, steps=5,
                                                  top_p=0.8, repetition_penalty=1.5, **kw),
        "unguided greedy chunked": pipe.generate(PREFIXES, batch_size=3, do_sample=False, **kw),
        "guided": ctl.generate(PREFIXES, **kw),
        "guided strength 80 chunked": ctl.generate(PREFIXES, strength=80.0, batch_size=4, **kw),
        "plan_scale": pipe.generate(PREFIXES, plan_scale=2.5, **kw),
        "control_scale": ctl.generate(PREFIXES, control_scale=3.0, **kw),
        "per-row controls": ctl.generate(PREFIXES, constraints=[None, 'near("old music")', _first_dim_low()],
                                         strength=[0.0, 40.0, 15.0], **kw),
        "per-row controls control_scale chunked": ctl.generate(
            PREFIXES, constraints=[None, 'near("old music")', None], strength=[5.0, 40.0, 15.0],
            control_scale=2.0, batch_size=2, **kw),
    }
    out = {name: _result(o) for name, o in cases.items()}
    plan = ctl.plan(PREFIXES, 2, seed=5, constraints=[near("the king"), None, None])
    out["controller plan"] = {"plans": plan.embeddings.tolist(), "soft_prompts": plan.soft_prompts.sum(-1).tolist()}
    embeds, mask = ctl.prompt_embeds(PREFIXES[:1], 2, seed=5)
    out["prompt_embeds"] = {"plans": embeds.sum(-1).tolist(), "mask": mask.tolist()}
    return out


def mini_cases(pipe: DGLM) -> dict:
    """The packaged checkpoint: unguided (without and with its max_nll redraws), guided by shipped probes, plan
    guidance, control contrast, per row."""
    ctl = Controller("toxicity.low() + topic('sports')", pipe)
    prefixes = ["The match last night", "My grandmother always said"]
    kw = dict(num_samples=2, seed=0, steps=20, max_new_tokens=16, max_nll=None)  # as pinned before max_nll
    cases = {
        "unguided": pipe.generate(prefixes, **kw),
        "max_nll (the checkpoint's)": pipe.generate(prefixes, **{**kw, "max_nll": pipe.sampling.max_nll}),
        "guided": ctl.generate(prefixes, **kw),
        "plan_scale": pipe.generate(prefixes, plan_scale=2.0, **kw),
        "control_scale": ctl.generate(prefixes, control_scale=2.0, **kw),
        "per-row controls": ctl.generate(prefixes, constraints=["sentiment.positive()", None],
                                         strength=[50.0, 0.0], **kw),
    }
    return {name: _result(o) for name, o in cases.items()}


def _check(now: dict, golden: dict, atol: float) -> None:
    assert now.keys() == golden.keys()
    for case, values in golden.items():
        assert now[case].keys() == values.keys(), case
        for key, value in values.items():
            if key in ("continuations", "mask"):
                assert now[case][key] == value, case
            else:
                torch.testing.assert_close(torch.tensor(now[case][key]), torch.tensor(value), atol=atol, rtol=0,
                                           msg=lambda m, case=case, key=key: f"{case} / {key}: {m}")


def test_tiny_generation_is_pinned():
    golden = json.loads(GOLDEN.read_text())["tiny"]
    _check(tiny_cases(tiny_pipeline()), golden, atol=1e-5)
    # The cases are not degenerate: every knob changes the text of the unguided call.
    texts = {case: str(v["continuations"]) for case, v in golden.items() if "continuations" in v}
    assert len(set(texts.values())) == len(texts)


@pytest.mark.slow
def test_mini_generation_is_pinned():
    golden = json.loads(GOLDEN.read_text())["mini"]
    _check(mini_cases(DGLM.from_pretrained("mini")), golden, atol=1e-4)


def _rounded(x):
    if isinstance(x, float):
        return round(x, 6)
    if isinstance(x, list | dict):
        return {k: _rounded(v) for k, v in x.items()} if isinstance(x, dict) else [_rounded(v) for v in x]
    return x


def write_golden(data: dict) -> None:
    """One line per case, floats to 6 decimals (well inside the tolerances above)."""
    presets = []
    for preset, cases in data.items():
        rows = ",\n".join(f"  {json.dumps(case)}: {json.dumps(_rounded(v), ensure_ascii=False)}"
                           for case, v in cases.items())
        presets.append(f" {json.dumps(preset)}: {{\n{rows}\n }}")
    GOLDEN.write_text("{\n" + ",\n".join(presets) + "\n}\n")


if __name__ == "__main__":  # regenerate (only on purpose; see the module docstring)
    data = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
    data["tiny"] = tiny_cases(tiny_pipeline())
    if "--mini" in sys.argv:
        data["mini"] = mini_cases(DGLM.from_pretrained("mini"))
    write_golden(data)
