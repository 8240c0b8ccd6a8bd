"""A training recipe: oido-train's and oido-convert's flags kept in a TOML file
(`oido-train --config FILE COMMAND`, `oido-convert --config FILE`).

Every key is the long name of a flag, without the dashes (`epochs`, `own_data` or `own-data`).
Keys at the top of the file apply to every command that has that flag; a `[command]` table
(`[fit-openset]`, `[prepare]`; `[convert]` for oido-convert) applies to that command only and
wins over the top. Flags typed on
the command line win over the file. A value is what you would type after the flag: a string,
a number, true/false for a switch, a list for a flag that takes several values or names separated
by commas, a table for `veto` (`{ Music = 0.75 }`). Relative paths are taken from the current
directory, as on the command line. Anything the command would refuse is refused here, with the
file and line: an unknown key or table, a value of the wrong type, a value outside the choices.

Pure argparse + TOML (no TensorFlow): `recipe_arguments` turns a file into the arguments one
command would get; `with_recipe` puts them where command-line flags override them.
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.config import TomlLocator, parse_toml, read_toml_text
from edge.errors import ConfigError

EXAMPLE = "scripts/recipe.toml"
"""The example recipe in the repository: the defaults written out, with a user's own task commented."""
NOT_IN_A_RECIPE = frozenset({"help", "config"})
"""Flags a recipe cannot set: --help, and --config itself (recipes do not include recipes)."""


@dataclass(frozen=True)
class Recipe:
    """A parsed recipe file: top-level keys and one table per command."""

    path: Path
    text: str
    top: Mapping[str, Any]
    """key -> value, for every command that has the flag."""
    tables: Mapping[str, Mapping[str, Any]]
    """command -> {key -> value}, for that command only."""


def load_recipe(path: str | Path) -> Recipe:
    """Read a recipe file. Raises ConfigError naming the file (not found, not TOML)."""
    path = Path(path)
    text = read_toml_text(path, what="recipe", example=EXAMPLE)
    document = parse_toml(text, where=str(path))
    top = {key: value for key, value in document.items() if not isinstance(value, dict) or key == "veto"}
    tables = {key: value for key, value in document.items() if key not in top}
    return Recipe(path=path, text=text, top=top, tables=tables)


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """--long-option -> its action, for every option a recipe may set."""
    return {
        option: action
        for action in parser._actions  # argparse keeps no public list of a parser's actions
        for option in action.option_strings
        if option.startswith("--") and action.dest not in NOT_IN_A_RECIPE
    }


def _hint(word: str, known: Sequence[str]) -> str:
    """"; did you mean a, b?" for the known words close to `word` (flags without their dashes)."""
    names = [name.lstrip("-") for name in known]
    close = difflib.get_close_matches(word.lstrip("-").replace("_", "-"), names, n=3, cutoff=0.6)
    return f"; did you mean {', '.join(close)}?" if close else ""


def _tokens(action: argparse.Action, option: str, value: Any, *, where: str) -> list[str]:
    """The command-line words that give `value` to `option`. Raises ConfigError for a wrong type."""
    if action.nargs == 0:  # a switch: store_true, --x/--no-x
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {option} is a switch; write true or false, not {value!r}")
        if isinstance(action, argparse.BooleanOptionalAction):
            return [option if value else "--no-" + option[2:]]
        return [option] if value else []
    if isinstance(value, bool):
        raise ConfigError(f"{where}: {option} takes a value, not {str(value).lower()}")
    if isinstance(value, dict):
        words = [",".join(f"{name}={score}" for name, score in value.items()) or "none"]
    elif action.nargs in ("+", "*") or isinstance(action.nargs, int):
        words = [str(item) for item in (value if isinstance(value, list) else [value])]
    elif isinstance(value, list):
        words = [",".join(str(item) for item in value)]
    else:
        words = [str(value)]
    for word in words:  # what argparse would refuse, refused here with the file and line
        try:
            converted = action.type(word) if callable(action.type) else word
        except (argparse.ArgumentTypeError, ValueError, TypeError) as error:
            raise ConfigError(f"{where}: {option} cannot take {value!r}: {error}") from None
        if action.choices is not None and converted not in action.choices:
            raise ConfigError(f"{where}: {option} is one of {', '.join(map(str, action.choices))}, not {value!r}")
    return [option, *words]


