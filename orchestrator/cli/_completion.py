"""``completion bash|zsh|fish``: a shell completion script, written from the parser.

The parser is walked once into a tree (``command_tree``): each command's
subcommands, options (and whether an option takes a value, and its
choices) and the choices of its positional arguments. Each script carries
that tree as data and one small function that finds where the words typed
so far lead (skipping option values), so that a command added to the
parser is completed without touching this module.

Loading them::

    eval "$(relay-orchestrator completion bash)"     # ~/.bashrc
    eval "$(relay-orchestrator completion zsh)"      # ~/.zshrc, after compinit
    relay-orchestrator completion fish > ~/.config/fish/completions/relay-orchestrator.fish
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from typing import Any

import attrs

PROG = "relay-orchestrator"
SHELLS = ("bash", "zsh", "fish")


@attrs.frozen(kw_only=True)
class Option:
    flags: tuple[str, ...]
    help: str
    takes_value: bool
    choices: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class Command:
    path: tuple[str, ...]  # () for the program itself, ("ctl", "spawn") below ctl
    help: str
    options: tuple[Option, ...]
    subcommands: tuple[Command, ...]
    choices: tuple[str, ...]  # what its positional arguments may be, where they say

    @property
    def key(self) -> str:
        return " ".join(self.path)

    def walk(self) -> Iterator[Command]:
        yield self
        for sub in self.subcommands:
            yield from sub.walk()


def _help(text: str | None) -> str:
    if not text or text == argparse.SUPPRESS:
        return ""
    return " ".join(text.split()).replace("%%", "%")


def command_tree(parser: argparse.ArgumentParser, path: tuple[str, ...] = (),
                 help: str = "") -> Command:
    options: list[Option] = []
    subcommands: list[Command] = []
    choices: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                subcommands.append(command_tree(action.choices[choice.dest],
                                                (*path, choice.dest), _help(choice.help)))
        elif action.option_strings:
            if action.help == argparse.SUPPRESS:
                continue
            options.append(Option(
                flags=tuple(action.option_strings), help=_help(action.help),
                takes_value=action.nargs != 0,
                choices=tuple(str(c) for c in action.choices or ())))
        elif action.choices:
            choices += [str(c) for c in action.choices]
    return Command(path=path, help=help, options=tuple(options),
                   subcommands=tuple(subcommands), choices=tuple(choices))


def _words(items: Any) -> str:
    return " ".join(items)


def _value_flags(command: Command) -> list[str]:
    return [flag for option in command.options if option.takes_value for flag in option.flags]


# -- bash -----------------------------------------------------------------------------


def bash_script(tree: Command) -> str:
    nodes, values = [], []
    for command in tree.walk():
        flags = [flag for option in command.options for flag in option.flags]
        nodes.append(
            f'        "{command.key}") subs="{_words(s.path[-1] for s in command.subcommands)}";'
            f' args="{_words(command.choices)}"; opts="{_words(flags)}";'
            f' vopts="{_words(_value_flags(command))}" ;;')
        for option in command.options:
            if option.choices:
                for flag in option.flags:
                    values.append(f'        "{command.key}|{flag}") echo "'
                                  f'{_words(option.choices)}" ;;')
    return f"""\
# bash completion for {PROG}, written by `{PROG} completion bash`.
# Load it from ~/.bashrc: eval "$({PROG} completion bash)"
_relay_orchestrator_node() {{
    # $1: the command typed so far ("", "ctl", "ctl spawn"): its subcommands,
    # positional choices, options, and the options that take a value.
    case "$1" in
{chr(10).join(nodes)}
        *) subs=""; args=""; opts=""; vopts="" ;;
    esac
}}
_relay_orchestrator_values() {{
    # $1: the command, $2: an option that takes a value: its choices, if any.
    case "$1|$2" in
{chr(10).join(values)}
    esac
}}
_relay_orchestrator() {{
    local cur=${{COMP_WORDS[COMP_CWORD]}} prev=${{COMP_WORDS[COMP_CWORD-1]}}
    local path="" subs args opts vopts word i=1
    _relay_orchestrator_node ""
    while [[ $i -lt $COMP_CWORD ]]; do
        word=${{COMP_WORDS[i]}}
        if [[ " $vopts " == *" $word "* ]]; then
            i=$((i + 1))  # the option's value
        elif [[ $word != -* && " $subs " == *" $word "* ]]; then
            path="${{path:+$path }}$word"
            _relay_orchestrator_node "$path"
        fi
        i=$((i + 1))
    done
    COMPREPLY=()
    if [[ " $vopts " == *" $prev "* ]]; then
        local values
        values=$(_relay_orchestrator_values "$path" "$prev")
        # No choices: any value (bash completes file names, -o default).
        [[ -n $values ]] && COMPREPLY=($(compgen -W "$values" -- "$cur"))
        return 0
    fi
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
    else
        COMPREPLY=($(compgen -W "$subs $args" -- "$cur"))
    fi
    return 0
}}
complete -o default -F _relay_orchestrator {PROG}
"""


# -- zsh ------------------------------------------------------------------------------


def _zq(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _described(name: str, help: str) -> str:
    return _zq(name.replace(":", "\\:") + (":" + help if help else ""))


def zsh_script(tree: Command) -> str:
    nodes, values = [], []
    for command in tree.walk():
        subs = " ".join(_described(s.path[-1], s.help) for s in command.subcommands)
        names = " ".join(_zq(s.path[-1]) for s in command.subcommands)
        opts = " ".join(_described(flag, option.help) for option in command.options
                        for flag in option.flags)
        nodes.append(
            f"        {_zq(command.key)}) subs=({subs}); subnames=({names});"
            f" args=({' '.join(map(_zq, command.choices))}); opts=({opts});"
            f" vopts=({' '.join(map(_zq, _value_flags(command)))}) ;;")
        for option in command.options:
            if option.choices:
                for flag in option.flags:
                    values.append(f"        {_zq(command.key + '|' + flag)}) "
                                  f"reply=({' '.join(map(_zq, option.choices))}) ;;")
    return f"""\
