"""One module per stage, named in the stage table's ``handler`` field."""
