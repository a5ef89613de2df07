"""The AWS side of the deployed code: S3 event decoding, the S3 storage adapter, the
Lambda configuration and the per-stage entrypoints. It only adapts; the work is in
``fanout_core``."""
