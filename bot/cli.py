"""The `bot` command: run the system, seed the demo store, validate the policy,
report NLU quality and the support KPIs, manage channels, agents and peak mode.
`bot --help` lists the commands."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING, Callable, Dict, List, Optional

from common.privacy import install_log_redaction

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


def _serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from bot.app import create_app
    from bot.settings import load_settings

    settings = load_settings()
    web.run_app(create_app(settings), host=settings.gateway_host, port=settings.gateway_port,
                print=None, access_log=None)
    return 0


def _run(args: argparse.Namespace) -> int:
    from bot.tools.launcher import run_system

    return run_system(train=not args.no_train, seed=not args.no_seed)


def _train(args: argparse.Namespace) -> int:
    from bot.settings import load_settings
    from bot.tools.launcher import child_environment, train_if_changed
    from common.paths import REPO_ROOT

    settings = load_settings()
    try:
        model = train_if_changed(child_environment(settings),
                                 settings.var_dir / "logs" / "train.log")
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"model: {model.relative_to(REPO_ROOT)}")
    return 0


def _run_prod(args: argparse.Namespace) -> int:
    from bot.tools.launcher import run_production

    return run_production(args.instances, train=not args.no_train, seed=not args.no_seed)


def _balance(args: argparse.Namespace) -> int:
    import asyncio
    import contextlib

    from bot.tools.balancer import parse_backend, serve

    try:
        backends = [parse_backend(backend) for backend in args.backends]
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port, backends))
    return 0


def _seed(args: argparse.Namespace) -> int:
    from actions.store.seed import seed_demo_store
    from actions.store.sql import open_store

    count = seed_demo_store(open_store(args.database_url))
    print(f"seeded the demo store: {count} orders")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from bot.policies import load_policies
    from common.policy_files import PolicyError

    try:
        policies = load_policies()
    except PolicyError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    policy, channels, handoff = policies.escalation, policies.channels, policies.handoff
    print(f"policy ok: {len(policy.rules)} escalation rules, "
          f"{sum(len(p) for p in policy.trigger_phrases.values())} trigger phrases, "
          f"channel retries {channels.retry.attempts}, "
          f"{len(handoff.dispositions)} handoff dispositions")
    return 0


def _telegram_set_webhook(args: argparse.Namespace) -> int:
    import asyncio
    import os

    from connectors.config import credentials_from_env
    from connectors.telegram import TelegramSetupError, set_webhook

    credentials = credentials_from_env(os.environ)
    if credentials.telegram is None:
        print("error: set TELEGRAM_BOT_TOKEN and TELEGRAM_SECRET_TOKEN first", file=sys.stderr)
        return 1
    base = args.public_url or credentials.public_base_url
    if not base.startswith("https://"):
        print("error: Telegram calls only https URLs: pass --public-url https://… or set "
              "PUBLIC_BASE_URL", file=sys.stderr)
        return 1
    url = f"{base.rstrip('/')}/webhooks/telegram"
    try:
        asyncio.run(set_webhook(credentials.telegram, url))
    except TelegramSetupError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"telegram webhook set to {url}")
    return 0


def _gateway_engine() -> Engine:
    """The gateway's database, with its tables, also before the gateway ever ran."""
    from bot.handoff import store as handoff_store
    from bot.messaging.records import metadata as records_metadata
    from bot.settings import load_settings
    from common.sql import create_store_engine, create_tables

    settings = load_settings()
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    engine = create_store_engine(settings.gateway_database_url)
    for tables in (records_metadata, handoff_store.metadata):
        create_tables(tables, engine)
    return engine


def _deliveries(args: argparse.Namespace) -> int:
    from bot.messaging.records import GatewayRecords

    rows = GatewayRecords(_gateway_engine()).deliveries(status=args.status, limit=args.limit)
    for row in rows:
        print(f"{row['id']:>6} {row['status']:<9} {row['connector']:<9} attempts={row['attempts']} "
              f"{row['provider_message_id'] or '-'} {row['error']}")
    print(f"{len(rows)} deliveries" + (f" with status {args.status}" if args.status else ""))
    return 0


def _writes(args: argparse.Namespace) -> int:
    """The bot's writes on an order (actions/guarded.py), as JSON lines: the audit."""
    import json
    from dataclasses import asdict

    from actions.store.sql import open_store
    from actions.store.types import normalize_order_id

    order_id = normalize_order_id(args.order)
    if order_id is None:
        print(f"error: {args.order!r} is not an order number", file=sys.stderr)
        return 2
    store = open_store()
    try:
        for write in store.writes.for_order(order_id):
            print(json.dumps(asdict(write), default=str, sort_keys=True))
    finally:
        store.close()
    return 0


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return number