def long_options(parsers: Sequence[argparse.ArgumentParser]) -> set[str]:
    """Every --long-option a recipe may set on any of `parsers`."""
    return {option for parser in parsers for option in _options(parser)}


def recipe_arguments(
    recipe: Recipe, commands: Mapping[str, argparse.ArgumentParser], command: str, *, tool: str = "oido-train",
    other_tables: Sequence[str] = (), other_options: Sequence[str] = (),
) -> list[str]:  # fmt: skip
    """The arguments `recipe` gives `command` of `tool` (top-level keys it has, then its table).

    commands: every sub-command's parser, by name (keys everywhere are checked against them, so a
    typo in a table of another command is caught too). other_tables / other_options: the tables
    and --options of the other tool that reads the same file (oido-train's [command] tables and
    oido-convert's [convert]), accepted and left to it. Raises ConfigError naming file and line."""
    locate = TomlLocator(recipe.text, str(recipe.path))
    for table in recipe.tables:
        if table not in commands and table not in other_tables:
            known = [*commands, *other_tables]
            raise ConfigError(
                f"{locate(None, table)}: [{table}] is not a table of this recipe{_hint(table, known)} "
                f"(tables: {', '.join(known)})"
            )
    every_option = sorted(long_options(list(commands.values())) | set(other_options))
    for key in recipe.top:
        if _flag(key) not in every_option:
            raise ConfigError(
                f"{locate(None, key)}: '{key}' is not a flag of oido-train or oido-convert"
                f"{_hint(key, every_option)}"
            )
    for table, entries in recipe.tables.items():
        if table not in commands:
            continue
        options = _options(commands[table])
        program = tool if tool.endswith("-" + table) else f"{tool} {table}"  # "oido-convert", "oido-train fit"
        for key in entries:
            if _flag(key) not in options:
                raise ConfigError(f"{locate(table, key)}: '{key}' is not a flag of {program}{_hint(key, sorted(options))}")
    arguments = {name: _arguments_for(recipe, parser, name, locate) for name, parser in commands.items()}
    return arguments[command]  # every command's were built: a mistake anywhere in the file is caught now


def _arguments_for(recipe: Recipe, parser: argparse.ArgumentParser, command: str, locate: TomlLocator) -> list[str]:
    options = _options(parser)
    chosen: dict[str, tuple[tuple[str | None, str], Any]] = {}
    for key, value in recipe.top.items():
        if _flag(key) in options:
            chosen[_flag(key)] = (None, key), value
    for key, value in recipe.tables.get(command, {}).items():
        chosen[_flag(key)] = (command, key), value
    arguments: list[str] = []
    for option, ((table, key), value) in chosen.items():
        arguments += _tokens(options[option], option, value, where=locate(table, key))
    return arguments


def command_index(argv: Sequence[str], parser: argparse.ArgumentParser, commands: Mapping[str, Any]) -> int:
    """Where the command is in `argv` (the first word that is not an option of `parser` or its value)."""
    takes_value = {o for a in parser._actions for o in a.option_strings if a.nargs != 0}
    index = 0
    while index < len(argv):
        word = argv[index]
        if word in commands:
            return index
        index += 2 if word in takes_value else 1
    raise ValueError(f"no command in {list(argv)}")


def with_recipe(argv: Sequence[str], recipe_words: Sequence[str], *, at: int) -> list[str]:
    """`argv` with the recipe's words right after the command (at index `at`) and every word the
    user typed after them, so what was typed wins (argparse keeps an option's last value)."""
    return [argv[at], *recipe_words, *argv[:at], *argv[at + 1 :]]
