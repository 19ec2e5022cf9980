"""Reading episodes back from a transcript: choosing them, and showing them in a terminal.

Transcripts come from `holderpo eval` and from training (same schema, written by
`rollouts.transcripts.TranscriptWriter`); fields a writer may leave out or set differently
(`policy`, `model`, `thought`, `error`) are read with defaults, never assumed.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from rollouts.records import OUTCOMES, EpisodeRecord, TurnRecord

Episode = dict[str, Any]  # one transcript line, as read by rollouts.transcripts.read_transcript
ONLY_CHOICES = ("won", "failed")  # failed: step-limit or errored
OUTCOME_STYLES = {"won": "bold green", "step-limit": "bold yellow", "errored": "bold red"}


def select_episodes(episodes: Sequence[Episode], episode: str | None = None, only: str | None = None,
                    task_type: str | None = None) -> list[Episode]:
    """The episodes that pass every filter given, in file order.

    `episode` is an episode id or a prefix of exactly one id. Raises ValueError when it names
    none or several, or when `only` is not one of ONLY_CHOICES.
    """
    if only is not None and only not in ONLY_CHOICES:
        raise ValueError(f"expected --only in {list(ONLY_CHOICES)}, got {only!r}")
    chosen = list(episodes)
    if episode is not None:
        exact = [e for e in chosen if e.get("episode_id") == episode]
        matches = exact or [e for e in chosen if str(e.get("episode_id", "")).startswith(episode)]
        if not matches:
            raise ValueError(f"no episode id starts with {episode!r}; the file has {len(chosen)} "
                             f"episodes, e.g. {[e.get('episode_id') for e in chosen[:3]]}")
        if len({e.get("episode_id") for e in matches}) > 1:
            ids = sorted({str(e.get("episode_id")) for e in matches})
            raise ValueError(f"{episode!r} is a prefix of {len(ids)} episode ids, e.g. {ids[:3]}: "
                             "give more of the id")
        chosen = matches
    if only is not None:
        chosen = [e for e in chosen if (e.get("outcome") == "won") == (only == "won")]
    if task_type is not None:
        chosen = [e for e in chosen if e.get("task_type") == task_type]
    return chosen


def records_from_transcript(episodes: Iterable[Episode]) -> list[EpisodeRecord]:
    """Episode records rebuilt from transcript entries, so `eval.evaluate.summarize` can
    summarise a transcript exactly as it summarises a sweep."""
    records = []
    for entry in episodes:
        episode_id = str(entry.get("episode_id", "?"))
        records.append(EpisodeRecord(
            episode_id=episode_id, game=str(entry.get("game", "")),
            game_id=str(entry.get("game_id") or episode_id.split("#")[0]),
            task_type=str(entry.get("task_type", "unknown")), task=str(entry.get("task", "")),
            sample=int(entry.get("sample", 0)), seed=int(entry.get("seed", 0)), group=0,
            outcome=entry.get("outcome") if entry.get("outcome") in OUTCOMES else "errored",
            error=entry.get("error"), final_observation=str(entry.get("final_observation", "")),
            turns=[TurnRecord(observation=str(t.get("observation", "")), action=str(t.get("action", "")),
                              response=str(t.get("response", "")), thought=t.get("thought"),
                              admissible=bool(t.get("admissible")), malformed=bool(t.get("malformed")),
                              reward=float(t.get("reward", 0.0)))
                   for t in entry.get("turns", [])],
        ))
    return records


def turn_flags(turn: dict[str, Any]) -> list[str]:
    """The flags of a turn as words: admissible or inadmissible, and malformed."""
    flags = ["admissible" if turn.get("admissible") else "inadmissible"]
    if turn.get("malformed"):
        flags.append("malformed")
    return flags


def distinct_response(turn: dict[str, Any]) -> str | None:
    """The model's raw response when it says more than the action it was read as, else None."""
    response = turn.get("response")
    return None if response is None or response == turn.get("action") else str(response)


def episode_header(episode: Episode) -> list[tuple[str, str]]:
    """(label, value) pairs that identify an episode, shared by the terminal and HTML views."""
    return [
        ("task", str(episode.get("task", ""))),
        ("task type", str(episode.get("task_type", "unknown"))),
        ("policy", str(episode.get("policy") or "-")),
        ("model", str(episode.get("model") or "-")),
        ("seed", str(episode.get("seed", "-"))),
        ("game", str(episode.get("game", "-"))),
    ]


def render_episode(episode: Episode):
    """One episode as a rich renderable. Every text from games and models goes in as `Text`,
    never as markup, so brackets in an observation are shown, not interpreted."""
    from rich.console import Group
    from rich.padding import Padding
    from rich.rule import Rule
    from rich.text import Text

    parts: list = [Rule(Text(str(episode.get("episode_id", "?")), style="bold"), align="left")]
    for label, value in episode_header(episode):
        parts.append(Text.assemble((f"{label}: ", "bold"), value))
    for index, turn in enumerate(episode.get("turns", []), start=1):
        flags = turn_flags(turn)
        flag_style = "red" if flags != ["admissible"] else "green"
        parts.append(Text.assemble((f"\nturn {index} ", "bold cyan"), (" ".join(flags), flag_style),
                                   f"  reward {float(turn.get('reward', 0.0)):g}"))
        body = [Text(str(turn.get("observation", "")), style="dim")]
        if turn.get("thought"):
            body.append(Text.assemble(("thought: ", "italic"), str(turn["thought"])))
        response = distinct_response(turn)
        if response is not None:
            body.append(Text.assemble(("response: ", "italic"), response))
        body.append(Text.assemble(("> ", "bold"), (str(turn.get("action", "")), "bold")))
        parts.append(Padding(Group(*body), (0, 0, 0, 2)))
    parts.append(Text.assemble(("\nfinal observation: ", "bold"), str(episode.get("final_observation", ""))))
    outcome = str(episode.get("outcome", "?"))
    ending = Text.assemble(("outcome: ", "bold"), (outcome, OUTCOME_STYLES.get(outcome, "bold")),
                           f" after {len(episode.get('turns', []))} steps")
    if episode.get("error"):
        ending.append(f"\nerror: {episode['error']}", style="red")
    parts.append(ending)
    return Group(*parts)


def print_episodes(episodes: Sequence[Episode], console=None) -> None:
    """Print each episode, then one line counting the outcomes of those shown."""
    from rich.console import Console

    console = console or Console()
    for episode in episodes:
        console.print(render_episode(episode))
        console.print()
    counts = {outcome: sum(e.get("outcome") == outcome for e in episodes) for outcome in OUTCOMES}
    console.print(f"{len(episodes)} episode(s) shown: " + ", ".join(f"{n} {o}" for o, n in counts.items()),
                  markup=False, highlight=False)
