"""An OpenAI Agents SDK agent whose function tools use psycopg through Warden's
PostgreSQL listener.

Nothing in the agent knows about Warden except the endpoint and the credential: psycopg
connects to Warden (default 127.0.0.1:15432), the database name selects the connection,
the user is the agent's principal and the password is its Warden key (or a JWT). The
purpose goes in the startup option `warden.purpose`. A statement a rule holds for approval
simply waits (Warden sends a NOTICE naming the approval id) until a human runs
`warden approvals approve ID`, then completes.

    WARDEN_KEY=wk_... WARDEN_PRINCIPAL=agent:support python pg_agent.py

With OPENAI_API_KEY set, a real model plans the calls (OPENAI_MODEL picks it). Without it
(or with --scripted), a scripted model (agents.testing.ScriptedModel) makes them:
describe the tables, SELECT (masked values come back), DELETE (held, then approved).

Environment: WARDEN_PG_HOST, WARDEN_PG_PORT, WARDEN_CONNECTION (the database name, default
`orders`), WARDEN_PRINCIPAL, WARDEN_KEY, WARDEN_EXAMPLE_TABLE, WARDEN_EXAMPLE_DELETE_ID.
"""
from __future__ import annotations

import asyncio
import json
import os
import sys

import psycopg
from agents import Agent, Runner, function_tool, set_tracing_disabled
from agents.testing import ScriptedModel, assistant_message, function_call

HOST = os.environ.get("WARDEN_PG_HOST", "127.0.0.1")
PORT = int(os.environ.get("WARDEN_PG_PORT", "15432"))
CONNECTION = os.environ.get("WARDEN_CONNECTION", "orders")
PRINCIPAL = os.environ.get("WARDEN_PRINCIPAL", "agent:support")
KEY = os.environ.get("WARDEN_KEY", "")
TABLE = os.environ.get("WARDEN_EXAMPLE_TABLE", "customers")
DELETE_ID = int(os.environ.get("WARDEN_EXAMPLE_DELETE_ID", "4"))
PURPOSE = os.environ.get("WARDEN_EXAMPLE_PURPOSE", "support ticket 4712: remove a duplicate customer")


def _connect(purpose: str) -> psycopg.Connection:
    # libpq splits `options` on spaces: escape them (and backslashes) in the purpose.
    escaped = purpose.replace("\\", "\\\\").replace(" ", "\\ ")
    return psycopg.connect(host=HOST, port=PORT, dbname=CONNECTION, user=PRINCIPAL,
                           password=KEY, options=f"-c warden.purpose={escaped}",
                           autocommit=True, connect_timeout=10)


def _run(sql: str, purpose: str) -> str:
    try:
        with _connect(purpose) as conn:
            notices: list[str] = []
            conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
            cur = conn.execute(sql)
            out: dict = {"status": cur.statusmessage}
            if cur.description:
                out["columns"] = [c.name for c in cur.description]
                out["rows"] = [[None if v is None else str(v) for v in r] for r in cur.fetchmany(200)]
            if notices:
                out["notices"] = notices
            return json.dumps(out)
    except psycopg.Error as e:
        return json.dumps({"error": str(e).strip()})


@function_tool
def list_tables(purpose: str) -> str:
    """Tables and columns of the database (non-system schemas)."""
    return _run(
        "SELECT table_schema, table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') "
        "ORDER BY table_schema, table_name, ordinal_position", purpose)


@function_tool
async def run_sql(sql: str, purpose: str) -> str:
    """Run one SQL statement through Warden. Risky statements wait for a human approval."""
    return await asyncio.to_thread(_run, sql, purpose)


SELECT_SQL = f"SELECT id, name, email, card_number FROM {TABLE} ORDER BY id LIMIT 5"
DELETE_SQL = f"DELETE FROM {TABLE} WHERE id = {DELETE_ID}"


def scripted_model() -> ScriptedModel:
    return ScriptedModel([
        [function_call("list_tables", {"purpose": PURPOSE}, call_id="tables")],
        [function_call("run_sql", {"sql": SELECT_SQL, "purpose": PURPOSE}, call_id="select")],
        [function_call("run_sql", {"sql": DELETE_SQL, "purpose": PURPOSE}, call_id="delete")],
        [assistant_message("Done: listed the customers and deleted the duplicate after approval.")],
    ])


async def main() -> int:
    scripted = "--scripted" in sys.argv or not os.environ.get("OPENAI_API_KEY")
    if scripted:
        set_tracing_disabled(True)
        model = scripted_model()
    else:
        model = os.environ.get("OPENAI_MODEL", "gpt-4.1-mini")
    agent = Agent(
        name="support-agent",
        instructions=("You help the support team with the customer database. Use list_tables "
                      "before writing SQL, one statement per run_sql call, and always give a "
                      "short purpose."),
        tools=[list_tables, run_sql],
        model=model,
    )
    task = (f"Show the first customers in `{TABLE}`, then delete the customer with id "
            f"{DELETE_ID} (a duplicate; ticket 4712).")
    result = await Runner.run(agent, task, max_turns=20)
    for item in result.new_items:
        if item.type == "tool_call_output_item":
            print(f"tool> {item.output}", flush=True)
    print(f"agent> {result.final_output}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
