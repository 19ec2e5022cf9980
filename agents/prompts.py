"""Chat prompts for ALFWorld turns, kept short because the default model is small.

Two context modes:
- step-wise (`step`): each turn is its own prompt: the task, the room, the last k
  (observation, action) pairs, the current observation and, unless decoding is constrained,
  the admissible commands. One training sample per turn.
- full (`full`): the whole episode is one growing conversation (user = observation,
  assistant = the model's reply). One training sample per episode.
"""

from __future__ import annotations

from dataclasses import dataclass

from agents.parsing import OUTPUT_FORMATS, REACT

CONTEXT_MODES = ("step", "full")
SYSTEM_PROMPT = "You are a household robot. You act in a text game by writing one command per turn."
FORMAT_HINTS = {
    "action": "Reply with the command only.",
    REACT: "Think briefly in <think>...</think>, then give the command in <action>...</action>.",
}


@dataclass(frozen=True)
class PromptConfig:
    context: str = "step"  # step or full
    history: int = 2  # step mode: how many earlier (observation, action) pairs to show
    output_format: str = "action"  # action or react
    show_admissible: bool = True  # list the admissible commands (not needed when constrained)

    def __post_init__(self):
        if self.context not in CONTEXT_MODES:
            raise ValueError(f"expected context in {list(CONTEXT_MODES)}, got {self.context!r}")
        if self.output_format not in OUTPUT_FORMATS:
            raise ValueError(f"expected output_format in {list(OUTPUT_FORMATS)}, got {self.output_format!r}")
        if self.history < 0:
            raise ValueError(f"expected history >= 0, got {self.history}")


def room_description(intro: str) -> str:
    """The room line of an episode's intro ("You are in the middle of a room. ... you see ...")."""
    for line in intro.splitlines():
        if line.startswith("You are in the middle of a room"):
            return line
    return ""


def step_messages(
    config: PromptConfig,
    task: str,
    intro: str,
    history: tuple[tuple[str, str], ...],
    observation: str,
    admissible: list[str],
) -> list[dict[str, str]]:
    """The messages of one step-wise turn.

    `history` holds the earlier turns as (observation shown, action taken); the intro is the
    first observation. The prompt shows the task, the room, then the last `config.history`
    actions each followed by what the game answered, the last answer being `observation`.
    """
    lines = [f"Your task is to: {task}.", room_description(intro)]
    actions = [action for _, action in history]
    answers = [seen for seen, _ in history[1:]] + [observation]
    for action, answer in list(zip(actions, answers))[-config.history :] if config.history else []:
        lines += [f"> {action}", answer]
    if config.show_admissible:
        lines.append("Commands you can use now: " + ", ".join(admissible) + ".")
    lines.append(FORMAT_HINTS[config.output_format])
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": "\n".join(line for line in lines if line)},
    ]


def full_messages(
    config: PromptConfig,
    intro: str,
    history: tuple[tuple[str, str], ...],
    responses: list[str],
    observation: str,
    admissible: list[str],
) -> list[dict[str, str]]:
    """The whole conversation up to this turn (full context mode)."""
    hint = FORMAT_HINTS[config.output_format]
    messages = [{"role": "system", "content": f"{SYSTEM_PROMPT} {hint}"}]
    observations = [seen for seen, _ in history] + [observation]
    for index, seen in enumerate(observations):
        content = seen
        if index == len(observations) - 1 and config.show_admissible:
            content += "\nCommands you can use now: " + ", ".join(admissible) + "."
        messages.append({"role": "user", "content": content})
        if index < len(responses):
            messages.append({"role": "assistant", "content": responses[index]})
    return messages
