"""A Lambda entrypoint, named by the stage table's ``handler`` field; its stage is its module name."""

from fanout_aws.stage_handler import handler_for

handler = handler_for(__name__.rpartition(".")[2])