def _report(args: argparse.Namespace) -> int:
    from zoneinfo import ZoneInfo

    from actions.policy import load_policy
    from bot.handoff.policy import load_handoff_policy
    from bot.reporting.kpi import current_kpis, daily_csv, load_kpi_policy, tracker_engine
    from bot.reporting.weekly_review import weekly_review
    from bot.settings import load_settings

    settings = load_settings()
    zone = ZoneInfo(load_handoff_policy(load_policy()).business_hours.timezone)
    kpis, days = current_kpis(_gateway_engine(), tracker_engine(settings.tracker_database_url),
                              load_kpi_policy(), zone, args.days)
    if args.csv:
        print(daily_csv(kpis, days), end="")
    else:
        print(weekly_review(kpis, days))
    return 0


def _peak(args: argparse.Namespace) -> int:
    import asyncio

    from actions.policy import load_peak_policy
    from bot.handoff.peak import PeakConfigured, PeakMode
    from bot.handoff.store import HandoffStore
    from bot.messaging.records import GatewayRecords

    records = GatewayRecords(_gateway_engine())
    peak = PeakMode(load_peak_policy(), records, HandoffStore(records.engine))
    try:
        if args.action == "status":
            state = asyncio.run(peak.state())
        else:
            state = asyncio.run(peak.switch(args.action == "on", "cli", args.note))
    except PeakConfigured as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        records.close()
    source = " (policy/peak.yml)" if state.by_config else ""
    print(f"peak mode is {'on' if state.on else 'off'}{source}"
          + (f"; switched by {state.changed_by}" if state.changed_by else "")
          + (f": {state.note}" if state.note else ""))
    if args.action != "status":
        print("running gateways follow within 5 s")
    return 0


def _monitor(args: argparse.Namespace) -> int:
    import asyncio

    from bot.outreach.policy import load_monitor_policy
    from bot.policies import load_channel_policy
    from bot.services import run_once
    from common.policy_files import PolicyError

    try:
        policy = load_monitor_policy(load_channel_policy())
    except PolicyError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    report = asyncio.run(run_once(args.action, policy=policy))
    for line in report.lines():
        print(line)
    return 0


def _agents(args: argparse.Namespace) -> int:
    import time

    from actions.policy import load_policy
    from bot.handoff.policy import load_handoff_policy
    from bot.handoff.store import HandoffStore, ReservedName

    store = HandoffStore(_gateway_engine())
    if args.action == "add":
        escalation = load_policy()
        teams = escalation.teams
        capacity = args.capacity or load_handoff_policy(escalation).default_capacity
        unknown = [t for t in args.team if t not in teams]
        if unknown:
            print(f"error: no team {unknown[0]!r}; teams: {', '.join(teams)}", file=sys.stderr)
            return 1
        try:
            token = store.add_agent(args.name, args.team, capacity, time.time())
        except ReservedName as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        store.audit("cli", "agent_added", None, {"agent": args.name, "teams": args.team},
                    time.time())
        print(f"agent {args.name} ({', '.join(args.team)}, capacity {capacity})\n"
              f"token (shown once; give it to {args.name}): {token}")
    elif args.action == "remove":
        if not store.remove_agent(args.name):
            print(f"error: no agent {args.name!r}", file=sys.stderr)
            return 1
        store.audit("cli", "agent_removed", None, {"agent": args.name}, time.time())
        print(f"agent {args.name} removed; their token no longer works")
    else:
        for agent in store.agents():
            print(f"{agent.name:<20} capacity {agent.capacity:<3} {', '.join(agent.teams)}")
    return 0


def _privacy(args: argparse.Namespace) -> int:
    """Export or erase one customer's data, or purge what is past its retention."""
    import json

    from actions.policy import load_policy
    from bot.privacy import NotAContact, open_privacy
    from bot.settings import load_settings
    from common.policy_files import PolicyError

    try:
        privacy = open_privacy(load_settings(), load_policy())
    except PolicyError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    try:
        if args.action == "export":
            print(json.dumps(privacy.export(args.contact, "cli"), indent=2, sort_keys=True))
            return 0
        removed = (privacy.erase(args.contact, "cli") if args.action == "erase"
                   else privacy.purge("cli"))
    except NotAContact as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for kind, count in removed.items():
        print(f"{kind:<18} {count}")
    return 0


