"""A nonlinear three-variable SCM with closed-form interventional expectations.

Graph ``x -> z -> y`` and ``x -> y``::

    x = u_x                         u_x ~ N(0, 1)
    z = sin(x) + 0.5 u_z            u_z ~ N(0, 1)
    y = 0.5 x + z**2 + 0.3 u_y      u_y ~ N(0, 1)

so ``E[y | do(x = a)] = 0.5 a + sin(a)**2 + 0.25`` and ``E[y | do(z = b)] = b**2``.
A sample of 5,000 rows is shipped as ``data/triangle.csv`` (:func:`load_triangle`).
"""

from __future__ import annotations

import math
from importlib import resources

import torch
from torch import Tensor

from pyro_causalgen.seeding import seeded_generator

#: Parents of each variable, in the format of ``StructuralCausalModel``.
TRIANGLE_GRAPH: dict[str, list[str]] = {"x": [], "z": ["x"], "y": ["x", "z"]}
TRIANGLE_SEED = 20231124
TRIANGLE_ROWS = 5000


def triangle_mechanisms(noise: dict[str, Tensor], do: dict[str, float] | None = None):
    """Evaluate the SCM from its noise ``u_x, u_z, u_y`` (each ``(N,)``), under do."""
    do = do or {}
    x = torch.full_like(noise["x"], do["x"]) if "x" in do else noise["x"]
    z = torch.full_like(x, do["z"]) if "z" in do else torch.sin(x) + 0.5 * noise["z"]
    y = torch.full_like(x, do["y"]) if "y" in do else 0.5 * x + z**2 + 0.3 * noise["y"]
    return {"x": x, "z": z, "y": y}


def triangle_noise(data: dict[str, Tensor]) -> dict[str, Tensor]:
    """Exact abduction: the noise ``u_x, u_z, u_y`` that produced observed rows.

    Example::

        >>> rows = sample_triangle(4, seed=0)
        >>> back = triangle_mechanisms(triangle_noise(rows))
        >>> bool(torch.allclose(back["y"], rows["y"]))
        True
    """
    return {
        "x": data["x"],
        "z": (data["z"] - torch.sin(data["x"])) / 0.5,
        "y": (data["y"] - 0.5 * data["x"] - data["z"] ** 2) / 0.3,
    }


def sample_triangle(
    n: int, seed: int | None = None, do: dict[str, float] | None = None
) -> dict[str, Tensor]:
    """Draw ``n`` rows, ``float64``, from the SCM (optionally under ``do``).

    Example::

        >>> data = sample_triangle(3, seed=0)
        >>> sorted(data), data["y"].shape
        (['x', 'y', 'z'], torch.Size([3]))
    """
    gen = seeded_generator(seed)
    noise = {
        k: torch.randn(n, generator=gen, dtype=torch.float64) for k in ("x", "z", "y")
    }
    return triangle_mechanisms(noise, do)


def triangle_effect(variable: str, value: float) -> float:
    """Exact ``E[y | do(variable = value)]`` for ``variable`` in ``{"x", "z"}``.

    Example::

        >>> triangle_effect("z", 2.0)
        4.0
    """
    if variable == "x":
        return 0.5 * value + math.sin(value) ** 2 + 0.25
    if variable == "z":
        return value**2
    raise KeyError(f"no closed form for do({variable}); use 'x' or 'z'")


def load_triangle() -> dict[str, Tensor]:
    """The shipped 5,000-row sample (``float32`` tensors keyed by variable).

    Example::

        >>> load_triangle()["x"].shape
        torch.Size([5000])
    """
    text = resources.files("pyro_causalgen.datasets").joinpath("data/triangle.csv")
    lines = text.read_text().strip().splitlines()
    header = lines[0].split(",")
    rows = torch.tensor([[float(v) for v in line.split(",")] for line in lines[1:]])
    return {name: rows[:, i].contiguous() for i, name in enumerate(header)}


def write_triangle_csv(path: str) -> None:
    """Regenerate the shipped CSV (seed :data:`TRIANGLE_SEED`, 5,000 rows)."""
    data = sample_triangle(TRIANGLE_ROWS, seed=TRIANGLE_SEED)
    with open(path, "w") as f:
        f.write("x,z,y\n")
        for i in range(TRIANGLE_ROWS):
            f.write(
                ",".join(f"{data[k][i].item():.9g}" for k in ("x", "z", "y")) + "\n"
            )
