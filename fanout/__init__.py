"""fanout's local side: CLI, local runtime and the bundled Hermes simulator (not deployed)."""

__version__ = "0.1.0"
