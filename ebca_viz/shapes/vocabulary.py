"""What a shipped world can be asked: its vocabulary, and a prompt check that names the unknown words.

``vocabulary("neglect-world")`` -> ``["a", "and", "blue", ...]``; ``check_prompt(world, prompt)`` returns the
prompt or raises :class:`~ebca_viz.errors.EbcaVizError` listing the words the world knows.
"""
from __future__ import annotations

from ..errors import InvalidSetting
from ..models.worlds import world_folder
from . import world


def vocabulary(name: str = "shapes-world") -> list:
    """The words a world was trained on (sorted): ``a``, ``and``, its colours and shapes."""
    world_folder(name)  # validates the name
    return sorted({"a", "and", *world.COLOURS, *world.SHAPES})


def check_prompt(name: str, prompt: str) -> str:
    """Return ``prompt`` if every word is in the world's :func:`vocabulary` (``""`` is allowed:
    the unconditional prompt), else raise naming the unknown words and the known ones."""
    if not isinstance(prompt, str):
        raise InvalidSetting(f"prompt must be a string, got {type(prompt).__name__}")
    known = vocabulary(name)
    bad = [w for w in prompt.lower().replace(",", " ").split() if w not in known]
    if bad:
        raise InvalidSetting(f"prompt {prompt!r}: the {name} model was never trained on {sorted(set(bad))}; it knows "
                           f"only {known} (e.g. 'a red circle and a blue triangle')")
    return prompt


__all__ = ["vocabulary", "check_prompt"]
