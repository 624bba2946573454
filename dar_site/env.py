"""Typed readers for environment variables.

Deliberately free of Django imports so that the model workers can share them. Every reader fails
loudly (``EnvError`` naming the variable) instead of silently falling back on a bad value.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class EnvError(ValueError):
    """A variable is set to a value its reader cannot accept."""


def _raw(name: str) -> str | None:
    value = os.environ.get(name)
    # An empty assignment (FOO=) means "not set": docker-compose writes those for absent values.
    if value is None or value.strip() == "":
        return None
    return value.strip()


def env_str(name: str, default: str = "") -> str:
    value = _raw(name)
    return default if value is None else value


def env_required(name: str) -> str:
    value = _raw(name)
    if value is None:
        raise EnvError(f"{name} must be set")
    return value


def env_int(name: str, default: int, *, min: int | None = None, max: int | None = None) -> int:
    value = _raw(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise EnvError(f"{name}={value!r} is not an integer") from None
    _check_range(name, number, min, max)
    return number


def env_float(
    name: str, default: float, *, min: float | None = None, max: float | None = None
) -> float:
    value = _raw(name)
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        raise EnvError(f"{name}={value!r} is not a number") from None
    if number != number:  # NaN passes every comparison, so reject it explicitly.
        raise EnvError(f"{name}={value!r} is not a number")
    _check_range(name, number, min, max)
    return number


def float_or_auto(name: str, value: str, *, min: float | None = None) -> float | None:
    """``name``'s value (read with ``env_str``) as a number, or ``auto`` (None: the caller
    decides from the context)."""
    value = value.strip()
    if value.lower() == "auto":
        return None
    try:
        number = float(value)
    except ValueError:
        raise EnvError(f"{name}={value!r} is neither a number nor 'auto'") from None
    if number != number:
        raise EnvError(f"{name}={value!r} is not a number")
    _check_range(name, number, min, None)
    return number


def env_bool(name: str, default: bool) -> bool:
    value = _raw(name)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise EnvError(
        f"{name}={value!r} is not a boolean (use one of 1/0, true/false, yes/no, on/off)"
    )


def env_choice(name: str, default: str, choices: Sequence[str]) -> str:
    value = env_str(name, default)
    if value not in choices:
        raise EnvError(f"{name}={value!r} must be one of {', '.join(choices)}")
    return value


def env_list(name: str, default: Sequence[str] = ()) -> list[str]:
    value = _raw(name)
    if value is None:
        return list(default)
    return [part.strip() for part in value.split(",") if part.strip()]


def env_path(name: str, default: Path) -> Path:
    value = _raw(name)
    return default if value is None else Path(value).expanduser()


def env_pg_size(name: str, default: str) -> str:
    """A PostgreSQL memory size such as ``512MB`` or ``2GB`` (units spelt as PostgreSQL does)."""
    value = env_str(name, default)
    digits = value[:-2]
    if not (digits.isdigit() and value[-2:] in ("kB", "MB", "GB", "TB")):
        raise EnvError(f"{name}={value!r} is not a PostgreSQL size (write it like 512MB or 2GB)")
    return value


_RATE_PERIODS = {
    "s": 1,
    "sec": 1,
    "m": 60,
    "min": 60,
    "h": 3600,
    "hour": 3600,
    "d": 86400,
    "day": 86400,
}


def env_rate(name: str, default: str) -> str:
    """A request rate as DRF's throttles spell it: ``20/min`` (periods s, min, hour, day)."""
    value = env_str(name, default)
    count, _, period = value.partition("/")
    if not (count.isascii() and count.isdigit() and int(count) > 0 and period in _RATE_PERIODS):
        raise EnvError(f"{name}={value!r} is not a rate (write it like 20/min, 100/hour or 5/s)")
    return value


def _check_range(name: str, number: float, low: float | None, high: float | None) -> None:
    if low is not None and number < low:
        raise EnvError(f"{name}={number} is below the minimum {low}")
    if high is not None and number > high:
        raise EnvError(f"{name}={number} is above the maximum {high}")
