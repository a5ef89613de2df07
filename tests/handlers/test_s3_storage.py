"""Both ``Storage`` adapters give the same guarantees, and S3's failures reach the core
as the right error type.

The behavioural tests run once against ``S3Storage`` (real boto3 against moto's
in-process S3) and once against ``LocalDirStorage``. moto 5.2 honours
``If-None-Match: *`` on PutObject but checks and writes in two steps without a lock
(two winners out of eight racing threads were seen in 1 of 50 trials), while real S3
decides atomically. The S3 fixture therefore serialises moto's PutObject handler,
standing in for S3's atomicity; the race test still catches any check-then-write in
the adapter itself, because that spans two requests.
"""

from __future__ import annotations

import io
import itertools
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.config import Config
from botocore.response import StreamingBody
from botocore.stub import Stubber
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.s3.models import s3_backends
from moto.s3.responses import S3Response

from fanout_aws.s3_storage import S3Storage, make_client
from fanout_core.error_kinds import kind_of
from fanout_core.errors import PermanentError, TransientError
from fanout_core.storage import LocalDirStorage, NoSuchKey, Storage

BUCKET = "fanout-test-bucket"
"""For tests that never reach a bucket; the others get their own from ``bucket``."""
REGION = "us-east-1"
SMALL_PAGE = 7


FAKE_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
}


