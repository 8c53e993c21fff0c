"""The translated APIs against Chat Completions: one answer asked for two ways, in one run.

/v1/messages and /v1/responses are chat streams upstream, translated event by event on the way
back; /v1/embeddings is checked and re-encoded. Each pair scenario measures such an API and its
chat twin through the same router process and simulator, interleaved run by run, so the two
differ in what the API costs and in nothing else:

  - a stream's twin is the chat request the translation itself sends upstream (router.api's own
    `request`), so the simulator does the same work and the relay passes the same chunks; what
    differs is the translation of each chunk and the bytes the client reads;
  - embeddings have no chat equivalent: their twin is a non-stream chat request with the same
    text as prompt, to the same simulator, a reference for what a plain request costs.

Compared: req/s as a ratio (API / chat), time to first token and whole-request p50 as a
difference, and router CPU per request of each.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import orjson

from router.api import ENDPOINTS
from tests.bench import report, spy
from tests.bench.scenarios import Scenario, Target
from tests.bench.servers import SIMS, Child, Profile

Row = dict[str, Any]
Rows = list[tuple[str, Row]]
"""A pair scenario's rows: (target name `profile/api`, medians), the chat twin before its API."""

PATHS = {
    "chat": "/v1/chat/completions",
    "messages": "/v1/messages",
    "responses": "/v1/responses",
    "embeddings": "/v1/embeddings",
}
PROMPT = "Benchmark me."
"""The streams' prompt, as the chat scenarios'."""
TEXT = (
    "Router is an OpenAI-compatible gateway: it authenticates each client, routes the request to a "
    "provider that serves the model, fails over when one breaks, enforces rate limits and budgets, "
    "and settles the tokens used once the answer is complete."
)
"""The embeddings input, and the prompt of its chat twin: one string, a paragraph's length."""
ANTHROPIC_HEADERS = b"anthropic-version: 2023-06-01\r\n"
"""What the anthropic SDK sends with every request (router needs none of it)."""
RATIO_GOAL = 0.90
"""A translated stream's req/s at c=32, as a share of its chat twin's (issue 18)."""
TTFT_GOAL_MS = 0.2
"""A translated stream's time to first token over its chat twin's at c=1, in ms (issue 18)."""


def bodies(scenario: Scenario) -> tuple[bytes, bytes]:
    """(the API's request body, its chat twin's)."""
    sim = SIMS[scenario.sim]
    if scenario.api == "embeddings":
        assert sim.embedding_model is not None, f"simulator {scenario.sim!r} serves no embedding model"
        own: dict[str, Any] = {"model": sim.embedding_model, "input": TEXT}
        twin: dict[str, Any] = {"model": sim.model, "messages": [{"role": "user", "content": TEXT}]}
        return orjson.dumps(own), orjson.dumps(twin)
    if scenario.api == "messages":
        # max_tokens is required by Anthropic's API; far above what the simulator answers.
        messages = [{"role": "user", "content": PROMPT}]
        own = {"model": sim.model, "max_tokens": 1024, "stream": True, "messages": messages}
    elif scenario.api == "responses":
        own = {"model": sim.model, "stream": True, "input": PROMPT}
    else:
        raise ValueError(f"no pair for API {scenario.api!r}")
    twin = ENDPOINTS[scenario.api].request(copy.deepcopy(own))
    return orjson.dumps(own), orjson.dumps(twin)


def targets(
    scenario: Scenario, routers: list[tuple[Profile, Child, int]], cores: set[int] | None
) -> list[Target]:
    """For each router, the chat twin then the API (ordered() alternates them, repeat by repeat)."""
    own, twin = bodies(scenario)
    out = []
    for profile, child, port in routers:
        for api, body in (("chat", twin), (scenario.api, own)):
            headers = profile.headers + (ANTHROPIC_HEADERS if api == "messages" else b"")
            model = orjson.loads(body)["model"]
            out.append(
                Target(
                    f"{profile.name}/{api}",
                    port,
                    PATHS[api],
                    model,
                    headers,
                    child,
                    cores,
                    redis=profile.redis,
                    profile=profile.name,
                    api=api,
                    body=body,
                )
            )
    return out


