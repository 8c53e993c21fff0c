"""The bench's py-spy reader (tests/bench/spy.py): the groups a profile is told in."""

from tests.bench import spy

PREFIX = "_run_module_as_main (<frozen runpy>:198);Runner.run (asyncio/runners.py:118)"
RAW = "\n".join(
    [
        # the leaf decides; paths as py-spy writes them, short
        f"{PREFIX};RedisStore._round_trip (router/state/redis/__init__.py:217) 7",
        f"{PREFIX};RedisStore._round_trip (router/state/redis/__init__.py:217);"
        "AbstractConnection.send_packed_command (redis/asyncio/connection.py:680) 5",
        f"{PREFIX};StreamWriter.writelines (asyncio/streams.py:346) 3",
        f"{PREFIX};RequestResponseCycle.send (uvicorn/protocols/http/httptools_impl.py:524) 4",
        f"{PREFIX};Settlement.close (router/settlement.py:78) 2",
        f"{PREFIX};Proxy.forward (router/proxy.py:81) 6",
        f"{PREFIX} 2",
        f"{PREFIX};Timeout.reschedule (asyncio/timeouts.py:71) 1",
        "__init__ (<string>:16) 1",
        "",
        "not a sample line",
    ]
)


def test_samples_go_to_the_group_of_the_frame_they_were_taken_in():
    profile = spy.read(RAW, seconds=1.0)
    assert profile.samples == 31
    assert profile.groups == {
        "state store: memory or Redis (scripts' calls, replies), guard": 7,
        "redis-py: pool, connection, parser": 8,
        "uvicorn's HTTP server": 4,
        "settlement and limits (admission, settlement, ledger, limits)": 2,
        "router: envelope, handler, routing, translate, attempt": 6,
        "event loop (uvloop, in C: callbacks, socket I/O)": 2,
        "asyncio (tasks, futures, timeouts, locks)": 1,
        spy.OTHER: 1,
    }
    assert profile.busy == 31 / spy.RATE
    top_frame, top_share = profile.top(1)[0]
    assert top_frame == "RedisStore._round_trip (router/state/redis/__init__.py:217)"
    assert top_share == 7 / 31


def test_the_table_has_a_column_per_run_and_a_row_per_group_seen():
    one = spy.read(RAW, seconds=1.0)
    two = spy.read(f"{PREFIX};Proxy.forward (router/proxy.py:81) 5", seconds=1.0)
    lines = spy.table([("c=1", one), ("c=64", two)]).splitlines()
    assert lines[0] == "| where the router's CPU went | c=1 | c=64 |"
    row = next(line for line in lines if line.startswith("| router: envelope"))
    assert row.endswith(f"| {6 / 31:.1%} | 100.0% |")
    assert not any("stream relay" in line for line in lines)  # neither run had a sample there


def test_translation_frames_have_their_own_group_apart_from_the_rest_of_router():
    raw = (
        f"{PREFIX};ResponseStream.events (router/api/openai_responses/stream.py:101) 3\n"
        f"{PREFIX};Proxy.forward (router/proxy.py:81) 1"
    )
    assert spy.read(raw, seconds=1.0).groups == {
        "API translation (router/api: messages, responses, embeddings)": 3,
        "router: envelope, handler, routing, translate, attempt": 1,
    }


def test_functions_sum_their_lines_inclusive_and_self():
    raw = "\n".join(
        [
            f"{PREFIX};ResponseStream.events (router/api/openai_responses/stream.py:101) 3",
            f"{PREFIX};ResponseStream.events (router/api/openai_responses/stream.py:120);"
            "Text.delta (router/api/openai_responses/items.py:40) 2",
            f"{PREFIX};ResponseStream.events (router/api/openai_responses/stream.py:101);"
            "data_of (router/sse.py:60) 1",
            f"{PREFIX} 4",
        ]
    )
    within, functions = spy.read(raw, seconds=1.0).functions("router/api/")
    assert within == 6 / 10
    assert functions == {
        "ResponseStream.events (router/api/openai_responses/stream.py)": (6 / 10, 3 / 10),
        "Text.delta (router/api/openai_responses/items.py)": (2 / 10, 2 / 10),
    }
    assert spy.function("<module> (<string>)") == "<module> (<string>)"  # no line number: as it is
