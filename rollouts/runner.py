"""Play many episodes in lock-step: one policy call per turn over all live episodes.

Episodes are queued and fed into free slots of a `BatchedEnvs` (local processes or Ray actors)
as earlier ones finish, so the batch stays full; every live slot moves one turn per iteration,
which lets an LLM policy generate for all of them in one call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from agents.policy import Policy, Turn
from envs.batched import BatchedEnvs, StepResult
from rollouts.records import EpisodeRecord, EpisodeSpec, TurnRecord


def _start_record(spec: EpisodeSpec, result: StepResult) -> EpisodeRecord:
    return EpisodeRecord(
        episode_id=spec.episode_id,
        game=spec.game,
        game_id=spec.game_id,
        task_type=spec.task_type,
        task=result.info.get("task", ""),
        sample=spec.sample,
        seed=spec.seed,
        group=spec.group,
    )


def _finish(record: EpisodeRecord, result: StepResult) -> None:
    record.final_observation = result.observation
    if result.error is not None:
        record.outcome, record.error = "errored", result.error
    else:
        record.outcome = "won" if result.terminated else "step-limit"


def play_episodes(
    batch: BatchedEnvs,
    policy: Policy,
    specs: Sequence[EpisodeSpec],
    on_episode_end: Callable[[EpisodeRecord], None] | None = None,
    progress: str | None = None,
) -> list[EpisodeRecord]:
    """Play every spec once; return the records in the order of `specs`.

    `on_episode_end` is called as each episode finishes (for example to append it to a
    transcript file), so a crash loses only the episodes in flight. `progress` names a
    progress bar of finished episodes (None: no bar).
    """
    from tqdm import tqdm

    # `with`: the bar is closed on Ctrl-C too, so a message printed after it starts its own line.
    with tqdm(total=len(specs), desc=progress, unit="episode", leave=False, disable=progress is None) as bar:
        pending = list(range(len(specs)))[::-1]  # popped from the end: specs in order
        records: list[EpisodeRecord | None] = [None] * len(specs)
        slot_spec: dict[int, int] = {}  # slot -> index into specs
        last: dict[int, StepResult] = {}  # slot -> latest result of its live episode

        def finish(slot: int, result: StepResult) -> None:
            index = slot_spec.pop(slot)
            _finish(records[index], result)
            last.pop(slot, None)
            bar.update(1)
            if on_episode_end is not None:
                on_episode_end(records[index])

        while pending or slot_spec:
            free = [slot for slot in range(batch.num_envs) if slot not in slot_spec]
            assignment: list[str | None] = [None] * batch.num_envs
            seeds: list[int | None] = [None] * batch.num_envs
            for slot in free:
                if not pending:
                    break
                index = pending.pop()
                slot_spec[slot] = index
                assignment[slot], seeds[slot] = specs[index].game, specs[index].seed
            if any(game is not None for game in assignment):
                for slot, result in enumerate(batch.reset(assignment, seeds)):
                    if result is None:
                        continue
                    records[slot_spec[slot]] = _start_record(specs[slot_spec[slot]], result)
                    if result.done:  # the reset itself failed (bad game file, dead worker)
                        finish(slot, result)
                    else:
                        last[slot] = result
            if not last:
                continue

            live = sorted(last)
            turns = []
            for slot in live:
                record = records[slot_spec[slot]]
                history = tuple((t.observation, t.action) for t in record.turns)
                turns.append(
                    Turn(
                        record.episode_id,
                        record.seed,
                        len(record.turns),
                        last[slot].observation,
                        last[slot].info,
                        history,
                    )
                )
            decisions = policy.act(turns)
            results = batch.step({slot: d.action for slot, d in zip(live, decisions)})
            for slot, turn, decision in zip(live, turns, decisions):
                result = results[slot]
                records[slot_spec[slot]].turns.append(
                    TurnRecord(
                        observation=turn.observation,
                        action=decision.action,
                        response=decision.response,
                        thought=decision.thought,
                        admissible=bool(result.info.get("admissible", False)),
                        malformed=decision.malformed,
                        reward=result.reward,
                        status=decision.status,
                        finish=decision.finish,
                        tokens=decision.tokens,
                    )
                )
                if result.done:
                    finish(slot, result)
                else:
                    last[slot] = result
    return records  # type: ignore[return-value]  # every spec was played
