"""The one table of named forward SDEs and their defaults.

Every front end (time series, toys, images, benchmarks) reads SDE names and
defaults from here, so adding an SDE is one entry in :data:`SDE_REGISTRY`.

Example
-------
>>> from vsmd_ts.diffusion.registry import default_kwargs, is_momentum, make_sde
>>> is_momentum("vsuld"), default_kwargs("vsuld")["damping_ratio"]
(True, 0.7)
>>> make_sde("vp", (3,)).schedule
'linear'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping, Optional, Sequence, Tuple, Type

from .processes import MomentumSDE, OverdampedSDE
from .sde import LinearSDE

__all__ = [
    "SDESpec",
    "SDE_NAMES",
    "SDE_REGISTRY",
    "TRAJECTORY_STEPS",
    "default_kwargs",
    "get_spec",
    "is_momentum",
    "learns_A",
    "make_sde",
    "sde_names",
]

# Euler-Maruyama steps of the backward trajectories that feed each A phase
# (Algorithm 1); one default for every front end.
TRAJECTORY_STEPS = 100


@dataclass(frozen=True)
class SDESpec:
    """One named SDE: its class, the constructor defaults it fixes and those a caller may change.

    Attributes
    ----------
    name
        Registry key (lower case).
    cls
        :class:`~vsmd_ts.diffusion.sde.LinearSDE` subclass.
    defaults
        Constructor keyword arguments of this SDE (``beta``, ``damping_ratio``,
        ``learn_A``, ``schedule`` ...); callers may override them unless listed
        in ``fixed``.
    fixed
        Names whose default the caller must not change (e.g. ``damping_ratio``
        of the critically damped SDEs); passing the same value is allowed.
    description
        One line for help texts.
    """

    name: str
    cls: Type[LinearSDE]
    defaults: Mapping[str, object] = field(default_factory=dict)
    fixed: Tuple[str, ...] = ()
    description: str = ""

    @property
    def is_momentum(self) -> bool:
        """Whether the state carries a velocity (``num_channels == 2``)."""
        return self.cls.num_channels == 2

    @property
    def learns_A(self) -> bool:
        return bool(self.defaults.get("learn_A", False))


def _spec(name, cls, description, fixed=(), **defaults) -> SDESpec:
    return SDESpec(name, cls, MappingProxyType(defaults), tuple(fixed), description)


# beta is the constant speed (the maximum of the linear schedule for "vp");
# 10 and R = 0.7 are the values the benchmarks chose on validation data.
SDE_REGISTRY: Mapping[str, SDESpec] = MappingProxyType(
    {
        s.name: s
        for s in (
            _spec("vsuld", MomentumSDE, "under-damped momentum SDE, learned A", beta=10.0, damping_ratio=0.7, learn_A=True),
            _spec("vscld", MomentumSDE, "critically damped momentum SDE, learned A", ("damping_ratio",),
                  beta=10.0, damping_ratio=1.0, learn_A=True),
            _spec("cld", MomentumSDE, "critically damped Langevin (A = 0)", ("damping_ratio", "learn_A"),
                  beta=10.0, damping_ratio=1.0, learn_A=False),
            _spec("uld", MomentumSDE, "under-damped Langevin (A = 0)", ("learn_A",),
                  beta=10.0, damping_ratio=0.7, learn_A=False),
            _spec("vsdm", OverdampedSDE, "overdamped SDE, learned A, constant beta", beta=10.0, learn_A=True),
            _spec("vp", OverdampedSDE, "VP SDE (continuous DDPM), beta 0.1 -> beta", ("schedule", "learn_A"),
                  beta=20.0, schedule="linear", learn_A=False),
        )
    }
)

SDE_NAMES: Tuple[str, ...] = tuple(SDE_REGISTRY)


def sde_names() -> Tuple[str, ...]:
    """Names of all registered SDEs, in registry order."""
    return tuple(SDE_REGISTRY)


def get_spec(name: str) -> SDESpec:
    """The :class:`SDESpec` of ``name`` (case-insensitive); ``ValueError`` for an unknown name."""
    key = str(name).lower()
    if key not in SDE_REGISTRY:
        raise ValueError(f"unknown sde {name!r}; choose one of {', '.join(SDE_REGISTRY)}")
    return SDE_REGISTRY[key]


def is_momentum(name: str) -> bool:
    """Whether the named SDE is velocity-augmented (``(x, v)`` states)."""
    return get_spec(name).is_momentum


def learns_A(name: str) -> bool:
    """Whether the named SDE learns the variational score A."""
    return get_spec(name).learns_A


def default_kwargs(name: str) -> dict:
    """Constructor defaults of the named SDE (a fresh dict), e.g. ``beta``, ``damping_ratio``."""
    return dict(get_spec(name).defaults)


def make_sde(
    name: str,
    data_shape: Sequence[int],
    beta: Optional[float] = None,
    damping_ratio: Optional[float] = None,
    **kwargs,
) -> LinearSDE:
    """Build a registered SDE by name.

    Parameters
    ----------
    name
        A key of :data:`SDE_REGISTRY`: ``"vsuld"`` (learned A, ``R = 0.7``),
        ``"vscld"`` (learned A, ``R = 1``), ``"cld"`` (``A = 0``, ``R = 1``),
        ``"uld"`` (``A = 0``, ``R = 0.7``), ``"vsdm"`` (overdamped, learned A)
        or ``"vp"`` (overdamped, ``A = 0``, linear beta 0.1 -> 20).
    data_shape
        Shape of one data point.
    beta, damping_ratio
        ``None`` keeps the registry default. ``damping_ratio`` is rejected for
        the overdamped SDEs and must be 1 for the critically damped ones.
    **kwargs
        Further constructor arguments (``gamma``, ``A_max``, ``T`` ...);
        ``None`` values are ignored.
    """
    spec = get_spec(name)
    overrides = {k: v for k, v in dict(kwargs, beta=beta, damping_ratio=damping_ratio).items() if v is not None}
    if "damping_ratio" in overrides and not spec.is_momentum:
        raise ValueError(f"{spec.name} has no velocity; damping_ratio does not apply")
    for key in spec.fixed:
        if key in overrides and overrides[key] != spec.defaults[key]:
            kind = "is critically damped" if key == "damping_ratio" else "fixes"
            raise ValueError(f"{spec.name} {kind}: {key} must be {spec.defaults[key]!r}, got {overrides[key]!r}")
    return spec.cls(data_shape, **{**spec.defaults, **overrides})
