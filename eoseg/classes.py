"""The class scheme: ids, names and colours of the four coastal classes, and the nodata id."""

from __future__ import annotations

from dataclasses import dataclass

NODATA_CLASS = 255


@dataclass(frozen=True)
class ClassInfo:
    id: int
    name: str
    colour: tuple[int, int, int]
    description: str

    @property
    def hex(self) -> str:
        return "#{:02x}{:02x}{:02x}".format(*self.colour)


@dataclass(frozen=True)
class ClassScheme:
    classes: tuple[ClassInfo, ...]
    nodata: int = NODATA_CLASS

    @property
    def ids(self) -> list[int]:
        return [c.id for c in self.classes]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def colours(self) -> list[tuple[int, int, int]]:
        return [c.colour for c in self.classes]

    def __len__(self) -> int:
        return len(self.classes)

    def name_of(self, class_id: int) -> str:
        for c in self.classes:
            if c.id == class_id:
                return c.name
        return "nodata" if class_id == self.nodata else f"class_{class_id}"

    def colormap(self) -> dict[int, tuple[int, int, int, int]]:
        """A GDAL palette: class colours, nodata transparent."""
        cmap = {c.id: (*c.colour, 255) for c in self.classes}
        cmap[self.nodata] = (0, 0, 0, 0)
        return cmap

    def to_dict(self) -> dict:
        return {
            "nodata": self.nodata,
            "classes": [
                {"id": c.id, "name": c.name, "colour": c.hex, "description": c.description} for c in self.classes
            ],
        }

    @classmethod
    def from_dict(cls, data: dict) -> ClassScheme:
        infos = []
        for c in data["classes"]:
            colour = c["colour"]
            if isinstance(colour, str):
                colour = tuple(int(colour.lstrip("#")[i : i + 2], 16) for i in (0, 2, 4))
            infos.append(ClassInfo(int(c["id"]), c["name"], tuple(colour), c.get("description", "")))
        return cls(tuple(infos), int(data.get("nodata", NODATA_CLASS)))


COASTAL = ClassScheme(
    (
        ClassInfo(0, "water", (31, 120, 180), "open water: ocean, lagoons, rivers"),
        ClassInfo(1, "whitewater", (255, 255, 255), "white water: breaking waves and surf"),
        ClassInfo(2, "sand", (237, 201, 120), "sand and bare beach sediment"),
        ClassInfo(3, "other", (77, 146, 33), "everything else: vegetation, built land, rock, cloud"),
    )
)
