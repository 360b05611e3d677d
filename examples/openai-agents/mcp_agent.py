"""An OpenAI Agents SDK agent that is given Warden as its MCP server.

Warden serves MCP (streamable HTTP) at /mcp on its HTTP listener. The agent authenticates
with a Warden key (or a JWT) as a bearer token; every tool call is decided by policy,
held for a human when a rule says so, recorded as evidence and masked.

    WARDEN_MCP_URL=http://127.0.0.1:8080/mcp WARDEN_KEY=wk_... python mcp_agent.py

With OPENAI_API_KEY set, a real model plans the calls (set OPENAI_MODEL to choose one).
Without it (or with --scripted), a scripted model (agents.testing.ScriptedModel) makes the
calls a careful agent would: list connections, describe one, SELECT, attempt a DELETE
(held for approval), poll approval_status, and retry the DELETE with the approval id once a
human ran `warden approvals approve ID`.

Environment: WARDEN_MCP_URL, WARDEN_KEY, WARDEN_CONNECTION (default `orders`),
WARDEN_EXAMPLE_TABLE (default `customers`), WARDEN_EXAMPLE_DELETE_ID (default 3).
"""
from __future__ import annotations

import asyncio
import json
import os
import sys

from agents import Agent, Runner, set_tracing_disabled
from agents.mcp import MCPServerStreamableHttp
from agents.testing import ModelStep, ScriptedModel, assistant_message, function_call

URL = os.environ.get("WARDEN_MCP_URL", "http://127.0.0.1:8080/mcp")
KEY = os.environ.get("WARDEN_KEY", "")
CONNECTION = os.environ.get("WARDEN_CONNECTION", "orders")
TABLE = os.environ.get("WARDEN_EXAMPLE_TABLE", "customers")
DELETE_ID = int(os.environ.get("WARDEN_EXAMPLE_DELETE_ID", "3"))
PURPOSE = os.environ.get("WARDEN_EXAMPLE_PURPOSE", "support ticket 4711: remove a duplicate customer")

INSTRUCTIONS = (
    "You help the support team with the customer database through Warden's tools. "
    "Start with list_connections and describe_connection; always pass a short `purpose`. "
    "Run one SQL statement per query call. If a call is held for approval, tell the user the "
    "approval id, poll approval_status, and once it is approved repeat the same call with "
    "approval_id."
)
TASK = (
    f"Show the first customers in `{TABLE}` on connection `{CONNECTION}`, then delete the "
    f"customer with id {DELETE_ID} (a duplicate; ticket 4711)."
)

SELECT_SQL = f"SELECT id, name, email, card_number FROM {TABLE} ORDER BY id LIMIT 5"
DELETE_SQL = f"DELETE FROM {TABLE} WHERE id = $1"


def last_tool_output(call) -> dict:
    """The JSON of the most recent tool result in the conversation."""
    for item in reversed(list(call.input if isinstance(call.input, list) else [])):
        if isinstance(item, dict) and item.get("type") == "function_call_output":
            out = item.get("output")
            if isinstance(out, list):
                out = "".join(p.get("text", "") for p in out if isinstance(p, dict))
            elif isinstance(out, dict):
                out = out.get("text", json.dumps(out))
            try:
                return json.loads(out)
            except (TypeError, ValueError):
                return {"text": out}
    return {}


def scripted_model() -> ScriptedModel:
    """The calls a careful agent makes, with the approval id read from Warden's answer."""
    model: ScriptedModel
    state = {"approval_id": None, "polls": 0}

    def final(call):
        out = last_tool_output(call)
        return [assistant_message(
            f"Done. The DELETE ran after approval {state['approval_id']}: {out.get('command')}.")]

    def poll(call):
        out = last_tool_output(call)
        if out.get("state") == "approved":
            model.enqueue(ModelStep.respond(final))
            return [function_call("query", {
                "connection": CONNECTION, "sql": DELETE_SQL, "params": [DELETE_ID],
                "purpose": PURPOSE, "approval_id": state["approval_id"],
            }, call_id="retry-delete")]
        if out.get("state") not in (None, "pending") or state["polls"] > 240:
            return [assistant_message(f"The DELETE was not approved: {out}")]
        state["polls"] += 1
        model.enqueue(ModelStep.respond(poll_later))
        return [function_call("approval_status", {"id": state["approval_id"]},
                              call_id=f"poll-{state['polls']}")]

    async def poll_later(call):
        await asyncio.sleep(0.5)
        return poll(call)

    def after_delete(call):
        out = last_tool_output(call)
        if out.get("status") != "pending_approval":
            return [assistant_message(f"The DELETE was not held as expected: {out}")]
        state["approval_id"] = out["approval_id"]
        print(f"held: approval {state['approval_id']}", flush=True)
        return poll(call)

    model = ScriptedModel([
        [function_call("list_connections", {}, call_id="list")],
        [function_call("describe_connection", {"connection": CONNECTION, "purpose": PURPOSE},
                       call_id="describe")],
        [function_call("query", {"connection": CONNECTION, "sql": SELECT_SQL, "purpose": PURPOSE},
                       call_id="select")],
        [function_call("query", {"connection": CONNECTION, "sql": DELETE_SQL,
                                 "params": [DELETE_ID], "purpose": PURPOSE}, call_id="delete")],
        ModelStep.respond(after_delete),
    ])
    return model


async def main() -> int:
    scripted = "--scripted" in sys.argv or not os.environ.get("OPENAI_API_KEY")
    if scripted:
        set_tracing_disabled(True)
        model = scripted_model()
    else:
        model = os.environ.get("OPENAI_MODEL", "gpt-4.1-mini")
    async with MCPServerStreamableHttp(
        name="warden",
        params={"url": URL, "headers": {"Authorization": f"Bearer {KEY}"}, "timeout": 30},
        cache_tools_list=True,
        client_session_timeout_seconds=60,
    ) as warden:
        agent = Agent(name="support-agent", instructions=INSTRUCTIONS, mcp_servers=[warden],
                      model=model)
        result = await Runner.run(agent, TASK, max_turns=300)
        for item in result.new_items:
            if item.type == "tool_call_output_item":
                print(f"tool> {item.output}", flush=True)
        print(f"agent> {result.final_output}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
