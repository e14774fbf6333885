"""The docstring examples of every module that has them: each is a small worked case of what the
module promises (a CUSUM's tail, a residual rule that turns tame, a t tail taken to its normal
deviate), and runs here so that none goes stale."""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import pkgutil
from pathlib import Path

import pytest

import models
import pipeline


def modules_with_examples() -> list[str]:
    """Every module of ``models`` and ``pipeline`` whose source has a docstring example."""
    found = []
    for package in (models, pipeline):
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            spec = importlib.util.find_spec(info.name)
            if spec and spec.origin and spec.origin.endswith(".py") and ">>> " in Path(spec.origin).read_text():
                found.append(info.name)
    return sorted(found)


def test_the_modules_with_examples_are_found() -> None:
    """The walk finds the examples it should (a walk that found none would pass every test below)."""
    found = modules_with_examples()
    assert {"models.cusum", "models.residual", "models.autoregressive", "pipeline.nab_eval"} <= set(found)


@pytest.mark.parametrize("module", modules_with_examples())
def test_docstring_examples(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0
