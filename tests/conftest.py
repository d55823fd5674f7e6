"""Shared fixtures: tiny random models of every family and a word-level tokenizer.

Nothing here downloads anything: models are built from config objects, the tokenizer
from a fixed word list, and the data are small synthetic files.
"""

from __future__ import annotations

import os
import random

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

POS = ["good", "great", "fine", "lovely", "superb", "happy", "nice", "best"]
NEG = ["bad", "awful", "poor", "terrible", "sad", "worst", "ugly", "dull"]
FILLER = ["the", "movie", "film", "was", "a", "plot", "acting", "very", "quite", "and", "it", "story",
          "music", "really", "so", "this", "one", "of", "year", "ending"]
LABEL_WORDS = ["negative", "positive", "entailment", "not", "neutral", "sports", "world", "business"]
WORDS = POS + NEG + FILLER + LABEL_WORDS


def make_tokenizer(pair_template: bool = True):
    """A word-level fast tokenizer; with [CLS]/[SEP] templates (encoder) or plain (decoder)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    vocab = {w: i for i, w in enumerate(specials + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    kw = dict(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]")
    if pair_template:
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
        kw.update(cls_token="[CLS]", sep_token="[SEP]")
    return PreTrainedTokenizerFast(**kw)


V = 64  # vocab size of the tiny models (the tokenizer uses ids < 4 + len(WORDS))
# Weights drawn at std 0.25, not transformers' 0.02: at 0.02 attention barely moves the
# outputs (an error of 0.14 in a pair logit at 0.25 is 1.4e-5 at 0.02, under a 1e-4
# tolerance), so exactness tests could not fail. Tests that compare two computations state
# their tolerance from the fp32 noise floor measured on these models.
INIT = 0.25


def tiny_config(family: str):
    import transformers as tf

    common = dict(vocab_size=V, initializer_range=INIT)
    return {
        "bert": lambda: tf.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                      intermediate_size=64, max_position_embeddings=128, **common),
        "roberta": lambda: tf.RobertaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                            intermediate_size=64, max_position_embeddings=130, pad_token_id=0,
                                            **common),
        "deberta-v2": lambda: tf.DebertaV2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                 intermediate_size=64, max_position_embeddings=128, **common),
        "gpt2": lambda: tf.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=128, bos_token_id=0,
                                      eos_token_id=0, **common),
        "llama": lambda: tf.LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                        num_key_value_heads=2, intermediate_size=64, pad_token_id=0,
                                        bos_token_id=0, eos_token_id=0, **common),
        "bloom": lambda: tf.BloomConfig(hidden_size=32, n_layer=2, n_head=4, pad_token_id=0, bos_token_id=0,
                                        eos_token_id=0, **common),
        "falcon": lambda: tf.FalconConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                          multi_query=True, new_decoder_architecture=False, pad_token_id=0,
                                          bos_token_id=0, eos_token_id=0, **common),
        "falcon-new": lambda: tf.FalconConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                              num_kv_heads=2, new_decoder_architecture=True, pad_token_id=0,
                                              bos_token_id=0, eos_token_id=0, **common),
        # Llama-like decoders users bring (grouped-query attention, rotary positions) and XLM-R.
        "qwen2": lambda: tf.Qwen2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                        num_key_value_heads=2, intermediate_size=64, pad_token_id=0,
                                        bos_token_id=0, eos_token_id=0, **common),
        "mistral": lambda: tf.MistralConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                            num_key_value_heads=2, intermediate_size=64, pad_token_id=0,
                                            bos_token_id=0, eos_token_id=0, **common),
        "gemma": lambda: tf.GemmaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                        num_key_value_heads=1, head_dim=8, intermediate_size=64, pad_token_id=0,
                                        bos_token_id=0, eos_token_id=0, **common),
        "gemma2": lambda: tf.Gemma2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                          num_key_value_heads=2, head_dim=8, intermediate_size=64,
                                          pad_token_id=0, bos_token_id=0, eos_token_id=0, **common),
        "xlm-roberta": lambda: tf.XLMRobertaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                   intermediate_size=64, max_position_embeddings=130,
                                                   pad_token_id=1, **common),
    }[family]()


FAMILIES = ["bert", "roberta", "deberta-v2", "gpt2", "llama", "bloom", "falcon", "falcon-new",
            "qwen2", "mistral", "gemma", "gemma2", "xlm-roberta"]
DECODERS = {"gpt2", "llama", "bloom", "falcon", "falcon-new", "qwen2", "mistral", "gemma", "gemma2"}


def tiny_backbone(family: str, seed: int = 0, **model_kw):
    """A frozen Backbone around a tiny random model of `family`."""
    from transformers import AutoModel

    from ltune_cli.config import ModelConfig
    from ltune_cli.models.backbone import load_backbone

    torch.manual_seed(seed)
    model = AutoModel.from_config(tiny_config(family)).eval()
    tok = make_tokenizer(pair_template=family not in DECODERS)
    mc = ModelConfig(name=f"tiny-{family}", path=f"tiny:{family}", **model_kw)
    return load_backbone(mc, None, model=model, tokenizer=tok)


def write_sentiment_csv(path, n: int, seed: int = 0, pair: bool = False):
    """A learnable synthetic sentiment task: label = whether the text has a positive word."""
    rng = random.Random(seed)
    lines = ["text,text_pair,label" if pair else "text,label"]
    for _ in range(n):
        y = rng.randint(0, 1)
        words = rng.choices(FILLER, k=rng.randint(3, 12)) + [rng.choice(POS if y else NEG)]
        rng.shuffle(words)
        text = " ".join(words)
        lines.append(f"{text},{' '.join(rng.choices(FILLER, k=3))},{y}" if pair else f"{text},{y}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def sentiment_files(tmp_path):
    train = write_sentiment_csv(tmp_path / "train.csv", 96, seed=1)
    dev = write_sentiment_csv(tmp_path / "dev.csv", 32, seed=2)
    return train, dev


def tiny_overrides(train, dev, out_dir, method="lt_prefix", steps=4, **extra):
    ov = [f"method={method}", "dataset=files", f"dataset.train_path={train}", f"dataset.eval_path={dev}",
          "dataset.text_column=text", "dataset.label_column=label", "dataset.label_texts=[negative,positive]",
          "hardware=cpu", "hardware.batch_size=8", "hardware.eval_batch_size=16",
          f"train.max_steps={steps}", "train.eval_every=2", "train.log_every=1", "train.progress=false",
          f"out_dir={out_dir}", "model.max_length=32"]
    ov += [f"{k}={v}" for k, v in extra.items()]
    return ov


def save_tiny_model(folder, family: str = "bert", seed: int = 0):
    """A tiny random model + tokenizer saved as an HF folder: the real `model.path` loading path."""
    from transformers import AutoModel

    torch.manual_seed(seed)
    AutoModel.from_config(tiny_config(family)).save_pretrained(folder)
    make_tokenizer(pair_template=family not in DECODERS).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny-bert"), "bert")


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny-llama"), "llama")


def train_killed(cfg, at_call: int, monkeypatch) -> None:
    """engine.train(cfg), killed as it calls its training step for the `at_call`-th time (SystemExit,
    like a kill: nothing after the last checkpoint is saved); the real step is put back after."""
    from ltune_cli import engine

    real_step, calls = engine._step, {"n": 0}

    def dying_step(*a, **k):
        calls["n"] += 1
        if calls["n"] == at_call:
            raise SystemExit("killed")
        return real_step(*a, **k)

    monkeypatch.setattr(engine, "_step", dying_step)
    with pytest.raises(SystemExit):
        engine.train(cfg)
    monkeypatch.setattr(engine, "_step", real_step)
