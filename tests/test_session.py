"""`session`: a conversation rebuilt as turns, and the list of sessions."""

from __future__ import annotations

import json

from builders import cli as run




def test_growing_session_rebuilt_in_order(corpus):
    p = next(p for p in corpus["problems"] if p["kind"] == "growing_prompt")
    sid = p["details"]["sessions"][0]
    r = run("session", "--tracking-uri", corpus["tracking_uri"], "--experiment-id", corpus["experiment_id"], "--session-id", sid)
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    times = [t["request_time"] for t in s["turns"]]
    assert times == sorted(times) and s["summary"]["turns"] == len(times) >= 3
    assert s["summary"]["prompt_grows_every_turn"] is True
    assert all(isinstance(t["user"], str) for t in s["turns"])
    text = run("session", "--tracking-uri", corpus["tracking_uri"], "--experiment-id", corpus["experiment_id"],
               "--session-id", sid, "--format", "text").stdout
    assert "--- turn 1" in text and "grows every turn" in text


def test_list_and_unknown(corpus):
    r = run("session", "--tracking-uri", corpus["tracking_uri"], "--experiment-id", corpus["experiment_id"], "--list")
    listing = json.loads(r.stdout)
    assert listing["sessions"] == corpus["sessions"] if isinstance(corpus["sessions"], int) else listing["sessions"] > 0
    assert listing["traces_without_session"] > 0
    r = run("session", "--tracking-uri", corpus["tracking_uri"], "--experiment-id", corpus["experiment_id"], "--session-id", "nope")
    assert r.returncode == 1 and "no traces with session id" in r.stderr


def test_list_reads_trace_records_only_and_gives_the_same_list(corpus, tmp_path):
    """--list needs trace rows only: the store read skips spans, and the list equals the one
    built from whole traces (files holding the same traces)."""
    from mlflow_analyzer.sessions import list_sessions
    from mlflow_analyzer.sources import SqlStoreSource, StoreQuery

    src = SqlStoreSource(StoreQuery(corpus["tracking_uri"], experiment_id=corpus["experiment_id"]))
    infos = list(src.iter_trace_infos())
    assert infos and all(not t.spans for t in infos)
    assert list_sessions(infos, limit=1000) == list_sessions(src.iter_traces(), limit=1000)
    dump = tmp_path / "all.jsonl"
    r = run("fetch", "--tracking-uri", corpus["tracking_uri"], "--experiment-id", corpus["experiment_id"],
            "--output", str(dump))
    assert r.returncode == 0, r.stderr
    from_store = json.loads(run("session", "--tracking-uri", corpus["tracking_uri"], "--experiment-id",
                                corpus["experiment_id"], "--list", "--limit", "1000").stdout)
    from_files = json.loads(run("session", str(dump), "--list", "--limit", "1000").stdout)
    assert from_store == from_files


SHAPES = [
    # OpenAI chat
    ({"messages": [{"role": "system", "content": "be nice"}, {"role": "user", "content": "first"},
                   {"role": "assistant", "content": "ok"}, {"role": "user", "content": "book a flight"}]}, "book a flight"),
    # OpenAI content parts, Anthropic content blocks (a tool result turn is not the user's message)
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "what is 2+2?"}]},
                   {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "4"}]}]}, "what is 2+2?"),
    # LangChain: a batch of serialized messages, and LangGraph tuples
    ({"messages": [[{"lc": 1, "type": "constructor", "id": ["langchain", "schema", "messages", "HumanMessage"],
                     "kwargs": {"content": "summarize this", "type": "human"}}]]}, "summarize this"),
    ({"messages": [["user", "hello there"]]}, "hello there"),
    ([{"type": "human", "content": "typed message"}], "typed message"),
    # plain strings and dicts with a query key
    ("just a string", "just a string"),
    ({"query": "refund policy?", "top_k": 3}, "refund policy?"),
    ({"input": {"question": "nested question"}}, "nested question"),
    ('{"messages": [{"role": "user", "content": "from json text"}]}', "from json text"),
]


def test_user_message_shapes():
    from mlflow_analyzer.sessions import _USER_ROLES, _TEXT_KEYS, _last_message

    for value, want in SHAPES:
        assert _last_message(value, _USER_ROLES, _TEXT_KEYS) == want, value


def test_assistant_message_shapes():
    from mlflow_analyzer.sessions import _ANSWER_KEYS, _ASSISTANT_ROLES, _last_message

    openai = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris."}}]}
    anthropic = {"role": "assistant", "content": [{"type": "text", "text": "Lyon."}]}
    assert _last_message(openai, _ASSISTANT_ROLES, _ANSWER_KEYS) == "Paris."
    assert _last_message(anthropic, _ASSISTANT_ROLES, _ANSWER_KEYS) == "Lyon."
    assert _last_message({"response": "Nice."}, _ASSISTANT_ROLES, _ANSWER_KEYS) == "Nice."


def test_session_shows_the_users_message_not_the_input_json(trace_store):
    from mlflow_analyzer.sessions import format_session, rebuild

    msgs = {"messages": [{"role": "system", "content": "You are a helpful travel agent."},
                         {"role": "user", "content": "Find me a hotel in Lisbon"}]}
    spec = {"name": "ChatOpenAI", "type": "CHAT_MODEL", "ms": (0, 500), "inputs": msgs,
            "outputs": {"choices": [{"message": {"role": "assistant", "content": "Here are three hotels."}}]}}
    traces = trace_store.build("session-text", [spec], metadata={"mlflow.trace.session": "s-text"})
    s = rebuild("s-text", traces)
    assert s["turns"][0]["user"] == "Find me a hotel in Lisbon"
    assert s["turns"][0]["assistant"] == "Here are three hotels."
    assert "user: Find me a hotel in Lisbon" in format_session(s)
