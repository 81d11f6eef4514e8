"""Pieces shared by the training loops: learning-rate schedule, optimizer groups, resumable state.

Training state (weights, optimizer moments, step) is saved as safetensors + JSON, never pickled, into a
folder written atomically, so a run killed at any moment resumes from its last complete save.

Example:
    >>> lr_at(step=99, base=1e-3, warmup=100, total=1000)
    0.001
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from dglm.io import atomic_directory, load_tensors, read_json, save_tensors, write_json


def lr_at(step: int, base: float, warmup: int, total: int, final_fraction: float = 0.1) -> float:
    """Linear warmup for ``warmup`` steps, then cosine decay to ``final_fraction * base`` at ``total``.

    Example:
        >>> [round(lr_at(step, 1e-3, warmup=10, total=110), 6) for step in (0, 9, 60, 110)]
        [0.0001, 0.001, 0.00055, 0.0001]
    """
    if step < warmup:
        return base * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * progress)))


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups with weight decay on matrices only (not on biases, norms or embeddings vectors).

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.LayerNorm(2))
        >>> [(len(g["params"]), g["weight_decay"]) for g in param_groups(model, 0.1)]
        [(1, 0.1), (3, 0.0)]
    """
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]


def save_state(folder: str | os.PathLike, modules: dict[str, torch.nn.Module], optimizer: torch.optim.Optimizer,
               step: int, extra: dict | None = None) -> None:
    """Atomically write ``state.safetensors`` (module weights and optimizer moments) and ``state.json``.

    Example (load_state reads it back):
        >>> import tempfile
        >>> model = torch.nn.Linear(2, 2)
        >>> with tempfile.TemporaryDirectory() as d:
        ...     save_state(d + "/state", {"model": model}, torch.optim.AdamW(model.parameters()), step=5)
        ...     sorted(os.listdir(d + "/state"))
        ['state.json', 'state.safetensors']
    """
    tensors = {f"{name}.{k}": v for name, m in modules.items() for k, v in m.state_dict().items()}
    opt = optimizer.state_dict()
    for idx, s in opt["state"].items():
        for k, v in s.items():
            tensors[f"optimizer.{idx}.{k}"] = torch.as_tensor(v)
    with atomic_directory(folder) as tmp:
        save_tensors(tmp / "state.safetensors", tensors)
        write_json(tmp / "state.json", {"step": step, "param_groups": opt["param_groups"], **(extra or {})})


def load_state(folder: str | os.PathLike, modules: dict[str, torch.nn.Module],
               optimizer: torch.optim.Optimizer) -> dict:
    """Restore what :func:`save_state` wrote; returns the JSON part (``step`` and extras).

    Example:
        >>> import tempfile
        >>> model = torch.nn.Linear(2, 2)
        >>> opt = torch.optim.AdamW(model.parameters())
        >>> model(torch.ones(1, 2)).sum().backward()
        >>> opt.step()
        >>> fresh = torch.nn.Linear(2, 2)
        >>> fresh_opt = torch.optim.AdamW(fresh.parameters())
        >>> with tempfile.TemporaryDirectory() as d:
        ...     save_state(d, {"model": model}, opt, step=1, extra={"note": "demo"})
        ...     meta = load_state(d, {"model": fresh}, fresh_opt)
        >>> meta["step"], meta["note"], torch.equal(fresh.weight, model.weight)
        (1, 'demo', True)
        >>> torch.equal(fresh_opt.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
        True
    """
    folder = Path(folder)
    tensors, meta = load_tensors(folder / "state.safetensors"), read_json(folder / "state.json")
    for name, m in modules.items():
        m.load_state_dict({k[len(name) + 1:]: v for k, v in tensors.items() if k.startswith(name + ".")})
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        if key.startswith("optimizer."):
            _, idx, k = key.split(".", 2)
            state.setdefault(int(idx), {})[k] = v
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return meta