COMMANDS: Dict[str, Callable[[argparse.Namespace], int]] = {
    "run": _run,
    "train": _train,
    "serve": _serve,
    "seed": _seed,
    "validate": _validate,
    "telegram": _telegram_set_webhook,
    "deliveries": _deliveries,
    "run-prod": _run_prod,
    "balance": _balance,
    "agents": _agents,
    "report": _report,
    "peak": _peak,
    "monitor": _monitor,
    "writes": _writes,
    "privacy": _privacy,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bot", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="train if needed, seed, start every component (make run)")
    run.add_argument("--no-train", action="store_true", help="use the newest model as it is")
    run.add_argument("--no-seed", action="store_true", help="keep the store's current data")
    run_prod = sub.add_parser("run-prod", help="the production shape from local processes on "
                                               "PostgreSQL and Redis (make run-prod)")
    run_prod.add_argument("--instances", type=_positive, default=2,
                          help="Rasa instances and gateway processes (default 2)")
    run_prod.add_argument("--no-train", action="store_true", help="use the newest model as it is")
    run_prod.add_argument("--no-seed", action="store_true", help="keep the store's current data")
    sub.add_parser("train", help="train a model only when config, domain or data changed "
                                 "(keeps the newest 3; Rasa's output in var/logs/train.log)")
    sub.add_parser("serve", help="start only the gateway (port $GATEWAY_PORT, default 8080)")
    balance = sub.add_parser("balance", help="spread one port's connections over gateways "
                                             "(run-prod's front door)")
    balance.add_argument("backends", nargs="+", metavar="HOST:PORT", help="the gateways")
    balance.add_argument("--host", default="0.0.0.0")
    balance.add_argument("--port", type=int, default=8080)
    seed = sub.add_parser("seed", help="reset the demo store to its seeded state")
    seed.add_argument("--database-url", help="default: $DATABASE_URL, else var/store.db")
    sub.add_parser("validate", help="check the policy files in policy/")
    telegram = sub.add_parser("telegram", help="Telegram channel setup")
    telegram_sub = telegram.add_subparsers(dest="action", required=True, metavar="ACTION")
    set_hook = telegram_sub.add_parser(
        "set-webhook", help="point Telegram at <public url>/webhooks/telegram with the secret")
    set_hook.add_argument("--public-url", help="default: $PUBLIC_BASE_URL")
    deliveries = sub.add_parser("deliveries", help="outbound messages and what became of them")
    deliveries.add_argument("--status", choices=["sent", "delivered", "read", "failed", "blocked"],
                            help="only this status, e.g. failed")
    deliveries.add_argument("--limit", type=int, default=50)
    writes = sub.add_parser("writes", help="what the bot changed or tried to change on an "
                                           "order (audit, as JSON lines)")
    writes.add_argument("order", help="the order number, e.g. A1004")
    agents = sub.add_parser("agents", help="the people who work the handoff queues")
    agents_sub = agents.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = agents_sub.add_parser("add", help="add (or re-issue the token of) an agent")
    add.add_argument("name")
    add.add_argument("--team", action="append", required=True,
                     help="a queue they work (repeat for several), e.g. logistics")
    add.add_argument("--capacity", type=int,
                     help="conversations at once (default: default_capacity of handoff.yml)")
    agents_sub.add_parser("list", help="agents, their teams and capacity")
    remove = agents_sub.add_parser("remove", help="remove an agent; their token stops working")
    remove.add_argument("name")
    report = sub.add_parser("report", help="the support review: KPIs per day, channel, "
                                           "contact reason and queue (docs/agents.md)")
    report.add_argument("--days", type=_positive, default=7, help="days back, today included "
                                                                  "(default 7)")
    report.add_argument("--csv", action="store_true",
                        help="the daily KPIs of every group as CSV instead")
    peak = sub.add_parser("peak", help="peak mode: surge SLA targets, templated bot flows, "
                                       "banners (docs/agents.md)")
    peak.add_argument("action", choices=["on", "off", "status"])
    peak.add_argument("--note", default="", help="why, e.g. 'Black Friday'; kept in the audit")
    monitor = sub.add_parser("monitor", help="proactive outreach, run once "
                                             "(docs/outreach.md)")
    monitor_sub = monitor.add_subparsers(dest="action", required=True, metavar="ACTION")
    monitor_sub.add_parser("shipments", help="message customers of late or unscanned orders")
    monitor_sub.add_parser("products", help="alert the team about SKUs many customers "
                                            "write about")
    monitor_sub.add_parser("promises", help="hand due trace and claim promises to a person "
                                            "and tell the customer")
    privacy = sub.add_parser("privacy", help="a customer's data: export, erase; purge what "
                                             "is past its retention (docs/privacy.md)")
    privacy_sub = privacy.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (("export", "print everything held about the customer, as JSON"),
                         ("erase", "remove the customer's data everywhere; counts per kind")):
        command = privacy_sub.add_parser(action, help=text)
        command.add_argument("--contact", required=True,
                             help="a conversation id as stored (telegram:4242), an email or "
                                  "a phone number")
    privacy_sub.add_parser("purge", help="remove what is older than retention_days of "
                                         "policy/privacy.yml (the gateway does it on a schedule)")
    # nlu-report has its own options (bot/tools/nlu_report.py); main() hands them over whole
    sub.add_parser("nlu-report", add_help=False,
                   help="score the model on ../shared/eval (bot nlu-report --help)")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    install_log_redaction()
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["nlu-report"]:
        from bot.tools.nlu_report import run

        return run(argv[1:])
    args = build_parser().parse_args(argv)
    return COMMANDS[args.command](args)
