"""The end-to-end demo: the platform's seed workflow replayed through events on the embedded defaults."""

from producers.demo.run import run_demo

__all__ = ["run_demo"]
