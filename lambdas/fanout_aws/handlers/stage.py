"""The Lambda entrypoint of every stage (the stage table's ``handler``): ``FANOUT_STAGE``
names the function's stage, ``FANOUT_API`` the description whose table it belongs to."""

from fanout_aws.stage_handler import handler_for

handler = handler_for()
