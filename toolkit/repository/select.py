"""Which exported variant of each tier to deploy: pinned, or the fastest that passed the acceptance check."""

from __future__ import annotations

from dataclasses import dataclass

from toolkit.errors import RepositoryError
from toolkit.export.manifest import Manifest, Variant
from toolkit.spec.schema import Spec
from toolkit.spec.variants import GPU, GPU_PREFERENCE, VARIANTS

NOISE = 0.10
"""Variants whose latency lies within this share of the fastest count as equally fast; the most
precise of them (earliest in the catalogue) is chosen. It matches the timing's own resolution:
a measurement is stable when its windows agree within 10%."""


@dataclass(frozen=True)
class Selection:
    """The variant chosen for one tier.

    Attributes:
        tier: Tier name.
        variant: Variant deployed.
        reason: Why it was chosen, in words.
        latency_ms: Its mean latency over the timed candidate counts on the target (None if untimed).
    """

    tier: str
    variant: str
    reason: str
    latency_ms: float | None


def _eligible(variants: dict[str, Variant], target: str) -> dict[str, Variant]:
    return {
        name: entry
        for name, entry in variants.items()
        if entry.passed and name in VARIANTS and target in VARIANTS[name].targets
    }


def _pin_error(how: str, message: str) -> RepositoryError:
    """An error about a pin: ``how`` is ``pins`` (the option) or the spec key the pin came from."""
    return RepositoryError(message, option="pins") if how == "pins" else RepositoryError(f"{how}: {message}")


def _pinned(tier: str, variant: str, variants: dict[str, Variant], target: str, how: str) -> Selection:
    entry = variants.get(variant)
    if variant not in VARIANTS:
        raise _pin_error(how, f"{tier}={variant}: unknown variant; known: {', '.join(VARIANTS)}")
    if target not in VARIANTS[variant].targets:
        able = ", ".join(v for v, info in VARIANTS.items() if target in info.targets)
        raise _pin_error(
            how, f"{tier}={variant}: {variant} cannot run on {target}; variants that can: {able}"
        )
    if entry is None:
        raise _pin_error(
            how,
            f"{tier}={variant}: the manifest has no {variant} for tier {tier!r}; "
            f"run `toolkit export --tier {tier} --precision {variant}`",
        )
    if not entry.passed:
        raise _pin_error(
            how,
            f"{tier}={variant}: that variant is {entry.status} in the manifest "
            f"({entry.reason or 'no reason recorded'}); it is not deployed",
        )
    reason = "pinned" if how == "pins" else f"pinned ({how})"
    return Selection(tier, variant, reason, entry.mean_latency(target))


def select_variant(
    tier: str, variants: dict[str, Variant], target: str, pin: str | None = None, how: str = "pins"
) -> Selection:
    """Choose the variant of one tier to deploy on ``target``.

    A pinned variant is used if it passed; otherwise the fastest variant that passed the acceptance check and
    can run on the target, by mean latency on that target over the timed candidate counts (within
    :data:`NOISE` of the fastest, the most precise variant wins). For the
    GPU target, variants without a GPU timing (an export run on a machine without a GPU) are
    ranked after timed ones, in :data:`~toolkit.spec.variants.GPU_PREFERENCE` order.

    Args:
        tier: Tier name.
        variants: The tier's manifest entries by variant name.
        target: ``cpu`` or ``gpu``.
        pin: Variant to deploy instead of choosing.
        how: Where the pin came from, for messages: ``pins`` (the deploy option) or the spec key.

    Raises:
        RepositoryError: The pin is unknown, failed or cannot run on the target, or no variant passed.
    """
    if pin:
        return _pinned(tier, pin, variants, target, how)
    eligible = _eligible(variants, target)
    if not eligible:
        summary = ", ".join(f"{v} {e.status}" for v, e in variants.items()) or "none exported"
        raise RepositoryError(
            f"tier {tier!r} has no variant that passed the acceptance check and runs on {target} "
            f"({summary}); run `toolkit export` and see its status matrix"
        )
    timed = {v: e.mean_latency(target) for v, e in eligible.items()}
    measured = {v: t for v, t in timed.items() if t is not None}
    if measured:
        fastest = min(measured.values())
        close = [v for v in VARIANTS if v in measured and measured[v] <= fastest * (1 + NOISE)]
        best = close[0]
        others = sorted((t, v) for v, t in measured.items() if v != best)
        versus = f"; next {others[0][1]} {others[0][0]:.3f} ms" if others else ""
        reason = f"fastest passing on {target}: {measured[best]:.3f} ms mean{versus}"
        if measured[best] > fastest:
            reason = (
                f"within {NOISE:.0%} of the fastest on {target} and more precise: "
                f"{measured[best]:.3f} ms mean{versus}"
            )
        return Selection(tier, best, reason, measured[best])
    if target == GPU:
        for variant in GPU_PREFERENCE:
            if variant in eligible:
                return Selection(
                    tier, variant, "no GPU timings in the manifest; first in GPU preference", None
                )
    variant = next(v for v in VARIANTS if v in eligible)
    return Selection(tier, variant, f"no {target} timings in the manifest; first passing variant", None)


def select_variants(
    spec: Spec,
    manifest: Manifest,
    target: str,
    pins: dict[str, str] | None = None,
    tiers: tuple[str, ...] | None = None,
) -> dict[str, Selection]:
    """Choose a variant for every tier of ``spec`` (or of ``tiers``); ``pins`` beat the spec's.

    Raises:
        RepositoryError: A tier is missing from the manifest, or :func:`select_variant` refused.
    """
    pins = pins or {}
    unknown = sorted(set(pins) - set(spec.tier_names))
    if unknown:
        raise RepositoryError(
            f"{unknown[0]}=...: not a tier of the spec ({', '.join(spec.tier_names)})", option="pins"
        )
    out = {}
    for tier in spec.tier_names if tiers is None else tiers:
        entry = manifest.tiers.get(tier)
        if entry is None:
            raise RepositoryError(f"tier {tier!r} is not in the manifest; run `toolkit export`")
        if tier in pins:
            pin, how = pins[tier], "pins"
        else:
            pin, how = spec.triton.pin.get(tier), f"spec key triton.pin.{tier}"
        out[tier] = select_variant(tier, entry.variants, target, pin, how)
    return out
