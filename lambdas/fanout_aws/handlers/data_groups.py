"""Lambda entrypoint of the data_groups stage (see ``fanout_aws.stage_handler``)."""

from fanout_aws.stage_handler import handler_for

handler = handler_for("data_groups")
