"""What a transformer encoder model exposes to the code that reads or cuts it: its layer list and its per-layer
hidden states (speech-encoder, hf-wav2vec2, hf-hubert; any model with `encoder.layers` and `hidden_states(x)`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgeprune.errors import EdgepruneError

if TYPE_CHECKING:
    import torch


def encoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The encoder's layer list (`model.encoder.layers`), or one clear error for a model without one."""
    import torch

    layers = getattr(getattr(model, "encoder", None), "layers", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise EdgepruneError(f"{type(model).__name__} has no encoder layer list (encoder.layers); layer pruning "
                             "needs a transformer encoder")
    return layers


def hidden_states(model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The model's per-layer hidden states for input x: index 0 the state entering layer 1, index i the output of
    layer i."""
    fn = getattr(model, "hidden_states", None)
    if not callable(fn):
        raise EdgepruneError(f"{type(model).__name__} does not give per-layer hidden states (no hidden_states(x) "
                             "method); layer scoring needs an encoder that does")
    return list(fn(x))
