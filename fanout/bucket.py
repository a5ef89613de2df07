"""Where a command's bucket is: a local directory or an S3 bucket, as a spec any process can open.

Every command and every worker process opens the bucket from the same ``StorageSpec``,
so injected storage faults and endpoints mean the same thing everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from fanout_core.storage import LocalDirStorage, Storage


@dataclass(frozen=True, kw_only=True)
class StorageSpec:
    """How to build the same storage in another process."""

    bucket_dir: str | None = None
    bucket: str | None = None
    endpoint_url: str | None = None
    region: str | None = None
    fault_rate: float = 0.0
    fault_seed: int | None = None

    def argv(self) -> list[str]:
        """The options that name this bucket on a printed command line (``redrive``, ``cost``)."""
        if not self.bucket:
            return ["--bucket-dir", str(self.bucket_dir or "fanout-data")]
        argv = ["--bucket", self.bucket]
        if self.endpoint_url:
            argv += ["--s3-endpoint-url", self.endpoint_url]
        if self.region:
            argv += ["--region", self.region]
        return argv

    def build(self, *, process_index: int = 0) -> Storage:
        storage: Storage
        if self.bucket:
            from fanout_aws.s3_storage import S3Storage

            storage = S3Storage(self.bucket, endpoint_url=self.endpoint_url, region=self.region)
        else:
            storage = LocalDirStorage(self.bucket_dir or "fanout-data")
        if self.fault_rate:
            from fanout.faults import FlakyStorage

            seed = None if self.fault_seed is None else self.fault_seed + 7919 * process_index
            storage = FlakyStorage(storage, self.fault_rate, seed=seed)
        return storage