#compdef {PROG}
# zsh completion for {PROG}, written by `{PROG} completion zsh`.
# Load it from ~/.zshrc after compinit: eval "$({PROG} completion zsh)"
# (or save it as _{PROG} in a folder of $fpath).
_relay_orchestrator_node() {{
    # $1: the command typed so far ("", "ctl", "ctl spawn").
    case "$1" in
{chr(10).join(nodes)}
        *) subs=(); subnames=(); args=(); opts=(); vopts=() ;;
    esac
}}
_relay_orchestrator_values() {{
    # $1: the command, $2: an option that takes a value: its choices in $reply.
    reply=()
    case "$1|$2" in
{chr(10).join(values)}
    esac
}}
_relay_orchestrator() {{
    local path="" word i=2
    local -a subs subnames args opts vopts reply
    _relay_orchestrator_node ""
    while (( i < CURRENT )); do
        word=${{words[i]}}
        if (( ${{vopts[(Ie)$word]}} )); then
            (( i++ ))  # the option's value
        elif [[ $word != -* ]] && (( ${{subnames[(Ie)$word]}} )); then
            path="${{path:+$path }}$word"
            _relay_orchestrator_node "$path"
        fi
        (( i++ ))
    done
    if (( CURRENT > 2 )) && (( ${{vopts[(Ie)${{words[CURRENT-1]}}]}} )); then
        _relay_orchestrator_values "$path" "${{words[CURRENT-1]}}"
        if (( $#reply )); then compadd -a reply; else _files; fi
        return
    fi
    if [[ ${{words[CURRENT]}} == -* ]]; then
        _describe -t options option opts
    elif (( $#subs + $#args )); then
        (( $#subs )) && _describe -t commands command subs
        (( $#args )) && compadd -a args
    else
        _files
    fi
}}
if [[ ${{zsh_eval_context[-1]}} == loadautofunc ]]; then
    _relay_orchestrator "$@"
else
    compdef _relay_orchestrator {PROG}
fi
"""


# -- fish -----------------------------------------------------------------------------


def _fq(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def fish_script(tree: Command) -> str:
    subs, vopts, completes = [], [], []
    for command in tree.walk():
        at = f"-n {_fq('__relay_orchestrator_at ' + _fq(command.key))}"
        if command.subcommands:
            subs.append(f"        case {_fq(command.key)}\n            printf '%s\\n' "
                        + " ".join(_fq(s.path[-1]) for s in command.subcommands))
        if _value_flags(command):
            vopts.append(f"        case {_fq(command.key)}\n            printf '%s\\n' "
                         + " ".join(map(_fq, _value_flags(command))))
        for sub in command.subcommands:
            completes.append(f"complete -c {PROG} {at} -a {_fq(sub.path[-1])} -d {_fq(sub.help)}")
        if command.choices:
            completes.append(f"complete -c {PROG} {at} -a {_fq(' '.join(command.choices))}")
        for option in command.options:
            parts = [f"complete -c {PROG} {at}"]
            for flag in option.flags:
                parts.append(f"-l {flag[2:]}" if flag.startswith("--") else f"-s {flag[1:]}")
            if option.choices:
                parts.append(f"-x -a {_fq(' '.join(option.choices))}")
            elif option.takes_value:
                parts.append("-r -F")
            if option.help:
                parts.append(f"-d {_fq(option.help)}")
            completes.append(" ".join(parts))
    return f"""\
# fish completion for {PROG}, written by `{PROG} completion fish`.
# Save it as ~/.config/fish/completions/{PROG}.fish, or: {PROG} completion fish | source
function __relay_orchestrator_subs --description 'the subcommands of a command'
    switch "$argv[1]"
{chr(10).join(subs)}
    end
end
function __relay_orchestrator_vopts --description 'the options of a command that take a value'
    switch "$argv[1]"
{chr(10).join(vopts)}
    end
end
function __relay_orchestrator_path --description 'the command the words typed so far lead to'
    set -l path ''
    set -l skip 0
    set -l words (commandline -opc)
    set -e words[1]
    for word in $words
        if test $skip = 1
            set skip 0
        else if contains -- $word (__relay_orchestrator_vopts "$path")
            set skip 1
        else if not string match -q -- '-*' $word
                and contains -- $word (__relay_orchestrator_subs "$path")
            set path (string trim -- "$path $word")
        end
    end
    echo $path
end
function __relay_orchestrator_at --description 'whether the words typed lead to command $argv[1]'
    set -l path (__relay_orchestrator_path)
    test "$path" = "$argv[1]"
end
complete -c {PROG} -f
{chr(10).join(completes)}
"""


SCRIPTS = {"bash": bash_script, "zsh": zsh_script, "fish": fish_script}


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("completion", help="print a shell completion script (bash, zsh or fish)")
    p.add_argument("shell", choices=SHELLS, help="the shell to complete in")
    p.set_defaults(func=cmd_completion)


def cmd_completion(args: argparse.Namespace) -> int:
    tree = command_tree(args.parser)
    sys.stdout.write(SCRIPTS[args.shell](tree))
    return 0
