r"""What one layer call yields besides its energies: attention maps brought to one common grid (with the
grid each layer will have and the number of UNet calls a run makes, for projecting a trace's size). The
energies a trace records are :func:`ebca_viz.energy.layer_energies` and
:func:`ebca_viz.energy.self_attention_energy`, next to their equations."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from ..errors import InvalidSetting

MAP_GRID_CAP = 32  # default common grid: the largest recorded layer grid, at most 32 per side


def resize_map(m: torch.Tensor, grid: tuple) -> torch.Tensor:
    """``(..., h, w) -> (..., gh, gw)``: area average when shrinking, bilinear when growing.

    Both are convex combinations of pixels, so a map that sums to 1 over tokens at every pixel
    still does.
    """
    h, w = m.shape[-2:]
    if (h, w) == tuple(grid):
        return m
    lead = m.shape[:-2]
    x = m.reshape(-1, 1, h, w)
    if h >= grid[0] and w >= grid[1]:
        x = F.adaptive_avg_pool2d(x, grid)
    else:
        x = F.interpolate(x, size=grid, mode="bilinear", align_corners=False)
    return x.reshape(*lead, *grid)


def predicted_grid(unet, key: str, latent_hw: tuple) -> tuple:
    """Grid of a layer from its block position (each down block but the last halves, with ceil)."""
    parts = key.split(".")
    n_down = len(unet.down_blocks)
    if parts[0] == "down_blocks":
        f = 2 ** int(parts[1])
    elif parts[0] == "up_blocks":
        f = 2 ** (len(unet.up_blocks) - 1 - int(parts[1]))
    else:
        f = 2 ** (n_down - 1)
    return (-(-latent_hw[0] // f), -(-latent_hw[1] // f))


def unet_calls(pipe, num_steps: int) -> int:
    """UNet calls of a ``num_steps`` run: the length of the timesteps a fresh copy of the pipeline's
    scheduler sets (PNDM: ``num_steps + 1``; Heun: ``2 num_steps - 1``); ``num_steps`` without one."""
    sched = getattr(pipe, "scheduler", None) if pipe is not None else None
    if sched is None or not hasattr(sched, "set_timesteps") or not hasattr(sched, "config"):
        return num_steps
    try:
        fresh = type(sched).from_config(sched.config)
        fresh.set_timesteps(num_steps)
        return len(fresh.timesteps)
    except Exception:  # a scheduler that needs more arguments: count the sampling steps
        return num_steps


def resolve_map_grid(map_grid, grids: list) -> tuple:
    if map_grid is not None:
        return map_grid
    h, w = max(grids, key=lambda g: g[0] * g[1])
    s = min(1.0, MAP_GRID_CAP / max(h, w))
    return (max(1, round(h * s)), max(1, round(w * s)))


def check_map_grid(map_grid):
    if map_grid is None:
        return None
    if isinstance(map_grid, int) and not isinstance(map_grid, bool):
        map_grid = (map_grid, map_grid)
    if (
        not isinstance(map_grid, (tuple, list))
        or len(map_grid) != 2
        or not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in map_grid)
    ):
        raise InvalidSetting(f"map_grid must be None (auto), a positive int or (height, width), got {map_grid!r}")
    return tuple(map_grid)
