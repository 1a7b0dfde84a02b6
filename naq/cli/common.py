"""What every ``naq`` command shares: options made from ``Settings``, and the runners.

Every option here is generated from a ``Settings`` field and has the environment
twin ``NAQ_<FIELD>``, so a container is configured by environment alone. Secrets are
the exception: ``password`` and ``token`` have no flag, and ``--nats-url`` refuses a
URL with credentials in it, because a command line is visible to every user of the
machine (``ps``); they are read from the environment only. Errors map to the exit
codes of ``naq.errors``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, TypeVar

import click
from click.core import ParameterSource

from naq.errors import (
    EXIT_CONNECTION,
    ConfigurationError,
    JobNotFound,
    NaqError,
    QueueNotFound,
)
from naq.executors.registry import available_executors
from naq.redact import has_userinfo, redact
from naq.settings import Settings, env_name, validate_name
from naq.transport.pool import close_connections, new_event_loop

F = TypeVar("F", bound=Callable[..., Any])
CONTEXT = {"help_option_names": ["-h", "--help"]}

SHORT = {"concurrency": "-c", "executor": "-e", "nats_url": "-u", "namespace": "-n"}
_TYPES: dict[str, Any] = {"int": int, "float": float}


def _no_credentials_in_flag(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Refuse ``--nats-url`` with a password or token in it; from ``NAQ_NATS_URL`` the
    same URL is fine (the environment is not shown by ``ps``). The URL is not echoed."""
    source = ctx.get_parameter_source(param.name) if param.name else None
    if value and source == ParameterSource.COMMANDLINE and has_userinfo(value):
        raise click.BadParameter(
            "credentials on the command line are visible to every user (ps): put the URL "
            "in NAQ_NATS_URL, or the user in NAQ_USER and the password in NAQ_PASSWORD "
            "(a token in NAQ_TOKEN)",
            ctx,
            param,
        )
    return value


def settings_options(*names: str) -> Callable[[F], F]:
    """Click options for ``names``, each with help, default and its ``NAQ_*`` twin.

    Secret fields (``password``, ``token``) get no option: they are set through the
    environment only. A bool field is a ``--name/--no-name`` flag whose environment
    twin ``Settings.from_env`` parses, so one rule decides what "yes" is.
    """
    fields = {f.name: f for f in dataclasses.fields(Settings)}

    def decorate(func: F) -> F:
        for name in reversed(names):
            f = fields[name]
            if f.metadata.get("secret"):
                raise ValueError(f"{name} is a secret: it has no command-line option")
            flag = f"--{name.replace('_', '-')}"
            flags = [flag] + ([SHORT[name]] if name in SHORT else [])
            help_text = f.metadata.get("help", "")
            if name == "executor":
                help_text += f" ({', '.join(available_executors())})"
            if f.default is not None:
                help_text += f"  [default: {f.default}]"
            if str(f.type) == "bool":
                func = click.option(
                    f"{flag}/--no-{flag[2:]}",
                    name,
                    default=None,
                    help=f"{help_text}  [env var: {env_name(name)}]",
                )(func)
                continue
            func = click.option(
                *flags,
                name,
                type=str if f.metadata.get("size") else _TYPES.get(str(f.type), str),
                default=None,
                envvar=env_name(name),
                show_envvar=True,
                help=help_text,
                callback=_no_credentials_in_flag if name == "nats_url" else None,
            )(func)
        return func

    return decorate


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def settings_from(params: dict[str, Any]) -> Settings:
    try:
        return Settings.from_env(**params)
    except NaqError as exc:
        raise click.UsageError(str(exc)) from None


def queue_names(queues: tuple[str, ...], settings: Settings) -> list[str]:
    """The queues to serve, checked before anything connects (or starts a server):
    a bad name is a usage error, not a connection failure after the fact."""
    try:
        return [validate_name("queue", q) for q in queues] or [settings.default_queue]
    except NaqError as exc:
        raise click.UsageError(str(exc)) from None


SUPERVISOR_FIELDS = tuple(
    f.name
    for f in dataclasses.fields(Settings)
    if not f.metadata.get("secret") and not f.metadata.get("dashboard")
)
"""Every setting but the secrets and the dashboard's is a supervisor flag; each has its
environment twin."""


class Role(Protocol):
    """A long-running process role: the supervisor, the scheduler."""

    def request_stop(self) -> None: ...

    async def run(self) -> int: ...


def run_role(make: Callable[[], Role]) -> int:
    """Run ``make().run()`` on a fresh loop; SIGTERM and SIGINT ask it to stop."""

    async def main() -> int:
        role = make()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, role.request_stop)
        return await role.run()

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main())


def run_command(coro: Coroutine[Any, Any, None]) -> None:
    """Run a command's coroutine and close the connections it opened.

    A missing job, schedule or queue (exit 1) and a bad name or value (exit 2) are the
    user's errors; any other naq error is the server's (exit 3).
    """

    async def guarded() -> None:
        try:
            await coro
        except (JobNotFound, QueueNotFound) as exc:
            raise click.ClickException(str(exc)) from None
        except ConfigurationError as exc:
            raise click.UsageError(str(exc)) from None
        finally:
            await close_connections()

    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(guarded())
    except NaqError as exc:
        click.echo(f"naq: {redact(str(exc))}", err=True)
        sys.exit(EXIT_CONNECTION)
