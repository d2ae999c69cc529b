"""Preference export (issue 23): our validator, and the files through TRL and datasets."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

from personarl.errors import ConfigError, DataError
from rewards.dpo import FORMATS, check_records, preference_records, read_jsonl, write_jsonl

GOOD = {"prompt": "Help?", "chosen": "Here is what to do.", "rejected": "Kind regards."}
CONV = preference_records(["Help?"], ["Here is what to do."], ["Kind regards."],
                          "dpo_conversational")[0]


@pytest.mark.parametrize("records, message", [
    ([GOOD, CONV], r"record 1 is dpo_conversational but the file is dpo: one format per "
                   r"file \(mixed formats\)"),
    ([{**GOOD, "chosen": "  "}], r"record 0: chosen must be non-empty text"),
    ([{**GOOD, "rejected": GOOD["chosen"]}], r"record 0: chosen == rejected"),
    ([{**GOOD, "score": 1}], r"record 0 is in no known format"),
    ([{**CONV, "prompt": [{"role": "assistant", "content": "x"}]}],
     r"prompt must end with a user message"),
    ([{**CONV, "chosen": [{"role": "bot", "content": "x"}]}], r"has role 'bot'; valid"),
    ([{"messages": [{"role": "user", "content": "hi"}]}],
     r"messages must end with a assistant message"),
    ([], r"no records to export"),
    (GOOD, r"records must be a list of records; got dict"),
    ([{**GOOD, "chosen": "\ud800"}], r"record 0: chosen is not valid Unicode"),
    ([{**GOOD, "rejected": GOOD["chosen"] + " "}], r"record 0: chosen == rejected"),
    ([{"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                    {"role": "assistant", "content": "c"}]}], r"two user messages in a row"),
    ([{**CONV, "prompt": [{"role": "assistant", "content": "x"},
                          {"role": "user", "content": "y"}]}],
     r"prompt must start with a system or user message"),
])
def test_validator_refuses_by_name(records, message):
    with pytest.raises(DataError, match=message):
        check_records(records)


def test_written_files_are_whole_and_checked(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [GOOD, GOOD], "dpo")
    assert read_jsonl(path) == [GOOD, GOOD]
    with pytest.raises(DataError, match="chosen == rejected"):
        write_jsonl(path, [GOOD, {**GOOD, "rejected": GOOD["chosen"]}], "dpo")
    assert read_jsonl(path) == [GOOD, GOOD]             # the old file is untouched
    with pytest.raises(ConfigError, match=r"format='orpo'; valid: dpo"):
        check_records([GOOD], "orpo")
    with pytest.raises(DataError, match="no such directory"):
        write_jsonl(tmp_path / "missing" / "p.jsonl", [GOOD], "dpo")
    (tmp_path / "latin.jsonl").write_bytes('{"prompt": "caf\xe9"}'.encode("latin-1"))
    with pytest.raises(DataError, match="is not a UTF-8 JSON Lines file"):
        read_jsonl(tmp_path / "latin.jsonl")


def _exported(tmp_path):
    from envs.turns import turn_contexts
    from experiments.preferences import export_pairs
    from rewards.preferences import Annotators

    ctx = turn_contexts("personarl/PersonalityAdaptation-v0", 400, 0,
                        env_kwargs={"action_mode": "continuous"})
    pool = Annotators.from_traits(np.full((3, 10), 0.5))
    pairs = ctx.compare(pool, np.random.default_rng(0))
    pairs.chosen[3], pairs.rejected[3] = 0.5, 0.52      # two styles, one text
    return pairs, export_pairs(pairs, list(FORMATS), tmp_path)


def test_export_rows_are_the_pairs_rendered(tmp_path):
    from envs.adaptation_core import OBS_COLUMNS
    from rewards.replies import assistant_reply

    pairs, manifest = _exported(tmp_path)
    rows = {f: read_jsonl(tmp_path / name) for f, name in manifest["files"].items()}
    assert 3 not in manifest["pair_of_row"]
    assert 1 <= manifest["same_text_dropped"] < 0.1 * len(pairs)
    assert manifest["rows"] == len(pairs) - manifest["same_text_dropped"]
    assert all(check_records(r) == f for f, r in rows.items())
    i = manifest["pair_of_row"][7]
    topic = pairs.context[i, OBS_COLUMNS["topic"]].argmax()
    assert rows["dpo"][7]["chosen"] == assistant_reply(pairs.chosen[i], int(topic))
    assert rows["dpo"][7]["rejected"] == assistant_reply(pairs.rejected[i], int(topic))
    assert rows["chat"][7]["messages"][-1]["content"] == rows["dpo"][7]["chosen"]
    assert rows["dpo_conversational"][7]["prompt"][-1]["content"] == rows["dpo"][7]["prompt"]


@pytest.mark.slow
def test_files_load_in_datasets_and_train_two_dpo_steps(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pytest.importorskip("trl", reason="the rlhf extra (make test installs it)")
    import datasets
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    from trl import DPOConfig, DPOTrainer
    from trl.data_utils import maybe_apply_chat_template, maybe_extract_prompt

    from rewards.replies import vocabulary

    _, manifest = _exported(tmp_path)
    specials = ["[PAD]", "[UNK]", "<bos>", "<eos>", "<|system|>", "<|user|>", "<|assistant|>"]
    vocab = {w: i for i, w in enumerate(specials + vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", bos_token="<bos>",
        eos_token="<eos>", additional_special_tokens=specials[4:])
    tokenizer.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <eos> {% endfor %}"
        "{% if add_generation_prompt %}<|assistant|> {% endif %}")
    sets = {f: datasets.load_dataset("json", data_files=str(tmp_path / name), split="train")
            for f, name in manifest["files"].items()}
    assert {len(s) for s in sets.values()} == {manifest["rows"]}
    for fmt in ("dpo", "dpo_conversational"):
        example = maybe_apply_chat_template(maybe_extract_prompt(sets[fmt][0]), tokenizer)
        assert set(example) == {"prompt", "chosen", "rejected"}
        for text in example.values():
            ids = tokenizer(text)["input_ids"]
            assert ids and tokenizer.unk_token_id not in ids     # the vocabulary is whole
    chat = maybe_apply_chat_template(sets["chat"][0], tokenizer)
    assert tokenizer.unk_token_id not in tokenizer(chat["text"])["input_ids"]

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
        pad_token_id=0, bos_token_id=2, eos_token_id=3))
    args = DPOConfig(output_dir=str(tmp_path / "dpo"), max_steps=2,
                     per_device_train_batch_size=2, learning_rate=1e-6, logging_steps=1,
                     report_to="none", save_strategy="no", use_cpu=True,
                     dataloader_num_workers=0)
    trainer = DPOTrainer(model=model, ref_model=copy.deepcopy(model), args=args,
                         train_dataset=sets["dpo_conversational"].select(range(8)),
                         processing_class=tokenizer)
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 2
    assert all(abs(loss - math.log(2)) <= 0.01 for loss in losses), losses
