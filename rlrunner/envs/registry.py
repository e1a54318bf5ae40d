"""Environment names rlrunner can resolve to a player executable.

Importable without mlagents_envs, ray or torch: the host CLI validates names against
``BUNDLED_ENVIRONMENTS``. Only ``resolve_environment`` of a non-bundled name touches
ML-Agents' remote registry (and so the network).
"""

from __future__ import annotations

import sys
from pathlib import Path

_BASIC_DIR = Path(__file__).resolve().parent / "basic"

BUNDLED_ENVIRONMENTS: dict[str, Path] = {
    "Basic": _BASIC_DIR / "Basic.x86_64",
    "Ball": _BASIC_DIR.parent / "ball" / "Ball.x86_64",  # 3DBall-like: 12 agents, continuous actions, period 5
    "Duo": _BASIC_DIR.parent / "duo" / "Duo.x86_64",  # two behaviours, agents deciding every 1st and 2nd step
    "VisualBasic": _BASIC_DIR.parent / "visual_basic" / "VisualBasic.x86_64",  # Basic seen through a 1x21 RGB camera
}
"""Names resolved locally, mapped to the bundled player executable."""


MLAGENTS_REGISTRY_NAMES: frozenset[str] = frozenset(
    {
        "3DBall", "3DBallHard", "Basic", "Bouncer", "CrawlerDynamicTarget", "CrawlerStaticTarget", "FoodCollector", "GridWorld",
        "Hallway", "PushBlock", "Pyramids", "Reacher", "SoccerTwos", "StrikersVsGoalie", "Tennis", "VisualFoodCollector",
        "VisualHallway", "VisualPushBlock", "VisualPyramids", "Walker", "WallJump", "WormDynamicTarget", "WormStaticTarget",
    }
)  # fmt: skip
"""ML-Agents' example environments (docs/Learning-Environment-Examples.md, release 20), the names its default
registry's manifest serves: checked offline at validate time, so a typo never reaches the network."""


def known_environment(name: str) -> bool:
    """Whether `name` is bundled or in ML-Agents' default registry (offline)."""
    return name in BUNDLED_ENVIRONMENTS or name in MLAGENTS_REGISTRY_NAMES


class EnvironmentNotFoundError(LookupError):
    """A registry name that neither rlrunner nor ML-Agents' default registry knows."""


def resolve_environment(name: str) -> Path:
    """Return the executable for ``name``: bundled first, then ML-Agents' default registry."""
    bundled = BUNDLED_ENVIRONMENTS.get(name)
    if bundled is not None:
        return bundled
    return _resolve_remote(name)


def _resolve_remote(name: str) -> Path:
    # Imported here: mlagents_envs is heavy, and its default registry downloads a manifest.
    try:
        from mlagents_envs.registry import default_registry
        from mlagents_envs.registry.binary_utils import get_local_binary_path
        from mlagents_envs.registry.remote_registry_entry import RemoteRegistryEntry
    except ImportError as error:  # pragma: no cover - mlagents_envs is a dependency
        raise ImportError(
            "environment.name: resolving a remote registry name needs mlagents-envs (pip install mlagents-envs==0.28.0)"
        ) from error
    try:
        known = name in default_registry
    except Exception as error:  # urllib, yaml: any failure to read the remote manifest
        raise EnvironmentNotFoundError(
            f"environment.name: {name!r} is not bundled ({', '.join(BUNDLED_ENVIRONMENTS)}) and "
            f"ML-Agents' remote registry could not be read: {error}"
        ) from error
    if not known:
        raise EnvironmentNotFoundError(
            f"environment.name: {name!r} is neither bundled ({', '.join(BUNDLED_ENVIRONMENTS)}) "
            f"nor in ML-Agents' default registry"
        )
    entry = default_registry[name]
    if not isinstance(entry, RemoteRegistryEntry):
        raise EnvironmentNotFoundError(f"environment.name: {name!r} is not a downloadable registry entry")
    url = _platform_url(entry)
    return Path(get_local_binary_path(name, url))


def _platform_url(entry: object) -> str:
    attribute = {"darwin": "_darwin_url", "win32": "_win_url"}.get(sys.platform, "_linux_url")
    url = getattr(entry, attribute, None)
    if not url:
        name = getattr(entry, "identifier", "?")
        raise EnvironmentNotFoundError(f"environment.name: no build of {name!r} for {sys.platform}")
    return str(url)
