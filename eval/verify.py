"""Re-play a transcript's recorded actions on its recorded games and compare what the engine says.

A transcript is only worth reading if it is what the engine does: one written against other
game files (another data download, regenerated games) or another engine version shows
observations the engine no longer produces. Verification replays each episode's actions through
a fresh `AlfWorldEnv` and compares, turn by turn, the observation the agent saw before acting
(the reset text for the first turn) and, at the end, the observation after the last action.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from envs.games import GameFileError
from rollouts.records import EpisodeRecord

GAME_ID_PARTS = 3  # "<task folder>/<trial folder>/game.tw-pddl": the least of a path that names a game


@dataclass(frozen=True)
class Mismatch:
    """A turn whose recorded observation differs from the engine's. `turn` counts from 1;
    the observation after the last action is reported as turn len(turns) + 1 ("final")."""

    turn: int
    expected: str  # from the transcript
    got: str  # from the engine
    line: int  # first differing line, from 1
    expected_line: str
    got_line: str


@dataclass
class EpisodeCheck:
    """The verdict on one episode: `status` is "match", "mismatch", "missing-game" or "error"."""

    episode_id: str
    game: str
    status: str
    mismatches: list[Mismatch] = field(default_factory=list)
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "match"


def first_difference(expected: str, got: str) -> tuple[int, str, str]:
    """(line number from 1, expected line, got line) of the first line where the texts differ;
    a missing line is ""."""
    expected_lines, got_lines = expected.splitlines(), got.splitlines()
    for number in range(max(len(expected_lines), len(got_lines))):
        want = expected_lines[number] if number < len(expected_lines) else ""
        have = got_lines[number] if number < len(got_lines) else ""
        if want != have:
            return number + 1, want, have
    # Same lines, different text: only line endings or a trailing newline differ.
    return max(len(expected_lines), 1), repr(expected[-20:]), repr(got[-20:])


def locate_game(recorded: str, games_root: str | Path | None = None) -> Path | None:
    """The game file of a recorded path, or None when it is not on disk.

    Without `games_root`, the recorded path itself (relative paths from the current folder).
    With it, the data has moved: try `games_root` joined with ever shorter tails of the recorded
    path, from the longest (keeps the split folders) down to "<task>/<trial>/game.tw-pddl".
    """
    path = Path(recorded)
    if games_root is None:
        return path if path.is_file() else None
    parts = path.parts[1:] if path.is_absolute() else path.parts
    for start in range(max(len(parts) - GAME_ID_PARTS, 0) + 1):
        candidate = Path(games_root, *parts[start:])
        if candidate.is_file():
            return candidate
    return None


def _compare(mismatches: list[Mismatch], turn: int, expected: str, got: str) -> None:
    if expected != got:
        mismatches.append(Mismatch(turn, expected, got, *first_difference(expected, got)))


def verify_episode(env, episode: EpisodeRecord, games_root: str | Path | None = None) -> EpisodeCheck:
    """Replay one episode's actions on `env` (an AlfWorldEnv whose step limit is at least the
    episode's length) and compare every observation with the transcript's."""
    episode_id, recorded = episode.episode_id, episode.game
    game = locate_game(recorded, games_root)
    if game is None:
        where = f" (nor under --games-root {games_root})" if games_root is not None else ""
        return EpisodeCheck(
            episode_id,
            recorded,
            "missing-game",
            message=f"game file {recorded} not found{where}; if the data moved, "
            "pass --games-root DIR with the folder that now holds it",
        )
    if not episode.turns and episode.outcome == "errored":
        return EpisodeCheck(
            episode_id, str(game), "match", message="recorded as errored before its first turn: nothing to compare"
        )
    mismatches: list[Mismatch] = []
    try:
        observation, _ = env.reset(seed=episode.seed, options={"game": str(game)})
        for number, turn in enumerate(episode.turns, start=1):
            _compare(mismatches, number, turn.observation, observation)
            observation, *_ = env.step(turn.action)
    except (GameFileError, RuntimeError) as error:
        # RuntimeError: the engine ended the episode before the transcript did (it was won
        # earlier here), which is itself a mismatch of the recorded game.
        return EpisodeCheck(
            episode_id, str(game), "error", mismatches, f"replay stopped: {type(error).__name__}: {error}"
        )
    if episode.outcome != "errored":  # an errored episode's last observation is empty
        _compare(mismatches, episode.steps + 1, episode.final_observation, observation)
    return EpisodeCheck(episode_id, str(game), "mismatch" if mismatches else "match", mismatches)


def verify_episodes(episodes: Sequence[EpisodeRecord], games_root: str | Path | None = None) -> Iterable[EpisodeCheck]:
    """Verify each episode in turn with one env (its engine stays loaded between games)."""
    from envs.alfworld_env import AlfWorldEnv

    longest = max((e.steps for e in episodes), default=0)
    env = AlfWorldEnv(max_steps=longest + 1)  # never truncates inside a recorded episode
    try:
        for episode in episodes:
            yield verify_episode(env, episode, games_root)
    finally:
        env.close()
