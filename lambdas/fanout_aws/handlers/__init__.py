"""A Lambda entrypoint, named by the stage table's ``handler`` field; its stage is its module name."""
