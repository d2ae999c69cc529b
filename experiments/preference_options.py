"""Options the preference apps share (``experiments.preferences``, ``experiments
.overoptimisation``): each checked with its full key in the message, before any work."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from personarl.errors import ConfigError, check_int, check_range

__all__ = ["reward_model_config", "annotator_options", "taste_options"]


def reward_model_config(node: DictConfig, prefix: str, **change: Any) -> Any:
    """``rewards.reward_model.BradleyTerryConfig`` from a ``model`` option."""
    from rewards.reward_model import BradleyTerryConfig

    model = dict(OmegaConf.to_container(node, resolve=True))
    model["hidden"] = tuple(model["hidden"])
    try:
        return BradleyTerryConfig(**{**model, **change})
    except ConfigError as exc:
        raise ConfigError(f"{prefix}.{exc}") from None


def annotator_options(node: DictConfig) -> dict[str, Any]:
    """``count``, ``tau`` and ``flip`` of an ``annotators`` option (the ranges of
    ``rewards.preferences.Annotators.from_traits``)."""
    return dict(count=check_int("annotators.count", node.count, 1, 100_000),
                tau=check_range("annotators.tau", node.tau, 0, 10, low_open=True),
                flip=check_range("annotators.flip", node.flip, 0, 0.3))


def taste_options(taste: str | None, strength: float, *, required: bool) -> tuple[Any, float]:
    """A ``bias`` option's taste and strength: both given or (unless ``required``) neither."""
    from rewards.preferences import STYLE_BIASES

    valid = ", ".join(STYLE_BIASES)
    if taste is None and required:
        raise ConfigError(f"bias.taste=null: the lab needs a taste; valid: {valid}")
    if taste is not None and taste not in STYLE_BIASES:
        raise ConfigError(f"bias.taste={taste!r}; valid: {valid}"
                          + ("" if required else " or null"))
    strength = check_range("bias.strength", strength, 0, 10)
    if taste is not None and strength == 0:
        raise ConfigError(f"bias.taste={taste} with bias.strength=0 has no effect; give "
                          "bias.strength > 0")
    if taste is None and strength > 0:
        raise ConfigError(f"bias.strength={strength:g} without a bias.taste has no effect; "
                          f"give one of {valid}")
    return taste, strength
