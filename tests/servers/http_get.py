"""A minimal HTTP GET for checking the servers themselves (not fanout's client, which is
what the crawl tests exercise): status, headers and body of any answer, 4xx and 5xx included."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from email.message import Message
from typing import Any

TIMEOUT_S = 10.0
MAX_PAGES = 100
_LINK = re.compile(r'<([^>]*)>\s*;\s*rel="([^"]*)"')


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Message
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def links(self) -> dict[str, str]:
        """The RFC 8288 ``Link`` header as {rel: URL} (json-server writes one rel per link)."""
        return {rel: url for url, rel in _LINK.findall(self.headers.get("Link", ""))}


def get(url: str, headers: dict[str, str] | None = None) -> Answer:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            return Answer(response.status, response.headers, response.read())
    except urllib.error.HTTPError as error:
        with error:
            return Answer(error.code, error.headers, error.read())


def follow_next(url: str, headers: dict[str, str] | None = None) -> list[Answer]:
    """Every page from ``url`` on, by ``rel="next"``; at most MAX_PAGES, or the test fails."""
    pages = [get(url, headers)]
    while "next" in pages[-1].links:
        assert len(pages) < MAX_PAGES, f"more than {MAX_PAGES} pages from {url}"
        pages.append(get(pages[-1].links["next"], headers))
    return pages
