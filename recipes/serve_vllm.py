"""Decode a dglm checkpoint's controlled plans with vLLM: prompt embeddings in, the decoder adapter as LoRA.

dglm samples the plans (with constraint guidance) and builds each row's ``[prefix embeddings][soft tokens]``;
vLLM decodes them (``LLM(model=..., enable_prompt_embeds=True, enable_lora=True)``) with the checkpoint's
decoder adapter as a ``LoRARequest`` (:mod:`dglm.serving`). The vLLM model is the local folder dglm loads for
the checkpoint's decoder id, so for ``mini`` it is the same dequantised weights the checkpoint was trained
with, not the hub's.

    pip install vllm                    # on a CUDA machine; not a dglm dependency
    PYTHONPATH=. python recipes/serve_vllm.py --checkpoint mini --control "topic('sports')" \\
        --prefix "The match last night" --prefix "She opened the door" -n 4 --seed 0
    PYTHONPATH=. python recipes/serve_vllm.py --dry-run ...     # the requests only (no vLLM, runs on a CPU)

Not available through vLLM (they need HF ``generate``, see docs/integration.md): plan guidance
(``plan_scale``) and control contrast (``control_scale``), which run a second decoder forward inside a logits
processor. vLLM's samples differ from dglm's HF ``generate`` for the same seed (another sampler and kernels).
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from dglm import DGLM, Controller
from dglm.assets import resolve_decoder
from dglm.serving import vllm_requests, vllm_sampling_kwargs

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def lora_rank_bound(rank: int) -> int:
    """vLLM's ``max_lora_rank`` for an adapter of ``rank``: the next power of two, at least 8."""
    return 1 << max(3, (rank - 1).bit_length())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="mini", help="folder, packaged name or hub id")
    p.add_argument("--prefix", action="append", default=None, help="a prefix (repeat for several)")
    p.add_argument("--control", default=None, help="constraint expression; none: unguided")
    p.add_argument("--strength", type=float, default=None, help="default: the checkpoint's")
    p.add_argument("-n", "--num-samples", type=int, default=1)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: the decoder's or dglm's (32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPES), help="vLLM's and the embeddings' dtype")
    p.add_argument("--plan-device", default=None, help="where dglm plans (default: cuda if available)")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.5)
    p.add_argument("--dry-run", action="store_true", help="print the requests, do not start vLLM")
    args = p.parse_args(argv)

    prefixes = args.prefix or ["The match last night"]
    device = args.plan_device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe = DGLM.from_pretrained(args.checkpoint, device=device)
    ctl = Controller(args.control, pipe, strength=args.strength)
    overrides = {} if args.max_new_tokens is None else {"max_new_tokens": args.max_new_tokens}
    kwargs = pipe.generate_kwargs(overrides)  # the decoder's generation_config, then dglm's defaults
    plan_kwargs = {} if args.steps is None else {"steps": args.steps}
    reqs = vllm_requests(ctl, prefixes, args.num_samples, seed=args.seed, max_new_tokens=kwargs["max_new_tokens"],
                         dtype=DTYPES[args.dtype], **plan_kwargs)
    model = resolve_decoder(pipe.decoder.config.name_or_path)
    sampling = {**vllm_sampling_kwargs(kwargs), "seed": args.seed}
    if args.dry_run:
        print(json.dumps({"model": model, "rows": [list(r["prompt_embeds"].shape) for r in reqs.prompts],
                          "adapter": reqs.adapter_path, "adapter_rank": reqs.adapter_rank,
                          "sampling": sampling}, indent=2))
        return 0
    from vllm import LLM, SamplingParams  # imported here: not a dglm dependency

    del pipe, ctl  # free the planning models' GPU memory before vLLM reserves its share
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    lora = {"enable_lora": True, "max_lora_rank": lora_rank_bound(reqs.adapter_rank)} if reqs.adapter_rank else {}
    llm = LLM(model=model, tokenizer=model, enable_prompt_embeds=True, dtype=args.dtype, seed=args.seed,
              gpu_memory_utilization=args.gpu_memory_utilization, **lora)
    outputs = llm.generate(reqs.prompts, SamplingParams(**sampling), lora_request=reqs.lora_request())
    for row, out in enumerate(outputs):
        i, j = divmod(row, args.num_samples)
        print(f"--- prefix {i}, sample {j} ---\n{prefixes[i]}{out.outputs[0].text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