def ordered(found: list[Target], repeat: int) -> list[Target]:
    """The targets in the order of one repeat: each API after its twin, then before it (ABBA), so
    a machine that drifts during a scenario does not favour whichever side runs first."""
    if repeat % 2 == 0:
        return found
    return [target for i in range(0, len(found), 2) for target in (found[i + 1], found[i])]


def versus(row: Row, chat: Row) -> dict[str, float]:
    """An API's row against its chat twin's: req/s ratio; p50, TTFT and router CPU differences."""
    out = {
        "ratio": row["rps"] / chat["rps"] if chat["rps"] else math.nan,
        "p50": row["p50"] - chat["p50"],
        "ttft_p50": row["ttft_p50"] - chat["ttft_p50"],
        "router_cpu_ms_per_req": _minus(row.get("router_cpu_ms_per_req"), chat.get("router_cpu_ms_per_req")),
    }
    return {key: value for key, value in out.items() if not math.isnan(value)}


def _minus(a: float | None, b: float | None) -> float:
    return a - b if a is not None and b is not None else math.nan


def twins(rows: Rows) -> list[tuple[str, Row, Row]]:
    """(profile, chat twin's row, API's row) per router, from a pair scenario's rows."""
    by_name = dict(rows)
    out = []
    for name, row in rows:
        profile, _, api = name.partition("/")
        if api != "chat":
            out.append((profile, by_name[f"{profile}/chat"], row))
    return out


def table(paired: list[tuple[Scenario, Rows]], repeat: int) -> str:
    head = (
        f"{'scenario':<24} {'profile':<7} {'req/s chat':>10} {'API':>6} {'ratio':>6} "
        f"{'ttft p50 chat':>13} {'API':>7} {'diff':>7} {'p50 chat':>9} {'API':>7} {'diff':>7} "
        f"{'cpu ms/req chat':>15} {'API':>6} {'errors':>7}"
    )
    lines = [
        f"Translated APIs vs their chat twins: same router and simulator, interleaved ABBA (median of "
        f"{repeat}; ms; diff = API - chat; ratio = API req/s / chat req/s):",
        "",
        head,
        "-" * len(head),
    ]
    for scenario, rows in paired:
        for i, (profile, chat, own) in enumerate(twins(rows)):
            ratio = own["rps"] / chat["rps"] if chat["rps"] else math.nan
            ttft = ("", "", "")
            if scenario.stream:
                ttft = (report.ms(chat["ttft_p50"]), report.ms(own["ttft_p50"]), _diff(own, chat, "ttft_p50"))
            lines.append(
                f"{scenario.name if i == 0 else '':<24} {profile:<7} {chat['rps']:10.0f} {own['rps']:6.0f} "
                f"{ratio:6.2f} {ttft[0]:>13} {ttft[1]:>7} {ttft[2]:>7} {report.ms(chat['p50']):>9} "
                f"{report.ms(own['p50']):>7} {_diff(own, chat, 'p50'):>7} "
                f"{report.num(chat.get('router_cpu_ms_per_req'), '.3f'):>15} "
                f"{report.num(own.get('router_cpu_ms_per_req'), '.3f'):>6} "
                f"{chat['errors']:>3}/{own['errors']:<3}"
            )
    lines.append("")
    lines.append(
        "Streams' twin: the chat request the translation sends upstream; embeddings' twin: a non-stream "
        "chat request with the embeddings input as prompt, to the same simulator (no target, a reference). "
        "ttft: to the first text (chat content, content_block_delta, response.output_text.delta); "
        "cpu: router CPU per request; errors: chat/API, summed over repeats."
    )
    return "\n".join(lines)


def _diff(own: Row, chat: Row, key: str) -> str:
    value = own[key] - chat[key]
    return "-" if math.isnan(value) else report.ms(value, "+")


def notes(paired: list[tuple[Scenario, Rows]]) -> list[str]:
    """Errors by kind, and the issue's goals for the translated streams, per router profile."""
    out: list[str] = []
    errors = [
        f"  {scenario.name} {name}: " + ", ".join(f"{kind} x{n}" for kind, n in row["error_kinds"].items())
        for scenario, rows in paired
        for name, row in rows
        if row["errors"]
    ]
    if errors:
        out += ["Errors by kind in the pairs (HTTP status, lost connection, stream cut short, timeout):"]
        out += [*errors, ""]
    done = goals(paired)
    if done:
        out += ["Goals (issue 18: translated streams against chat, same run):", *done, ""]
    return out


