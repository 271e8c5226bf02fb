"""Names of pairs and stimuli, as in the H-Mix data (DESIGN section 1). Pure Python."""

from __future__ import annotations

from typing import NamedTuple

GRID_LAMS = tuple(round(0.1 * i, 1) for i in range(11))
SINGLE_LAMS = (0.1, 0.25, 0.5, 0.75, 0.9)


class PairKey(NamedTuple):
    class1: str
    id1: int
    class2: str
    id2: int

    @property
    def name(self) -> str:
        return f"{self.class1}_{self.id1}_{self.class2}_{self.id2}"


def format_lam(lam: float) -> str:
    """0.5 -> '0.5', 0.25 -> '0.25', 0 -> '0.0' (H-Mix file names)."""
    return repr(round(float(lam), 4))


def stimulus_name(lam: float, pair: PairKey) -> str:
    return f"mixed_{format_lam(lam)}_{pair.name}.png"


def parse_pair_name(text: str) -> PairKey:
    """'Airplane_1596_Frog_3615' -> PairKey; ValueError with the reason otherwise."""
    parts = text.strip().removesuffix(".png").split("_")
    if len(parts) != 4:
        raise ValueError(f"pair {text!r} is not of the form Class1_id1_Class2_id2")
    class1, id1, class2, id2 = parts
    try:
        return PairKey(class1, int(id1), class2, int(id2))
    except ValueError:
        raise ValueError(f"pair {text!r}: ids must be whole numbers") from None