@pytest.fixture(scope="module", autouse=True)
def fake_aws_environment() -> Iterator[None]:
    """Fake credentials and region for every test here, so nothing can reach a real
    account whichever test first makes the shared boto3 session resolve them."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in FAKE_ENVIRONMENT.items():
            patch.setenv(name, value)
        yield


@pytest.fixture(scope="module")
def moto_s3() -> Iterator[Any]:
    """One moto S3 for the module; each test gets its own bucket from ``bucket``,
    which is much cheaper than restarting the mock."""
    with pytest.MonkeyPatch.context() as patch:
        lock = threading.Lock()
        original = S3Response.put_object

        def put_object(self: S3Response) -> Any:
            with lock:  # S3 decides If-None-Match atomically; moto alone does not
                return original(self)

        patch.setattr(S3Response, "put_object", put_object)
        with mock_aws():
            yield make_client(region=REGION)


_bucket_numbers = itertools.count()


@pytest.fixture
def bucket(moto_s3: Any) -> str:
    name = f"fanout-test-{next(_bucket_numbers)}"
    moto_s3.create_bucket(Bucket=name)
    return name


@pytest.fixture(params=["s3", "local"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    """Each adapter in turn; S3 lists in small pages so listings cross page boundaries."""
    if request.param == "s3":
        bucket_name = request.getfixturevalue("bucket")
        client = request.getfixturevalue("moto_s3")
        return S3Storage(bucket_name, client=client, page_size=SMALL_PAGE)
    return LocalDirStorage(tmp_path / "bucket")


# Keys as the pipeline makes them (keys.py percent-encodes identifiers, so a literal
# "%" is common) and as people type them.
AWKWARD_KEYS = [
    "amazon_warriors/Q3 report.json",
    "troops/run=r1/warrior=O%27Neil%20%2B%20Sons/part-00001.json",
    "a/plus+sign.json",
    "a/equals=sign=twice.json",
    "a/it's quoted.json",
    "a/100% literal %2B.json",
    "a/Ωμέγα/日本語 キー.json",
    "a/mixed ~(x),@:y;&$!.json",
    "a/emoji \U0001f600.json",
    "a/double  space .json",
]


def test_storage_implements_the_protocol(storage: Storage) -> None:
    assert isinstance(storage, Storage)


def test_get_of_a_missing_key_raises_no_such_key(storage: Storage) -> None:
    with pytest.raises(NoSuchKey):
        storage.get("a/missing.json")


def test_no_such_key_is_a_key_error_so_callers_can_catch_either(storage: Storage) -> None:
    with pytest.raises(KeyError):
        storage.get("a/missing.json")


@pytest.mark.parametrize("body", [b"", b"{}", bytes(range(256)) * 40])
def test_put_then_get_returns_the_exact_bytes(storage: Storage, body: bytes) -> None:
    storage.put("a/b.json", body)
    assert storage.get("a/b.json") == body


def test_put_replaces_an_existing_object(storage: Storage) -> None:
    storage.put("a/b.json", b"first")
    storage.put("a/b.json", b"second")
    assert storage.get("a/b.json") == b"second"


def test_exists_follows_put_and_delete(storage: Storage) -> None:
    assert storage.exists("a/b.json") is False
    storage.put("a/b.json", b"x")
    assert storage.exists("a/b.json") is True
    storage.delete("a/b.json")
    assert storage.exists("a/b.json") is False
    with pytest.raises(NoSuchKey):
        storage.get("a/b.json")


def test_delete_of_a_missing_key_is_fine(storage: Storage) -> None:
    storage.delete("a/never-written.json")
    assert not storage.exists("a/never-written.json")


def test_exists_is_false_for_a_folder_like_prefix(storage: Storage) -> None:
    storage.put("a/b/c.json", b"x")
    assert storage.exists("a/b") is False


@pytest.mark.parametrize("key", AWKWARD_KEYS)
def test_awkward_keys_round_trip_exactly(storage: Storage, key: str) -> None:
    storage.put(key, key.encode())
    assert storage.exists(key)
    assert storage.get(key) == key.encode()
    folder = key.rsplit("/", 1)[0] + "/"
    assert list(storage.list(folder)) == [key]


def test_awkward_keys_are_distinct_objects(storage: Storage) -> None:
    """'+' vs space vs '%2B' vs '%20' must never collapse into one object."""
    keys = ["k/a+b", "k/a b", "k/a%2Bb", "k/a%20b", "k/a%252Bb"]
    for key in keys:
        storage.put(key, key.encode())
    assert list(storage.list("k/")) == sorted(keys)
    for key in keys:
        assert storage.get(key) == key.encode()


def test_list_is_lexicographic_and_limited_to_the_prefix(storage: Storage) -> None:
    # No "p/a" beside "p/a/...": S3 allows it, a directory tree (LocalDirStorage) cannot.
    keys = ["p/b", "p/a/2", "p/a/10", "p/A", "p/a.json", "p/ä", "p/日", "q/a", "pp/a", "p-/a"]
    for key in keys:
        storage.put(key, b"x")
    assert list(storage.list("p/")) == sorted(k for k in keys if k.startswith("p/"))


def test_list_prefix_may_end_mid_segment(storage: Storage) -> None:
    for key in ["r/run=1/a", "r/run=10/a", "r/run=2/a", "r/runx"]:
        storage.put(key, b"x")
    assert list(storage.list("r/run=1")) == ["r/run=1/a", "r/run=10/a"]


def test_list_of_an_unused_prefix_is_empty(storage: Storage) -> None:
    storage.put("a/b", b"x")
    assert list(storage.list("nothing/")) == []


def test_list_crosses_page_boundaries_without_loss_or_repeats(storage: Storage) -> None:
    keys = [f"m/{i:03d}.json" for i in range(SMALL_PAGE * 4 + 3)]
    for key in reversed(keys):
        storage.put(key, b"x")
    assert list(storage.list("m/")) == keys


def test_put_if_absent_creates_once_and_never_overwrites(storage: Storage) -> None:
    assert storage.put_if_absent("d/task.json", b"first") is True
    assert storage.put_if_absent("d/task.json", b"second") is False
    assert storage.get("d/task.json") == b"first"


def test_put_if_absent_does_not_replace_an_object_written_by_put(storage: Storage) -> None:
    storage.put("d/task.json", b"plain")
    assert storage.put_if_absent("d/task.json", b"conditional") is False
    assert storage.get("d/task.json") == b"plain"


@pytest.mark.parametrize("round_", range(5))
def test_put_if_absent_race_has_exactly_one_winner(storage: Storage, round_: int) -> None:
    key = f"race/{round_}/done.json"
    threads_n = 8
    barrier = threading.Barrier(threads_n)
    results: dict[int, bool] = {}
    errors: list[BaseException] = []

    def contend(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            results[i] = storage.put_if_absent(key, f"writer-{i}".encode())
        except BaseException as exc:  # surfaced below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    winners = [i for i, won in results.items() if won]
    assert len(results) == threads_n
    assert len(winners) == 1
    assert storage.get(key) == f"writer-{winners[0]}".encode()


# ---- S3 only -----------------------------------------------------------------------


def test_list_pages_through_more_than_a_thousand_keys(moto_s3: Any, bucket: str) -> None:
    keys = [f"big/{i:05d}" for i in range(1003)]
    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    for key in reversed(keys):  # straight into moto: a thousand HTTP puts take seconds
        backend.put_object(bucket, key, b"")
    assert list(S3Storage(bucket, client=moto_s3).list("big/")) == keys


def test_put_if_absent_sends_if_none_match_star_and_put_does_not(moto_s3: Any, bucket: str) -> None:
    """Real S3 needs the header on the wire; check the request botocore sends."""
    client = make_client(region=REGION)  # its own event hooks, not the shared client's
    storage = S3Storage(bucket, client=client)
    sent: list[str | None] = []

    def capture(request: Any, **_: Any) -> None:
        value = request.headers.get("If-None-Match")
        sent.append(value.decode() if isinstance(value, bytes) else value)

    client.meta.events.register("before-send.s3.PutObject", capture)
    storage.put_if_absent("h/a.json", b"x")
    storage.put("h/b.json", b"x")
    assert sent == ["*", None]


def test_get_on_a_missing_bucket_is_permanent(moto_s3: Any) -> None:
    with pytest.raises(PermanentError, match="NoSuchBucket"):
        S3Storage("fanout-no-such-bucket", client=moto_s3).get("a")


def test_put_on_a_missing_bucket_is_permanent(moto_s3: Any) -> None:
    with pytest.raises(PermanentError, match="NoSuchBucket"):
        S3Storage("fanout-no-such-bucket", client=moto_s3).put("a", b"x")


def test_default_client_retries_and_pools_for_a_thread_pool(moto_s3: Any) -> None:
    config = S3Storage(BUCKET, region=REGION).client.meta.config
    # botocore stores max_attempts=5 (retries) as total_max_attempts=6 (attempts)
    assert config.retries == {"mode": "standard", "total_max_attempts": 6}
    assert config.max_pool_connections == 64


def test_endpoint_url_uses_path_style_addressing(moto_s3: Any) -> None:
    storage = S3Storage(BUCKET, endpoint_url="http://127.0.0.1:9", region=REGION)
    assert storage.client.meta.endpoint_url == "http://127.0.0.1:9"
    assert storage.client.meta.config.s3["addressing_style"] == "path"
    assert storage.client.meta.config.retries["total_max_attempts"] == 6


@pytest.mark.parametrize("page_size", [0, 1001])
def test_page_size_outside_s3_limits_is_rejected(page_size: int) -> None:
    with pytest.raises(ValueError, match="page_size"):
        S3Storage(BUCKET, client=object(), page_size=page_size)


# ---- error mapping -----------------------------------------------------------------


def _stubbed() -> tuple[S3Storage, Stubber]:
    client = make_client(region=REGION)
    return S3Storage(BUCKET, client=client), Stubber(client)


CALLS: dict[str, tuple[str, Callable[[S3Storage], object]]] = {
    "get": ("get_object", lambda s: s.get("k")),
    "put": ("put_object", lambda s: s.put("k", b"x")),
    "put_if_absent": ("put_object", lambda s: s.put_if_absent("k", b"x")),
    "exists": ("head_object", lambda s: s.exists("k")),
    "delete": ("delete_object", lambda s: s.delete("k")),
    "list": ("list_objects_v2", lambda s: list(s.list("p/"))),
}

ERROR_TABLE = [
    # (call, S3 error code, HTTP status, expected error type)
    ("get", "SlowDown", 503, TransientError),
    ("put", "SlowDown", 503, TransientError),
    ("list", "SlowDown", 503, TransientError),
    ("get", "InternalError", 500, TransientError),
    ("delete", "InternalError", 500, TransientError),
    ("put_if_absent", "ServiceUnavailable", 503, TransientError),
    ("exists", "503", 503, TransientError),
    ("put", "RequestTimeout", 400, TransientError),
    ("put_if_absent", "ConditionalRequestConflict", 409, TransientError),
    ("get", "SomethingNew", 502, TransientError),
    ("get", "TooManyRequests", 429, TransientError),
    ("get", "AccessDenied", 403, PermanentError),
    ("put", "AccessDenied", 403, PermanentError),
    ("list", "AccessDenied", 403, PermanentError),
    ("put_if_absent", "NoSuchBucket", 404, PermanentError),
    ("delete", "NoSuchBucket", 404, PermanentError),
    ("put", "InvalidArgument", 400, PermanentError),
]


@pytest.mark.parametrize(("call", "code", "status", "expected"), ERROR_TABLE)
def test_s3_error_codes_map_to_the_cores_error_types(
    call: str, code: str, status: int, expected: type[Exception]
) -> None:
    storage, stubber = _stubbed()
    operation, invoke = CALLS[call]
    stubber.add_client_error(operation, service_error_code=code, http_status_code=status)
    with stubber, pytest.raises(expected) as caught:
        invoke(storage)
    assert caught.value.status == status  # type: ignore[attr-defined]
    assert code in str(caught.value)
    assert kind_of(caught.value) == "storage"  # an S3 503 is not "Hermes answered 5xx"


def test_put_if_absent_returns_false_on_412_precondition_failed() -> None:
    storage, stubber = _stubbed()
    stubber.add_client_error("put_object", service_error_code="PreconditionFailed", http_status_code=412)
    with stubber:
        assert storage.put_if_absent("k", b"x") is False


def test_get_maps_no_such_key_to_the_cores_no_such_key() -> None:
    storage, stubber = _stubbed()
    stubber.add_client_error("get_object", service_error_code="NoSuchKey", http_status_code=404)
    with stubber, pytest.raises(NoSuchKey):
        storage.get("k")


def test_exists_is_one_head_of_the_exact_key() -> None:
    """A HEAD is billed as a GET, a listing as a PUT: every task checks its done marker."""
    storage, stubber = _stubbed()
    stubber.add_client_error(
        "head_object",
        service_error_code="404",
        http_status_code=404,
        expected_params={"Bucket": BUCKET, "Key": "done/troops/k.json"},
    )
    stubber.add_response("head_object", {"ETag": '"e"'}, {"Bucket": BUCKET, "Key": "done/troops/k.json"})
    with stubber:
        assert storage.exists("done/troops/k.json") is False
        assert storage.exists("done/troops/k.json") is True
    stubber.assert_no_pending_responses()


def test_a_head_answered_200_without_an_etag_or_date_is_not_taken_for_s3() -> None:
    """An endpoint that is not S3 (one answering 200 to anything) would otherwise say every
    key exists: a HEAD's answer has no body whose parsing would fail."""
    storage, stubber = _stubbed()
    stubber.add_response("head_object", {})
    with stubber, pytest.raises(TransientError, match="is the endpoint S3"):
        storage.exists("done/troops/k.json")


