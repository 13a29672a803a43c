"""The `bot` command: run the system, seed the demo store, validate the policy,
report NLU quality. `bot --help` lists the commands."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable, Dict, List, Optional


def _serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from bot.gateway import create_app
    from bot.settings import load_settings

    settings = load_settings()
    web.run_app(create_app(settings), host=settings.gateway_host, port=settings.gateway_port,
                print=None, access_log=None)
    return 0


def _run(args: argparse.Namespace) -> int:
    from bot.launcher import run_system

    return run_system(train=not args.no_train, seed=not args.no_seed)


def _seed(args: argparse.Namespace) -> int:
    from actions.store.seed import seed_demo_store
    from actions.store.sql import open_store

    count = seed_demo_store(open_store(args.database_url))
    print(f"seeded the demo store: {count} orders")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from actions.policy import PolicyError, load_knowledge, load_policy

    try:
        policy = load_policy()
        load_knowledge(policy=policy)
    except PolicyError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"policy ok: {len(policy.rules)} escalation rules, "
          f"{sum(len(p) for p in policy.trigger_phrases.values())} trigger phrases")
    return 0


COMMANDS: Dict[str, Callable[[argparse.Namespace], int]] = {
    "run": _run,
    "serve": _serve,
    "seed": _seed,
    "validate": _validate,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bot", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="train if needed, seed, start every component (make run)")
    run.add_argument("--no-train", action="store_true", help="use the newest model as it is")
    run.add_argument("--no-seed", action="store_true", help="keep the store's current data")
    sub.add_parser("serve", help="start only the gateway (port $GATEWAY_PORT, default 8080)")
    seed = sub.add_parser("seed", help="reset the demo store to its seeded state")
    seed.add_argument("--database-url", help="default: $DATABASE_URL, else var/store.db")
    sub.add_parser("validate", help="check policy/escalation.yml and policy/knowledge.yml")
    # nlu-report has its own options (bot/nlu_report.py); main() hands them over whole
    sub.add_parser("nlu-report", add_help=False,
                   help="score the model on ../shared/eval (bot nlu-report --help)")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["nlu-report"]:
        from bot.nlu_report import run

        return run(argv[1:])
    args = build_parser().parse_args(argv)
    return COMMANDS[args.command](args)
