"""Every pydantic config in dglm describes its fields itself (docs and command-line help read them)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest
from pydantic import BaseModel, ValidationError

import dglm
from dglm.config import DiffusionConfig


def pydantic_configs() -> list[type[BaseModel]]:
    found = []
    for info in pkgutil.walk_packages(dglm.__path__, "dglm."):
        if info.name.endswith("__main__"):  # importing it runs the CLI
            continue
        module = importlib.import_module(info.name)
        found += [c for c in vars(module).values() if inspect.isclass(c) and issubclass(c, BaseModel)
                  and c.__module__ == module.__name__ and c.model_fields]
    return found


def test_every_config_field_has_a_description():
    configs = pydantic_configs()
    assert {"DGLMConfig", "DiffusionConfig", "BenchConfig", "PromptTrainingConfig"} <= {c.__name__ for c in configs}
    missing = [f"{c.__module__}.{c.__name__}.{name}" for c in configs
               for name, field in c.model_fields.items() if not (field.description or "").strip()]
    assert not missing, f"fields without Field(description=...): {missing}"


def test_descriptions_keep_the_bounds():
    assert "skips" in DiffusionConfig.model_fields["depth"].description
    with pytest.raises(ValidationError, match="depth"):
        DiffusionConfig(dim=8, depth=0)