def _head_denied(stubber: Stubber) -> None:
    stubber.add_client_error("head_object", service_error_code="403", http_status_code=403)


def test_a_head_answered_403_is_settled_by_listing_the_key_itself() -> None:
    """S3 answers a HEAD of a missing key 403 to a role that may list only under an
    ``s3:prefix`` condition; a listing with the key as prefix is covered by that grant."""
    storage, stubber = _stubbed()
    _head_denied(stubber)
    expected = {"Bucket": BUCKET, "Prefix": "done/troops/k.json", "MaxKeys": 1}
    stubber.add_response("list_objects_v2", {"KeyCount": 0}, expected)
    _head_denied(stubber)
    stubber.add_response("list_objects_v2", {"KeyCount": 1, "Contents": [{"Key": "done/troops/k.json"}]})
    with stubber:
        assert storage.exists("done/troops/k.json") is False
        assert storage.exists("done/troops/k.json") is True
    stubber.assert_no_pending_responses()


def test_exists_is_false_when_only_a_longer_key_shares_the_prefix() -> None:
    storage, stubber = _stubbed()
    _head_denied(stubber)
    stubber.add_response("list_objects_v2", {"KeyCount": 1, "Contents": [{"Key": "k.json.bak"}]})
    with stubber:
        assert storage.exists("k.json") is False


