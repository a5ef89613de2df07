"""Engine ``stepfunctions``: the starter function's entrypoint (``fanout_aws.sfn_starter``)."""

from fanout_aws.sfn_starter import starter_handler

handler = starter_handler()
