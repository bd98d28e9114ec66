"""llmdit: a command-line toolkit for Z-Image and Qwen-Image text-to-image work."""

__version__ = "0.1.0"
