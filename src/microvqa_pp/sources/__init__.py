"""Figure sources: BIOMEDICA webdataset shards, parquet files and folders of images with captions."""

from microvqa_pp.sources.base import RawSample, SourceLocation
from microvqa_pp.sources.locate import detect_kind, expand_braces, locate_sources

__all__ = ["RawSample", "SourceLocation", "detect_kind", "expand_braces", "locate_sources"]
