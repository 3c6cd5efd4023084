"""The ``eoseg`` click group: a thin layer over the Python API.

Each command lives in its own module in this package and exposes a ``command`` (a click.Command);
the group discovers them, so adding a command never touches this file. Errors from the API
(:class:`eoseg.errors.EosegError`) become one line ``eoseg: error: <file>: <problem>. <fix>`` and a
non-zero exit (2 for usage errors, 1 otherwise); ``--verbose`` adds the traceback.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import sys
import traceback

import click

from eoseg import __version__
from eoseg.errors import EosegError

_NOT_COMMANDS = {"options"}


class EosegGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        names = [m.name for m in pkgutil.iter_modules(__path__) if m.name not in _NOT_COMMANDS]
        return sorted(n.replace("_", "-") for n in names)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        module_name = name.replace("-", "_")
        if module_name in _NOT_COMMANDS or module_name not in {m.name for m in pkgutil.iter_modules(__path__)}:
            return None
        return importlib.import_module(f"{__name__}.{module_name}").command

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except EosegError as exc:
            if ctx.obj and ctx.obj.get("verbose"):
                traceback.print_exc()
            click.echo(f"eoseg: error: {exc}", err=True)
            sys.exit(exc.exit_code)


@click.group(cls=EosegGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="eoseg")
@click.option("-v", "--verbose", is_flag=True, help="Show debug logging and full tracebacks.")
@click.pass_context
def main(ctx: click.Context, verbose: bool) -> None:
    """eoseg: segment coastal GeoTIFF scenes into water, white-water, sand and other."""
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="eoseg: %(message)s")
