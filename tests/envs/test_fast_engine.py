"""The fast engine against textworld's stock engine: byte-identical play, fallbacks, caching.

The differential tests play the same seeded episodes on `AlfWorldEnv(engine="stock")` and
`AlfWorldEnv(engine="fast")` and require equal observations, admissible-command lists,
rewards, terminated/truncated and won flags (the whole info dict) at every step. Episodes:
short random walks over admissible commands mixed with inadmissible text, walkthrough prefixes
followed by random steps (these reach held, opened, heated, cleaned, cooled and won states),
and the handcoded expert's walks. Games: the seven fixtures (all six task types, one legacy
grammar) and small generated ones. benchmarks/bench_engine.py runs the same comparison over
thousands of episodes.
"""

import random
import warnings

import pytest
from textworld.envs import PddlEnv

import envs.fast_engine as fast_engine
from envs import AlfWorldEnv, load_game, resolve_games
from envs.fast_engine import assets
from envs.fast_engine.differential import first_difference, play_episode
from envs.fast_engine.env import FastPddlEnv
from envs.generator import generate_games

N_FIXTURES = 7
GENERATED = {  # size -> task types; pick_two games are slow to generate, a fixture covers them
    "tiny": [
        "pick_and_place_simple",
        "look_at_obj_in_light",
        "pick_clean_then_place_in_recep",
        "pick_heat_then_place_in_recep",
        "pick_cool_then_place_in_recep",
    ],
    "small": ["pick_and_place_simple", "pick_cool_then_place_in_recep"],
}
N_GAMES = N_FIXTURES + sum(map(len, GENERATED.values()))
RANDOM_EPISODES, RANDOM_STEPS = 10, 3  # per game: 14 games x 14 episodes (with the expert's)
PREFIX_EPISODES = 3  # per game: a walkthrough prefix (the whole of it in one), then RANDOM_STEPS
MAX_STEPS = 40


@pytest.fixture(scope="module")
def games(tmp_path_factory, fixture_game_files) -> list[str]:
    root = tmp_path_factory.mktemp("fast_engine_games")
    for size, task_types in GENERATED.items():
        generate_games(root / size, num=len(task_types), seed=0, size=size, task_types=task_types, planner_every=0)
    generated = [game for size in GENERATED for game in resolve_games(root / size)]
    assert len(fixture_game_files) == N_FIXTURES and len(generated) == N_GAMES - N_FIXTURES
    return fixture_game_files + generated


@pytest.fixture(scope="module")
def engines() -> dict[bool, tuple[AlfWorldEnv, AlfWorldEnv]]:
    """(stock, fast) envs without and with the expert, shared by the tests of this module."""
    return {
        expert: tuple(AlfWorldEnv(max_steps=MAX_STEPS, expert=expert, engine=name) for name in ("stock", "fast"))
        for expert in (False, True)
    }


def assert_same_play(stock: list[tuple], fast: list[tuple], episode: str) -> None:
    step = first_difference(stock, fast)
    assert step is None, (
        f"{episode}: the engines differ at output {step}:\n"
        f"stock: {stock[step] if step < len(stock) else '(ended)'}\n"
        f"fast:  {fast[step] if step < len(fast) else '(ended)'}"
    )


@pytest.mark.parametrize("index", range(N_GAMES))
def test_random_and_walkthrough_walks_match_stock(games, engines, index):
    game = games[index]
    walkthrough = load_game(game).walkthrough
    stock, fast = engines[False]
    rng = random.Random(index)
    prefixes = (
        [[]] * RANDOM_EPISODES
        + [walkthrough]
        + [walkthrough[: rng.randrange(1, len(walkthrough))] for _ in range(PREFIX_EPISODES - 1)]
    )
    won = False
    for episode, prefix in enumerate(prefixes):
        seed = 1000 * index + episode
        expected = play_episode(stock, game, seed, prefix, RANDOM_STEPS)
        assert_same_play(expected, play_episode(fast, game, seed, prefix, RANDOM_STEPS), f"{game} seed {seed}")
        won |= expected[-1][-1]["won"]
    assert won, "the whole walkthrough should win: the episodes did not cover a won state"


@pytest.mark.parametrize("index", range(N_GAMES))
def test_expert_walk_matches_stock(games, engines, index):
    stock, fast = engines[True]
    expected = play_episode(stock, games[index], index, follow_expert=True)
    assert_same_play(expected, play_episode(fast, games[index], index, follow_expert=True), games[index])


def test_trusted_custom_grammar_is_played_by_textworlds_own_code(games_copy):
    """Grammars other than alfworld's keep textworld's derivation (it deep-copies contexts)."""
    game = resolve_games(games_copy)[0]
    text = open(game, encoding="utf-8").read()
    open(game, "w", encoding="utf-8").write(text.replace("You arrive at ", "You reach "))
    stock, fast = (AlfWorldEnv(trust_game_files=True, engine=name) for name in ("stock", "fast"))
    prefix = load_game(game, trust_game_files=True).walkthrough
    expected = play_episode(stock, game, 0, prefix, RANDOM_STEPS)
    assert any("You reach " in record[1] for record in expected[1:])
    assert_same_play(expected, play_episode(fast, game, 0, prefix, RANDOM_STEPS), game)
    assert fast._engine.unwrapped._assets is None


def test_a_game_is_translated_once_per_process(fixture_game_files, monkeypatch):
    builds = []
    build = assets.GameAssets.build
    monkeypatch.setattr(assets.GameAssets, "build", lambda data, lib: builds.append(1) or build(data, lib))
    assets.clear_cache()
    first, second = AlfWorldEnv(), AlfWorldEnv()
    for env in (first, second, first):
        env.reset(options={"game": fixture_game_files[0]})
    assert len(builds) == 1


def test_cache_is_bounded_and_eviction_only_costs_time(fixture_game_files, monkeypatch):
    monkeypatch.setattr(assets, "CACHE_SIZE", 1)
    assets.clear_cache()
    env, stock = AlfWorldEnv(engine="fast"), AlfWorldEnv(engine="stock")
    for game in fixture_game_files[:2] + fixture_game_files[:1]:  # the last load is a cache miss
        assert env.reset(options={"game": game}) == stock.reset(options={"game": game})
        assert len(assets._cache) == 1


def test_fast_engine_is_the_default(fixture_game_files):
    env = AlfWorldEnv(games=fixture_game_files[:1])
    env.reset(seed=0)
    assert type(env._engine.unwrapped) is FastPddlEnv
    stock = AlfWorldEnv(games=fixture_game_files[:1], engine="stock")
    stock.reset(seed=0)
    assert type(stock._engine.unwrapped) is PddlEnv


def test_unknown_textworld_version_warns_and_plays_on_stock(fixture_game_files, monkeypatch):
    monkeypatch.setattr(fast_engine, "textworld_version", lambda: "9.9.9")
    env = AlfWorldEnv(games=fixture_game_files[:1])
    with pytest.warns(RuntimeWarning, match=r"textworld 9\.9\.9 is installed.*stock"):
        env.reset(seed=0)
    assert type(env._engine.unwrapped) is PddlEnv
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warns once per engine, not per reset
        env.reset(seed=0)


def test_unknown_engine_is_a_value_error():
    with pytest.raises(ValueError, match=r"expected engine in \['fast', 'stock'\], got 'bogus'"):
        AlfWorldEnv(engine="bogus")
