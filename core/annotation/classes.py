"""Label classes: index value, name and colour, with the default palette."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Color = tuple[int, int, int]

BACKGROUND = 0


def voc_color(index: int) -> Color:
    """Colour of ``index`` in the Pascal VOC palette (bit-interleaved, as VOC's devkit builds it)."""
    r = g = b = 0
    c = index
    for shift in range(7, -1, -1):
        r |= (c & 1) << shift
        g |= ((c >> 1) & 1) << shift
        b |= ((c >> 2) & 1) << shift
        c >>= 3
    return r, g, b


# Bright, mutually distinct colours for the classes a user adds (VOC's first colours are dark
# and hard to see over medical and microscopy images). Past the list, VOC colours take over.
DISTINCT_COLORS: tuple[Color, ...] = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
    (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128),
)


def default_color(index: int) -> Color:
    """Display colour for a new class with this index."""
    if 1 <= index <= len(DISTINCT_COLORS):
        return DISTINCT_COLORS[index - 1]
    return voc_color(index % 256)


@dataclass(frozen=True)
class LabelClass:
    """One class of the project: the value stored in masks, a name and a display colour."""

    index: int
    name: str
    color: Color

    def to_json(self) -> dict:
        return {"id": self.index, "name": self.name, "color": list(self.color)}

    @classmethod
    def from_json(cls, data: dict) -> LabelClass:
        color = tuple(int(c) for c in data.get("color", voc_color(int(data["id"]))))
        if len(color) != 3 or not all(0 <= c <= 255 for c in color):
            raise ValueError(f"class {data.get('name')!r}: colour must be three values 0-255")
        return cls(int(data["id"]), str(data["name"]), color)  # type: ignore[arg-type]


def default_classes() -> list[LabelClass]:
    """Background plus one foreground class: what a new project starts with."""
    return [LabelClass(0, "background", (0, 0, 0)), LabelClass(1, "object", default_color(1))]


def palette_rgb(classes: list[LabelClass], size: int = 256) -> np.ndarray:
    """(size, 3) uint8 colour lookup table: index -> colour, VOC colours for unknown indices."""
    table = np.array([voc_color(i % 256) for i in range(size)], dtype=np.uint8)
    for cls in classes:
        if cls.index < size:
            table[cls.index] = cls.color
    return table


def remap_for_delete(deleted: int, replacement: int, max_index: int) -> np.ndarray:
    """Lookup table that sends ``deleted`` to ``replacement`` and keeps every other value."""
    table = np.arange(max_index + 1, dtype=np.int64)
    table[deleted] = replacement
    return table