def test_a_storage_told_its_role_lists_only_under_prefixes_checks_by_listing_alone() -> None:
    """The dead-letter recorder's: no HEAD that S3 would answer 403 first."""
    client = make_client(region=REGION)
    storage, stubber = S3Storage(BUCKET, client=client, exists_by_head=False), Stubber(client)
    expected = {"Bucket": BUCKET, "Prefix": "done/troops/k.json", "MaxKeys": 1}
    stubber.add_response("list_objects_v2", {"KeyCount": 0}, expected)
    with stubber:
        assert storage.exists("done/troops/k.json") is False
    stubber.assert_no_pending_responses()


def test_a_head_and_a_listing_both_denied_is_permanent() -> None:
    storage, stubber = _stubbed()
    _head_denied(stubber)
    stubber.add_client_error("list_objects_v2", service_error_code="AccessDenied", http_status_code=403)
    with stubber, pytest.raises(PermanentError, match="AccessDenied"):
        storage.exists("k")


def test_a_body_cut_short_mid_read_is_transient() -> None:
    storage, stubber = _stubbed()
    stubber.add_response("get_object", {"Body": StreamingBody(io.BytesIO(b"abc"), 10)})
    with stubber, pytest.raises(TransientError):
        storage.get("k")


def _one_shot_client(endpoint_url: str) -> Any:
    config = Config(
        connect_timeout=0.5, read_timeout=0.3, retries={"total_max_attempts": 1, "mode": "standard"}
    )
    return make_client(endpoint_url=endpoint_url, region=REGION, config=config)


def test_a_refused_connection_is_transient() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago refuses connections
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    storage = S3Storage(BUCKET, client=_one_shot_client(f"http://127.0.0.1:{port}"))
    with pytest.raises(TransientError, match="EndpointConnectionError"):
        storage.get("k")


def test_a_server_that_never_answers_is_transient() -> None:
    with socket.socket() as server:  # accepts into the backlog, never replies
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        storage = S3Storage(BUCKET, client=_one_shot_client(f"http://127.0.0.1:{server.getsockname()[1]}"))
        with pytest.raises(TransientError, match="ReadTimeout"):
            storage.get("k")
