"""Device mesh and the one table of logical-axis rules.

Model code names the axes of every parameter (``axes`` metadata on
``nnx.Param``: "embed", "mlp", "vocab", ...). This module maps those names to
mesh axes ("data", "fsdp", "tensor") and builds ``NamedSharding``s for whole
states. A rule may name several mesh axes; a mesh axis is used at most once
per array (a collision raises, it is never silently dropped).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")

# Logical axis -> mesh axes. Large LLM and ViT weights are sharded over fsdp
# (their model dim) and tensor (heads / MLP / vocab); the small scorer is
# replicated; the batch is split over data and fsdp.
DEFAULT_RULES: dict[str, tuple[str, ...] | None] = {
    "embed": ("fsdp",),
    "mlp": ("tensor",),
    "q_heads": ("tensor",),
    "kv_heads": ("tensor",),
    "vocab": ("tensor",),
    "vit_embed": ("fsdp",),
    "vit_mlp": ("tensor",),
    "vit_heads": ("tensor",),
    "selector_hidden": None,
}

# Parameters at least this large must be sharded on a mesh of several
# devices (``check_coverage``): a 7B model's smallest matrices are ~1.6M
# elements, its biases and norms a few thousand.
MIN_SHARDED_ELEMENTS = 1 << 20


def make_mesh(shape: Mapping[str, int] | Sequence[int],
              devices=None) -> Mesh:
  """A ("data", "fsdp", "tensor") mesh; one dimension may be -1 (the rest).

  Args:
    shape: sizes per axis, as a dict or a 3-sequence.
    devices: defaults to all devices.
  """
  devices = np.asarray(jax.devices() if devices is None else devices)
  sizes = ([shape.get(a, 1) for a in MESH_AXES] if isinstance(shape, Mapping)
           else list(shape))
  if len(sizes) != 3:
    raise ValueError(f"mesh shape must have 3 entries {MESH_AXES}, got {sizes}")
  if sizes.count(-1) > 1:
    raise ValueError(f"at most one mesh dimension may be -1, got {sizes}")
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    if devices.size % known:
      raise ValueError(f"{devices.size} devices do not divide into {sizes}")
    sizes[sizes.index(-1)] = devices.size // known
  if int(np.prod(sizes)) != devices.size:
    raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))} needs "
                     f"{int(np.prod(sizes))} devices, have {devices.size}")
  return Mesh(devices.reshape(sizes), MESH_AXES)


def logical_to_spec(axes: Sequence[str | None], shape: Sequence[int],
                    mesh: Mesh, rules: Mapping | None = None,
                    dropped: list | None = None) -> P:
  """PartitionSpec for an array with logical ``axes``.

  A mesh axis that does not divide the dimension is left out (e.g. 3 heads on
  a 2-way tensor axis), so tiny test models still place; each one left out
  is appended to ``dropped`` as (logical axis, dim, mesh axis, mesh size),
  which ``check_coverage`` turns into an error for large parameters.
  """
  rules = DEFAULT_RULES if rules is None else rules
  used: set[str] = set()
  spec = []
  for name, dim in zip(axes, shape):
    mesh_axes = rules.get(name) if name is not None else None
    chosen = []
    for a in mesh_axes or ():
      if a in used:
        raise ValueError(f"mesh axis {a!r} used twice in {tuple(axes)}")
      size = mesh.shape[a]
      if size > 1 and dim % (size * int(np.prod([mesh.shape[c]
                                                  for c in chosen]))) == 0:
        chosen.append(a)
        used.add(a)
      elif size > 1 and dropped is not None:
        dropped.append((name, dim, a, size))
    spec.append(tuple(chosen) if len(chosen) > 1 else
                (chosen[0] if chosen else None))
  return P(*spec)


def state_shardings(state: nnx.State, mesh: Mesh,
                    rules: Mapping | None = None) -> nnx.State:
  """``NamedSharding`` for every variable of an NNX state (by its ``axes``)."""

  def one(var):
    value = var.get_value()
    axes = var.get_metadata().get("axes") or (None,) * value.ndim
    return NamedSharding(mesh, logical_to_spec(axes, value.shape, mesh, rules))

  return jax.tree.map(one, state, is_leaf=lambda x: isinstance(x,
                                                                nnx.Variable))


def check_coverage(state: nnx.State, mesh: Mesh, rules: Mapping | None = None,
                   *, min_elements: int = MIN_SHARDED_ELEMENTS) -> None:
  """Fails when the rules leave a large parameter badly placed (in the
  spirit of MaxText's ``assert_params_sufficiently_sharded``).

  For every parameter of at least ``min_elements`` elements: a rule whose
  mesh axis does not divide the dimension (it would be silently dropped) is
  an error, and so is a parameter left fully replicated while the mesh has
  model-parallel devices (fsdp or tensor > 1).

  Raises:
    ValueError listing every offending parameter with its shape and axes.
  """
  model_parallel = mesh.shape.get("fsdp", 1) * mesh.shape.get("tensor", 1)
  problems = []
  for path, var in state.flat_state():
    value = var.get_value()
    if int(np.prod(value.shape)) < min_elements:
      continue
    axes = var.get_metadata().get("axes") or (None,) * value.ndim
    dropped: list = []
    spec = logical_to_spec(axes, value.shape, mesh, rules, dropped)
    name = "/".join(map(str, path))
    for axis, dim, mesh_axis, size in dropped:
      problems.append(f"{name} {tuple(value.shape)}: logical axis {axis!r} "
                      f"(dim {dim}) does not divide mesh axis {mesh_axis!r} "
                      f"of size {size}")
    if model_parallel > 1 and all(s is None for s in spec):
      problems.append(f"{name} {tuple(value.shape)} axes {tuple(axes)} is "
                      "replicated on every device")
  if problems:
    raise ValueError(
        f"parameters not sharded on mesh {dict(mesh.shape)} (at least "
        f"{min_elements:,} elements each; pick mesh sizes that divide them "
        "or change the rules):\n  " + "\n  ".join(problems))


def batch_sharding(mesh: Mesh, ndim: int, batch_axis: int = 0
                   ) -> NamedSharding:
  """Split ``batch_axis`` over data (and fsdp); everything else replicated."""
  spec = [None] * ndim
  spec[batch_axis] = ("data", "fsdp")
  return NamedSharding(mesh, P(*spec))