def goals(paired: list[tuple[Scenario, Rows]]) -> list[str]:
    out = []
    for scenario, rows in paired:
        if not scenario.stream:
            continue
        for profile, chat, own in twins(rows):
            where = f"{scenario.name} [{profile}]"
            if scenario.concurrency >= 32:
                ratio = own["rps"] / chat["rps"] if chat["rps"] else math.nan
                ok = ratio >= RATIO_GOAL and not own["errors"]
                out.append(
                    f"  [{'met' if ok else 'NOT met'}] {where}: {ratio:.3f}x chat's req/s "
                    f"({own['rps']:.0f} vs {chat['rps']:.0f}; >= {RATIO_GOAL:.2f}), errors {own['errors']}"
                )
            elif scenario.concurrency == 1:
                added = own["ttft_p50"] - chat["ttft_p50"]
                ok = added <= TTFT_GOAL_MS and not own["errors"]
                out.append(
                    f"  [{'met' if ok else 'NOT met'}] {where}: TTFT p50 {added:+.3f} ms over chat's "
                    f"({own['ttft_p50']:.3f} vs {chat['ttft_p50']:.3f}; <= {TTFT_GOAL_MS}), "
                    f"errors {own['errors']}"
                )
    return out


# -- with --spy: where each side's router CPU went, function by function -----------------------

SPIED_CODE = ("router/api/", "router/responses.py", "router/relay.py", "router/sse.py")
"""The code a translated stream runs that its chat twin runs otherwise or not at all: the
translation (router/api) and the relay around it (splitting events, feeding the translation)."""


@dataclass(frozen=True)
class Spied:
    scenario: Scenario
    profile: str
    api: str
    """The API of the run: the scenario's, or chat for its twin."""
    found: spy.Profile
    cpu_ms_per_req: float | None
    """The router's CPU per request in that same run: shares of samples become microseconds."""


def spy_lines(spied: list[Spied], top: int = 12) -> list[str]:
    """Per pair and router: microseconds of router CPU per request in each function of SPIED_CODE
    (inclusive and self), the API's run beside its twin's, the costliest (by the API's self) first."""
    out: list[str] = []
    runs = {(s.scenario.key, s.profile, s.api == "chat"): s for s in spied}
    for (key, profile, is_chat), own in runs.items():
        chat = runs.get((key, profile, True))
        if is_chat or chat is None:
            continue
        us_own, us_chat = _per_request(own), _per_request(chat)
        names = sorted(us_own, key=lambda name: -us_own[name][1])[:top]
        names += [name for name in sorted(us_chat, key=lambda n: -us_chat[n][1])[:4] if name not in us_own]
        out.append(
            f"{profile}, {own.scenario.name}: router CPU us/request by function (py-spy; inclusive/self), "
            f"{own.api} beside its chat twin; {_cpu(own)} vs {_cpu(chat)} ms/request in these runs"
        )
        out.append(f"  {'function':<72} {own.api:>15} {'chat':>15}")
        for name in names:
            out.append(f"  {name[:72]:<72} {_pair(us_own.get(name)):>15} {_pair(us_chat.get(name)):>15}")
        out.append("")
    return out


def _per_request(run: Spied) -> dict[str, tuple[float, float]]:
    """function -> (inclusive, self) microseconds of router CPU per request, in SPIED_CODE."""
    cpu = run.cpu_ms_per_req
    scale = 1000 * cpu if cpu is not None else math.nan
    out: dict[str, tuple[float, float]] = {}
    for part in SPIED_CODE:
        for name, (inclusive, own) in run.found.functions(part)[1].items():
            if part in name:  # the function itself is in `part`, not only on a stack through it
                out[name] = (inclusive * scale, own * scale)
    return out


def _pair(value: tuple[float, float] | None) -> str:
    return "-" if value is None else f"{value[0]:.1f}/{value[1]:.1f}"


def _cpu(run: Spied) -> str:
    return report.num(run.cpu_ms_per_req, ".3f")
