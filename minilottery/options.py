"""The command line's options, made from dataclass fields, and its one-line errors.

A field with ``metadata["help"]`` (``hparams.option``) becomes ``--name-with-dashes``:
its type, default and help come from the field, ``choices`` and ``path`` in its
metadata make a choice or a folder. The hyperparameters' options default to None, so
that the chosen network's own values (``hparams.DEFAULTS``) apply.
"""
import functools
from dataclasses import fields

import click

from . import hparams
from .files import RunFileError
from .idx import DataFileError
from .schedule import RunError
from .train import TrainingDiverged


def option_of(field, network_defaults):
    """The click option of one dataclass field: --name-with-dashes, its help, type and default.
    With ``network_defaults`` the default is None, so that the network's own value applies."""
    flag, meta = "--" + field.name.replace("_", "-"), field.metadata
    default = None if network_defaults else field.default
    shown = not network_defaults and default is not None and default is not False and default != ()
    choices = meta.get("choices")
    if isinstance(choices, dict):  # words on the command line for values of the field
        chosen = next(word for word, value in choices.items() if value == default)
        if meta.get("several"):  # comma-separated words, their values joined
            return click.option(flag, field.name, default=chosen, show_default=True, metavar="LIST",
                                help=f"{meta['help']}: {', '.join(choices)} (several with commas)",
                                callback=lambda context, parameter, text: several(choices, text))
        return click.option(flag, field.name, type=click.Choice(list(choices)), default=chosen, show_default=True,
                            help=meta["help"], callback=lambda context, parameter, word: choices[word])
    if field.type is bool:
        if network_defaults:
            return click.option(f"{flag}/--no-{flag[2:]}", field.name, default=None, help=meta["help"])
        return click.option(flag, field.name, is_flag=True, help=meta["help"])
    kind = (click.Choice(choices) if choices else click.Path(file_okay=False) if meta.get("path")
            else None if field.type is tuple else field.type)
    return click.option(flag, field.name, type=kind, default=default, show_default=shown, help=meta["help"],
                        metavar="LIST" if field.type is tuple else None)


def several(choices, text):
    """The values of comma-separated words, joined in the order given, each once."""
    joined = []
    for word in (w.strip() for w in str(text).split(",")):
        if word not in choices:
            raise click.BadParameter(f"{word!r} is not one of {', '.join(choices)}; several go with commas")
        joined += [value for value in choices[word] if value not in joined]
    return tuple(joined)


def flags(cls, names=None, network_defaults=False, pruning=None):
    """Options for the fields of dataclass ``cls`` that have help (only ``names``, if given;
    with ``pruning`` True or False, only the pruning fields or only the others)."""
    chosen = [f for f in fields(cls) if "help" in f.metadata and f.metadata.get("flag", True)
              and (names is None or f.name in names)
              and (pruning is None or f.metadata.get("pruning", False) == pruning)]

    def decorate(command):
        for field in reversed(chosen):
            command = option_of(field, network_defaults)(command)
        return command
    return decorate


NET = click.option("--net", type=click.Choice(list(hparams.DEFAULTS)), default="lenet", show_default=True,
                   help="network of the paper's Figure 2")
QUIET = click.option("--quiet", is_flag=True, help="no progress line")


def friendly_errors(command):
    """Turn expected failures into one-line errors instead of tracebacks."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (ValueError, DataFileError, RunFileError, TrainingDiverged, OSError, RunError) as error:
            raise click.ClickException(str(error).splitlines()[0] if str(error) else repr(error)) from None
    return wrapper
