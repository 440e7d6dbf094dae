"""Private random generators: seeded runs that leave the global RNG state alone."""

from __future__ import annotations

import torch


def seeded_generator(seed: int | None) -> torch.Generator:
    """A CPU generator seeded by ``seed``, or from fresh entropy if ``None``.

    Example::

        >>> a, b = seeded_generator(0), seeded_generator(0)
        >>> torch.equal(torch.randperm(5, generator=a), torch.randperm(5, generator=b))
        True
    """
    gen = torch.Generator()
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(seed)
    return gen
