"""Peak memory of cutting one long single-line text into training windows, whole or in pieces.

`dglm train prepare` cuts every document at whitespace into pieces of at most 100,000 characters
(:func:`dglm.training.texts.pieces`) before tokenizing, so one huge line never reaches the tokenizer whole.
This measures both ways on a byte-level BPE tokenizer (the kind of docs/training.md's tiny example), each in
a fresh process; docs/results/robustness.md quotes it.

    python recipes/long_line_memory.py --bytes 10000000
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time


def measure(mode: str, size: int) -> None:
    import numpy as np
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    from dglm.training.data import build_windows
    from dglm.training.texts import pieces

    rng = np.random.default_rng(0)
    words = "the team won the match after a late goal in the second half of the season bake bread".split()
    text = " ".join(rng.choice(words, size // 5))  # about `size` bytes, one line
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([text[:100_000]], vocab_size=300, special_tokens=["<|endoftext|>"])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    windows = build_windows([text] if mode == "whole" else pieces(text), tok, window=64)
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024
    print(f"{mode}: {len(text):,} characters on one line -> {len(windows):,} windows; peak memory growth "
          f"{grown:,} MiB; {time.perf_counter() - start:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bytes", type=int, default=10_000_000, help="size of the one-line text")
    parser.add_argument("--mode", choices=["whole", "pieces"], help="measure one way in this process")
    args = parser.parse_args()
    if args.mode:
        measure(args.mode, args.bytes)
        return
    for mode in ("whole", "pieces"):
        subprocess.run([sys.executable, __file__, "--bytes", str(args.bytes), "--mode", mode], check=True)


if __name__ == "__main__":
    main()
