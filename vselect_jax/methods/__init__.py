"""Token-compression methods, one module each, under one API.

Every module in this package that defines ``METHOD`` (a ``base.Method``) is
a method; adding one is adding a file (and its test). ``validate`` is the
one place where method names, budgets and options are checked.

    from vselect_jax import methods
    methods.names()                        # ('dart', 'divprune', ...)
    m, options = methods.validate("fastv", budget=0.2, per_image=False)
"""
from __future__ import annotations

import difflib
import importlib
import pkgutil
from typing import Any, Mapping

import numpy as np

from vselect_jax.methods.base import (IN_LLM, IN_VISION, LAYER_QK, PRE_LLM,
                                      VISION_BLOCK, VISION_LAST_BLOCK, Choice,
                                      Context, Method, Relaxed)
from vselect_jax.selector.budget import check_budget

_INTERNAL = {"base", "ranking"}
_REGISTRY: dict[str, Method] = {}


def _discover() -> dict[str, Method]:
  if not _REGISTRY:
    for info in pkgutil.iter_modules(__path__):
      if info.name in _INTERNAL:
        continue
      module = importlib.import_module(f"{__name__}.{info.name}")
      method = getattr(module, "METHOD", None)
      if isinstance(method, Method):
        if method.name in _REGISTRY:
          raise ValueError(f"two methods named {method.name!r}")
        _REGISTRY[method.name] = method
  return _REGISTRY


def names() -> tuple[str, ...]:
  """Every method name, sorted."""
  return tuple(sorted(_discover()))


def get(name: str) -> Method:
  """The method called ``name``, or a ``ValueError`` naming the choices."""
  registry = _discover()
  if name not in registry:
    close = difflib.get_close_matches(str(name), registry, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"unknown selection method {name!r}{hint}; one of "
                     f"{names()}")
  return registry[name]


def validate(name: str, budget=None, per_image: bool = False,
             options: Mapping[str, Any] | None = None
             ) -> tuple[Method, tuple[tuple[str, Any], ...]]:
  """Checks a method, its budget(s) and options; the one place that does.

  Args:
    name: a method name.
    budget: None, a fraction in (0, 1], or a sequence of them.
    per_image: one budget per image instead of pooling each row.
    options: method options; unknown names and wrong types are errors.

  Returns:
    (the method, its options with defaults filled in, as a sorted tuple of
    pairs: hashable, so it can be a static jit argument).
  """
  method = get(name)
  if budget is not None:
    for b in np.atleast_1d(np.asarray(budget, dtype=object)).ravel():
      check_budget(b)
  if per_image and not method.per_image:
    raise ValueError(f"method {name!r} pools over the whole prompt; "
                     "per_image budgets are not supported")
  given = dict(options or {})
  unknown = sorted(set(given) - set(method.options))
  if unknown:
    raise ValueError(f"method {name!r} has no option(s) {unknown}; its "
                     f"options: {dict(method.options) or 'none'}")
  merged = dict(method.options)
  for key, value in given.items():
    default = merged[key]
    if default is not None and not isinstance(value, type(default)):
      raise ValueError(f"method {name!r} option {key!r} must be "
                       f"{type(default).__name__}, got {value!r}")
    merged[key] = value
  return method, tuple(sorted(merged.items()))


__all__ = ["Choice", "Context", "Method", "Relaxed", "PRE_LLM", "IN_LLM",
           "IN_VISION", "VISION_BLOCK", "LAYER_QK", "VISION_LAST_BLOCK", "get", "names", "validate"]
