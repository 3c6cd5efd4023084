"""eoseg: coastal segmentation of GeoTIFF scenes (water, white-water, sand, other)."""

__version__ = "0.1.0"
