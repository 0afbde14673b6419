"""A peer that answers without end costs a bounded read (controller/httpread.py): in-process
fake servers behind httpx's MockTransport, no network."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import httpx

from controller.httpread import read_capped


def stream(chunks: Iterator[bytes]) -> httpx.Client:
    return httpx.Client(
        transport=httpx.MockTransport(lambda r: httpx.Response(200, content=chunks))
    )


def test_an_endless_answer_is_cut_at_the_limit() -> None:
    endless = itertools.repeat(b"x" * 65536)
    with stream(endless) as client, client.stream("GET", "http://peer/") as response:
        body, cut = read_capped(response, 1_000_000)
    assert (len(body), cut) == (1_000_000, "answer over 1,000,000 bytes")


def test_a_trickling_answer_stops_at_the_deadline() -> None:
    def trickle() -> Iterator[bytes]:
        while True:
            time.sleep(0.01)
            yield b"."

    with stream(trickle()) as client, client.stream("GET", "http://peer/") as response:
        body, cut = read_capped(response, 1_000_000, deadline=time.monotonic() + 0.2)
    assert cut == "no whole answer in time"
    assert 0 < len(body) < 1_000


def test_a_whole_answer_within_the_limit_is_read_whole() -> None:
    with stream(iter([b'{"a": ', b"1}"])) as client, client.stream("GET", "http://p/") as response:
        assert read_capped(response, 8) == (b'{"a": 1}', None)
