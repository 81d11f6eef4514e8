"""How far dtype rounding and GGUF quantisation move weights: the numbers behind dglm.hub's fingerprint
tolerance (FINGERPRINT_TOLERANCE = 2%, relative RMS).

    python recipes/fingerprint_tolerance.py          # needs the gguf package (pip install gguf)

A Gaussian matrix shaped like one SmolLM2-135M projection block (std 0.05, seed 0) is rounded to bf16 and
fp16 and quantised with gguf's own Q8_0 and Q4_1 (the types of SmolLM2-135M-Instruct.Q4_1.gguf: Q8_0 token
embeddings, Q4_1 everything else); printed is each copy's relative RMS difference from the original.
"""

import numpy as np
import torch
from gguf import GGMLQuantizationType, quants


def main() -> None:
    x = np.random.default_rng(0).standard_normal((256, 576)).astype(np.float32) * 0.05
    ref = torch.from_numpy(x)
    rel = lambda y: float((y - ref).norm() / ref.norm())  # noqa: E731
    print(f"bf16  {rel(ref.bfloat16().float()):.4%}")
    print(f"fp16  {rel(ref.half().float()):.4%}")
    for kind in (GGMLQuantizationType.Q8_0, GGMLQuantizationType.Q4_1):
        y = quants.dequantize(quants.quantize(x, kind), kind).reshape(x.shape)
        print(f"{kind.name:5} {rel(torch.from_numpy(np.ascontiguousarray(y))):.4%}")


if __name__ == "__main__":
    main()
