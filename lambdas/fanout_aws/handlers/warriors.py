"""Lambda entrypoint of the warriors stage (see ``fanout_aws.stage_handler``)."""

from fanout_aws.stage_handler import handler_for

handler = handler_for("warriors")
