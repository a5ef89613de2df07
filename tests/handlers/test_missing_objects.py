"""A missing task object reads as "does not exist", not as S3's 403: GetObject of a
missing key answers AccessDenied to a role that may list only under an ``s3:prefix``
condition, so the adapter checks with a listing before calling it denied."""

from __future__ import annotations

from typing import Any

import pytest
import task_keys
from botocore.exceptions import ClientError

from fanout_aws.s3_event import s3_event_for
from fanout_aws.s3_storage import S3Storage
from fanout_core import keys
from fanout_core.errors import PermanentError
from fanout_core.failures import FailureRecord
from fanout_core.storage import NoSuchKey

from .conftest import BUCKET, invoke


def _get_answers_403(client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(**_: Any) -> Any:
        raise ClientError(
            {
                "Error": {"Code": "AccessDenied", "Message": "Access Denied"},
                "ResponseMetadata": {"HTTPStatusCode": 403},
            },
            "GetObject",
        )

    monkeypatch.setattr(client, "get_object", denied)


def test_a_403_for_a_key_that_is_not_listed_is_no_such_key(deployment, monkeypatch):
    dep = deployment()
    _get_answers_403(dep.s3, monkeypatch)
    with pytest.raises(NoSuchKey):
        S3Storage(BUCKET, client=dep.s3).get("troops/run=r/warrior=w/part-00000.json")


def test_a_403_for_a_key_that_exists_stays_denied(deployment, monkeypatch):
    dep = deployment()
    key = "troops/run=r/warrior=w/part-00000.json"
    dep.storage.put(key, b"{}")
    _get_answers_403(dep.s3, monkeypatch)
    with pytest.raises(PermanentError, match="AccessDenied"):
        S3Storage(BUCKET, client=dep.s3).get(key)


def test_a_missing_task_object_is_recorded_as_not_existing(deployment, monkeypatch):
    dep = deployment()
    key = task_keys.troops_task_key("gone", "w", 0)
    real = S3Storage.__init__

    def with_403(self: S3Storage, *args: Any, **kwargs: Any) -> None:
        real(self, *args, **kwargs)
        _get_answers_403(self.client, monkeypatch)

    monkeypatch.setattr(S3Storage, "__init__", with_403)
    invoke("troops", s3_event_for(BUCKET, [key]), monkeypatch, dep)
    record = FailureRecord.from_bytes(dep.storage.get(keys.failed_key(key)))
    assert "does not exist" in record.message
    assert record.error_kind == "bad_task" and record.status is None
