"""The stack's building blocks: each creates its resources and exposes them as attributes."""
