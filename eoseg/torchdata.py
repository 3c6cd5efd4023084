"""The torch ``Dataset`` over an eoseg dataset's tiles (kept apart so that building datasets needs no torch)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from eoseg.dataset import Manifest, scene_standardization
from eoseg.standardize import Standardization


class TileDataset(torch.utils.data.Dataset):
    """Standardized tiles of one split: ``(x float32 (C, S, S), y int64 (S, S), index)``.

    Applies exactly the transform a model card records (``template`` filled per scene), so a model sees
    in training what predict feeds it. Tiles are cached in memory after the first read.
    """

    def __init__(self, manifest: Manifest, split: str, roles: Sequence[str] | None = None,
                 template: Standardization | None = None, cache: bool = True):
        self.manifest = manifest
        self.split = split
        self.band_idx = manifest.band_indexes(roles)
        self.template = template or Standardization("scene")
        self.records = manifest.tiles(split)
        self.cache: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = {} if cache else None
        self._std = {sid: scene_standardization(self.template, s, self.band_idx)
                     for sid, s in manifest.scenes.items()}

    def __len__(self) -> int:
        return len(self.records)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw ``(image (C, S, S) float32 of the chosen bands, label uint8, valid bool)``."""
        with np.load(self.manifest.path / self.records[index]["file"]) as z:
            return z["image"][self.band_idx].astype(np.float32), z["label"], z["valid"]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        if self.cache is not None and index in self.cache:
            x, y = self.cache[index]
            return x, y, index
        image, label, valid = self.load(index)
        x = torch.from_numpy(self._std[self.records[index]["scene"]].apply(image, valid))
        y = torch.from_numpy(label.astype(np.int64))
        if self.cache is not None:
            self.cache[index] = (x, y)
        return x, y, index
