"""Checks that every process of a distributed run built the same param groups."""

from __future__ import annotations

from .errors import SpecError


def is_distributed() -> bool:
    """Whether this process is one of two or more in an initialised ``torch.distributed`` group."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def check_same_on_every_rank(value: str, what: str) -> None:
    """Raise on every rank when ``value`` is not the same on all of them.

    Does nothing outside an initialised ``torch.distributed`` process group of two or more ranks.

    Args:
        value: This rank's value (a layout hash).
        what: What the value describes, for the message.

    Raises:
        SpecError: Some rank has another value; the message lists the ranks by value.
    """
    import torch.distributed as dist

    if not is_distributed():
        return
    values: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    if len(set(values)) > 1:
        by_value: dict[str | None, list[int]] = {}
        for rank, rank_value in enumerate(values):
            by_value.setdefault(rank_value, []).append(rank)
        listing = "; ".join(f"ranks {ranks}: {str(key)[:12]}" for key, ranks in by_value.items())
        raise SpecError(f"{what} differ between processes ({listing}); every rank must see the same model and spec")
