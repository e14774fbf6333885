"""Model directories: ``weights.pt`` (a plain state dict, loaded with ``weights_only=True`` so no
pickle from a file is ever executed) and ``card.json`` (spec, normalisation, calibration,
training data digest, validation metrics, version)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import torch

from models.calibration import Calibration
from models.detector import Detector
from models.features import FeatureSpec
from models.gru import GRUDetector

__all__ = ["CARD_FORMAT", "ModelError", "load_detector", "save_detector", "shipped_model_dir"]

CARD_FORMAT = 1
_SHIPPED = Path(__file__).parent / "shipped"


class ModelError(ValueError):
    """A model directory is missing, corrupt, or of another kind."""


def shipped_model_dir(kind: str) -> Path:
    """The small pre-trained default of a kind, shipped inside the package."""
    return _SHIPPED / kind


def save_detector(detector: Detector, directory: Path, extra: dict[str, Any] | None = None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(detector.model.state_dict(), directory / "weights.pt")
    card = {
        "format": CARD_FORMAT,
        "name": detector.name,
        "version": detector.version,
        "kind": detector.spec.kind,
        "hidden": detector.model.hidden,
        "seed": detector.model.seed,
        "spec": detector.spec.to_dict(),
        "calibration": detector.calibration.to_dict(),
        **(extra or {}),
    }
    (directory / "card.json").write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")


def load_detector(directory: Path, kind: str | None = None) -> Detector:
    """Load a model directory; ``kind`` (when given) must match the card's."""
    card_path, weights_path = directory / "card.json", directory / "weights.pt"
    if not directory.is_dir():
        raise ModelError(f"model directory {directory} does not exist")
    if not card_path.is_file() or not weights_path.is_file():
        raise ModelError(f"{directory} is not a model directory (needs card.json and weights.pt)")
    try:
        card = json.loads(card_path.read_text())
        if card.get("format") != CARD_FORMAT:
            raise ModelError(f"{card_path}: unsupported card format {card.get('format')!r}")
        if kind is not None and card["kind"] != kind:
            raise ModelError(f"{directory} is a {card['kind']} model, not {kind}")
        spec = FeatureSpec.from_dict(card["spec"])
        calibration = Calibration.from_dict(card["calibration"])
        model = GRUDetector(spec.n_inputs, spec.n_targets, hidden=int(card["hidden"]), seed=int(card.get("seed", 0)))
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    except ModelError:
        raise
    except (
        OSError,
        ValueError,
        KeyError,
        TypeError,
        RuntimeError,
        pickle.UnpicklingError,
        EOFError,
    ) as exc:
        raise ModelError(f"{directory} is corrupt: {type(exc).__name__}: {str(exc)[:200]}") from exc
    return Detector(spec, model, calibration, name=str(card["name"]), version=str(card["version"]))
