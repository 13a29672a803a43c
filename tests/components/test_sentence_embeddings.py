"""The numpy all-MiniLM-L6-v2 encoder and the featurizer that gives its embedding to
the intent classifier."""
from __future__ import annotations

import numpy as np
from rasa.shared.nlu.training_data.message import Message

from components.minilm import basic_tokens, load_minilm
from components.sentence_embeddings import SentenceEmbeddingFeaturizer


def test_basic_tokens_lower_case_strip_accents_and_split_punctuation() -> None:
    assert basic_tokens("Where's my CAFÉ order #12345?") == [
        "where", "'", "s", "my", "cafe", "order", "#", "12345", "?"]


def test_word_pieces_are_bert_vocabulary_ids() -> None:
    # [CLS] where is my order [SEP], the ids of bert-base-uncased's vocabulary
    assert load_minilm().tokenizer.encode("Where is my order") == [101, 2073, 2003, 2026, 2344, 102]


def test_embeddings_are_unit_vectors_and_put_paraphrases_close() -> None:
    refund, money_back, weather = load_minilm().embed(
        ["can I get a refund", "I want my money back", "what is the weather today"])
    assert np.isclose(np.linalg.norm(refund), 1.0, atol=1e-5)
    assert refund @ money_back > 0.5 > 0.2 > refund @ weather


def test_a_text_embeds_the_same_alone_and_in_a_padded_batch() -> None:
    texts = ["hi", "my parcel arrived damaged and the box was open"]
    alone = load_minilm().embed(texts[:1])
    assert np.allclose(load_minilm().embed(texts)[0], alone[0], atol=1e-5)


def test_featurizer_adds_one_scaled_sentence_feature() -> None:
    featurizer = SentenceEmbeddingFeaturizer(
        {**SentenceEmbeddingFeaturizer.get_default_config(), "scale": 3.0}, "embeddings")
    message = Message(data={"text": "where is my order"})
    featurizer.process([message])
    sequence, sentence = message.get_dense_features("text")
    assert sequence is None and sentence is not None
    assert sentence.features.shape == (1, 384)
    assert np.isclose(np.linalg.norm(sentence.features), 3.0, atol=1e-4)
