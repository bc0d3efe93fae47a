"""The daily digest runs at its cron time (MLOPS_DIGEST_CRON, local time), never merely because the bot started."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from bot.scheduler import digest_due

BERLIN = ZoneInfo("Europe/Berlin")


@pytest.fixture
def in_berlin():
    """Local time is Berlin's (UTC+1 in January), so a cron read in UTC would fire an hour late."""
    import tzlocal

    before = os.environ.get("TZ")
    os.environ["TZ"] = "Europe/Berlin"
    tzlocal.reload_localzone()
    yield
    if before is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = before
    tzlocal.reload_localzone()


def local(day: int, hour: int, minute: int) -> datetime:
    return datetime(2026, 1, day, hour, minute, tzinfo=BERLIN).astimezone(UTC)


def digests(app) -> list[str]:
    return [m["text"] for m in app.chat.messages("mlops-digest")]


def test_the_digest_waits_for_its_cron_time_in_local_time(make_app, in_berlin):
    app = make_app(digest_cron="0 9 * * *")

    app.clock.now = local(5, 7, 26)  # the first start, before nine
    assert app.run_once()["digests"] == 0
    app.run_once()
    assert digests(app) == []

    app.clock.now = local(5, 9, 1)  # 08:01 UTC: only local time has passed nine
    assert app.run_once()["digests"] == 1
    assert len(digests(app)) == 1 and "2026-01-05" in digests(app)[0]

    app.clock.now = local(5, 9, 30)
    app.run_once()
    assert len(digests(app)) == 1

    app.clock.now = local(6, 9, 0)
    app.run_once()
    assert len(digests(app)) == 2 and "2026-01-06" in digests(app)[1]


def test_a_restart_posts_nothing_until_the_next_cron_time(make_app, in_berlin):
    first = make_app(digest_cron="0 9 * * *")
    first.clock.now = local(5, 7, 26)
    first.run_once()
    first.clock.now = local(5, 9, 1)
    first.run_once()
    assert len(digests(first)) == 1

    again = make_app(digest_cron="0 9 * * *")  # the same state: a restart at 09:10
    again.clock.now = local(5, 9, 10)
    again.run_once()
    assert len(digests(again)) == 1

    # Down over the next nine o'clock: the first cycle after it posts the missed digest, once.
    again.clock.now = local(7, 8, 0)
    again.run_once()
    again.run_once()
    assert len(digests(again)) == 2


def test_two_times_a_day_make_two_digests(make_app, in_berlin):
    app = make_app(digest_cron="0 9,17 * * *")
    app.clock.now = local(5, 8, 0)
    app.run_once()
    for hour, expected in ((9, 1), (12, 1), (17, 2), (18, 2)):
        app.clock.now = local(5, hour, 5)
        app.run_once()
        assert len(digests(app)) == expected, hour


@pytest.mark.parametrize(
    ("cron", "since", "now", "due"),
    [
        ("0 9 * * *", local(5, 7, 26), local(5, 8, 59), None),
        ("0 9 * * *", local(5, 7, 26), local(5, 9, 0), local(5, 9, 0)),
        ("0 9 * * *", local(5, 9, 0), local(5, 23, 0), None),  # a digest at nine is not due again at nine
        ("0 9 * * *", local(5, 9, 1), local(8, 10, 0), local(6, 9, 0)),  # the first missed time
        ("30 8 * * 1-5", local(9, 9, 0), local(12, 8, 29), None),  # Friday after the digest to Monday 08:29
        ("30 8 * * 1-5", local(9, 9, 0), local(12, 8, 30), local(12, 8, 30)),
        ("0 9 * * 0", local(9, 10, 0), local(11, 9, 0), local(11, 9, 0)),  # cron's Sunday is 0 ...
        ("0 9 * * 7", local(9, 10, 0), local(11, 9, 0), local(11, 9, 0)),  # ... and 7
        ("0 9 * * sat,sun", local(9, 10, 0), local(10, 9, 30), local(10, 9, 0)),
    ],
)
def test_digest_due(in_berlin, cron, since, now, due):
    assert digest_due(cron, since=since, now=now) == due
