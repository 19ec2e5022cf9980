"""ALFWorld environments for Gymnasium; importing this package registers `ALFWorld-v0`."""

from gymnasium.envs.registration import register, registry

from envs.alfworld_env import AlfWorldEnv
from envs.games import TASK_TYPES, Game, GameFileError, MissingDataError, load_game, resolve_games, scan_games
from envs.safety import UnsafeGameError

__all__ = [
    "AlfWorldEnv",
    "Game",
    "GameFileError",
    "MissingDataError",
    "TASK_TYPES",
    "UnsafeGameError",
    "load_game",
    "resolve_games",
    "scan_games",
]

if "ALFWorld-v0" not in registry:
    register(id="ALFWorld-v0", entry_point="envs.alfworld_env:AlfWorldEnv")
