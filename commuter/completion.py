"""Shell completion (bash, zsh, fish): peer names and session ids, and `commuter completion
SHELL`, which prints the script to source.

Click does the completing when `_COMMUTER_COMPLETE` is set (`bash_complete`, `zsh_complete`,
`fish_complete`); the callbacks here are the `shell_complete=` of the params that name a peer
or a session. A failure while completing offers nothing: it must never print an error into
the middle of a command line.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import click
from click.shell_completion import CompletionItem

if TYPE_CHECKING:
    from commuter.settings import Settings

SHELLS = ("bash", "zsh", "fish")
COMPLETE_VAR = "_COMMUTER_COMPLETE"
MAX_SESSIONS = 200  # newest first; an older one is typed by its id


def register(cli: click.Group) -> None:
    """Add `completion` to the CLI group."""
    cli.add_command(completion_cmd)


def _settings() -> Settings:
    from commuter.settings import Settings

    return Settings.from_env()


def complete_peer(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Paired machines' names starting with `incomplete` (their device id as the help)."""
    with contextlib.suppress(Exception):
        from commuter.peer.peers import Peers

        return [
            CompletionItem(p.name, help=p.device_id)
            for p in Peers.load(_settings()).all()
            if p.name.startswith(incomplete)
        ]
    return []


def complete_session(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Session ids (newest first) starting with `incomplete`, the first prompt as the help;
    with `--agent NAME` already typed, that agent's only."""
    with contextlib.suppress(Exception):
        from commuter import core
        from commuter.commands._app import one_line_text

        agent = ctx.params.get("agent")
        wanted = incomplete.lower()
        items: list[CompletionItem] = []
        for ref in core.list_sessions(_settings(), agent if isinstance(agent, str) else None):
            if ref.has_messages and ref.session_id.lower().startswith(wanted):
                text = one_line_text(ref.first_prompt or "")[:60]
                items.append(CompletionItem(ref.session_id, help=text or ref.backend))
                if len(items) >= MAX_SESSIONS:
                    break
        return items
    return []


def complete_ssh_host(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """The `Host` names of ~/.ssh/config starting with `incomplete` (patterns left out)."""
    with contextlib.suppress(Exception):
        text = (_settings().home / ".ssh" / "config").read_text(encoding="utf-8", errors="replace")
        names: list[str] = []
        for line in text.splitlines():
            words = line.split()
            if len(words) > 1 and words[0].lower() == "host":
                names += [w for w in words[1:] if not set(w) & set("*?!") and w not in names]
        return [CompletionItem(n) for n in names if n.startswith(incomplete)]
    return []


def complete_file(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """The shell's own file name completion (a bundle to import, a file to export to)."""
    return [CompletionItem(incomplete, type="file")]


@click.command("completion")
@click.argument("shell", type=click.Choice(SHELLS))
@click.pass_context
def completion_cmd(ctx: click.Context, shell: str) -> None:
    """Print the shell completion script for SHELL (bash, zsh or fish).

    \b
    bash:  eval "$(commuter completion bash)"         in ~/.bashrc
    zsh:   eval "$(commuter completion zsh)"          in ~/.zshrc
    fish:  commuter completion fish > ~/.config/fish/completions/commuter.fish
    """
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    if cls is None:  # pragma: no cover - click ships all three
        raise click.UsageError(f"no completion for {shell}")
    root = ctx.find_root().command
    click.echo(cls(root, {}, "commuter", COMPLETE_VAR).source())
