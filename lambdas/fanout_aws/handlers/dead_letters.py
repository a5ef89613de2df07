"""The dead-letter recorder's Lambda entrypoint (``fanout_aws.dead_letters``)."""

from fanout_aws.dead_letters import dead_letter_handler

handler = dead_letter_handler()
