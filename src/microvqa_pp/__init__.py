"""MicroVQA++: build, filter, release and evaluate microscopy visual question answering data."""

__version__ = "0.1.0"
