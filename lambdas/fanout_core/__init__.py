"""The pipeline core: pure Python, no Lambda, no boto3, no event dicts.

The Lambda handlers (``fanout_aws``) and the local runtime (``fanout.local_runtime``) both
drive this package, so a bug fixed here is fixed everywhere.
"""
