"""The MeCab + WordPiece Japanese tokenizer built from a corpus."""

from __future__ import annotations

from transformers import AutoTokenizer, BertJapaneseTokenizer

from layerwise_trainer.app.ja.sentiment_data import generate_reviews
from layerwise_trainer.app.ja.tokenizer import SPECIAL_TOKENS, build_japanese_tokenizer, train_wordpiece_vocab

TEXTS = [row["text"] for row in generate_reviews(300)]


def test_vocabulary_starts_with_the_special_tokens_and_holds_mecab_words():
    vocab = train_wordpiece_vocab(TEXTS, vocab_size=2000)
    assert tuple(vocab[: len(SPECIAL_TOKENS)]) == SPECIAL_TOKENS
    assert {"映画", "最高", "でし", "た"} <= set(vocab)
    assert len(vocab) == len(set(vocab))


def test_the_vocabulary_is_the_same_at_every_build():
    # The trainer alone numbers `##` pieces in a HashMap's order, seeded afresh for every map, and breaks
    # ties between equally frequent pairs by those numbers: three builds gave three vocabularies.
    vocabs = {tuple(train_wordpiece_vocab(TEXTS, vocab_size=2000)) for _ in range(3)}
    assert len(vocabs) == 1


def test_the_vocabulary_lists_continuations_then_characters_in_code_point_order():
    vocab = train_wordpiece_vocab(TEXTS, vocab_size=2000)
    characters = sorted(set("".join(piece for piece in vocab if len(piece) == 1)))
    start = len(SPECIAL_TOKENS)
    assert vocab[start : start + len(characters)] == [f"##{character}" for character in characters]
    assert vocab[start + len(characters) : start + 2 * len(characters)] == characters


def test_tokenizer_splits_into_mecab_words_and_round_trips(tmp_path):
    tokenizer = build_japanese_tokenizer(TEXTS, tmp_path / "tok", vocab_size=2000)
    assert isinstance(tokenizer, BertJapaneseTokenizer)
    assert tokenizer.word_tokenizer_type == "mecab"
    assert tokenizer.tokenize("映画は最高でした。") == ["映画", "は", "最高", "でし", "た", "。"]
    encoded = tokenizer("映画は最高でした。")["input_ids"]
    assert encoded[0] == tokenizer.cls_token_id and encoded[-1] == tokenizer.sep_token_id
    assert tokenizer.unk_token_id not in encoded

    reloaded = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert type(reloaded) is BertJapaneseTokenizer
    assert reloaded("映画は最高でした。")["input_ids"] == encoded
    assert len(reloaded) == len(tokenizer)


def test_unseen_words_of_seen_characters_fall_back_to_word_pieces(tmp_path):
    tokenizer = build_japanese_tokenizer(TEXTS, tmp_path / "tok", vocab_size=2000)
    word = "リュックサック"  # one MeCab word, absent from the corpus; its characters are all there
    assert word not in " ".join(TEXTS)
    assert tokenizer.word_tokenizer.tokenize(word) == [word]
    pieces = tokenizer.tokenize(word)
    assert pieces[0] == "リュック" and len(pieces) > 1 and all(piece.startswith("##") for piece in pieces[1:])
    assert "".join(piece.removeprefix("##") for piece in pieces) == word
