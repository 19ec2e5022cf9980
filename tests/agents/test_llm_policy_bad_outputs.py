"""Garbage from the model never stops an episode: it becomes an inadmissible step, on record.

Each case uses a real (tiny, scripted) transformers model that emits exactly one kind of bad
output, plays real games through the batched envs, and checks the episode and its transcript.
"""

import pytest

from agents.llm_policy import DecodingConfig, LLMPolicy
from agents.prompts import PromptConfig
from eval.evaluate import evaluate
from rollouts.transcripts import TranscriptWriter, read_transcript
from tests.conftest import scripted_model


def _bad_model(tokenizer, kind: str):
    def encode(text):
        return tokenizer.encode(text, add_special_tokens=False)

    eos = tokenizer.eos_token_id
    newline = encode("\n")[0]  # the chat template's generation prompt ends with a newline
    if kind == "only-eos":
        return scripted_model(tokenizer, {newline: eos}, default=eos)
    if kind == "nothing":  # a lone space, then end of sequence
        return scripted_model(tokenizer, {newline: encode(" ")[0]}, default=eos)
    if kind == "endless":
        word = encode(" apple")[0]
        return scripted_model(tokenizer, {newline: word, word: word}, default=word)
    if kind == "broken-utf8":
        # byte-level tokens of the first byte of a 3-byte character: decodes to U+FFFD
        partial = encode("\u6f22")[0]
        return scripted_model(tokenizer, {newline: partial, partial: partial}, default=eos)
    if kind == "prompt-again":
        chain = encode("Your task is to: put some apple on fridge.")
        transitions = {newline: chain[0], **{a: b for a, b in zip(chain, chain[1:])}, chain[-1]: eos}
        return scripted_model(tokenizer, transitions, default=eos)
    raise ValueError(kind)


@pytest.mark.parametrize(
    "kind, status",
    [
        ("only-eos", "malformed"),
        ("nothing", "malformed"),
        ("endless", "inadmissible"),
        ("broken-utf8", "inadmissible"),
        ("prompt-again", "inadmissible"),
    ],
)
def test_bad_output_is_a_step_and_the_transcript_says_so(tokenizer, fixture_game_files, tmp_path, kind, status):
    model = _bad_model(tokenizer, kind)
    policy = LLMPolicy(model, tokenizer, PromptConfig(), DecodingConfig(decoding="free", max_new_tokens=24))
    path = tmp_path / "transcripts.jsonl"
    with TranscriptWriter(path, policy="scripted") as writer:
        records = evaluate(
            policy, fixture_game_files[:2], seed=0, max_steps=3, num_envs=2, num_workers=1, on_episode_end=writer.write
        )
    assert [r.outcome for r in records] == ["step-limit", "step-limit"]
    for record in records:
        assert record.steps == 3 and record.admissible_actions == 0
        assert {turn.status for turn in record.turns} == {status}
    episodes = read_transcript(path).episodes
    assert len(episodes) == 2
    turn = episodes[0].turns[0]
    assert turn.status == status and turn.admissible is False
    if kind == "endless":
        assert turn.finish == "length" and turn.response.count("apple") == 24
    if kind == "broken-utf8":
        assert "\ufffd" in turn.response
    if kind == "prompt-again":
        assert turn.response.startswith("Your task is to: put some apple on fridge.")


def test_constrained_decoding_rescues_a_model_that_only_ends(tokenizer, fixture_game_files):
    policy = LLMPolicy(_bad_model(tokenizer, "only-eos"), tokenizer, decoding=DecodingConfig())
    records = evaluate(policy, fixture_game_files[:2], seed=0, max_steps=3, num_envs=2, num_workers=1)
    assert all(turn.admissible for record in records for turn in record.turns)
