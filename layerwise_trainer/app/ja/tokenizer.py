"""A Japanese BERT tokenizer built from a corpus: MeCab (fugashi + ipadic) words, WordPiece vocabulary.

This is the tokenizer family of ``cl-tohoku/bert-base-japanese-whole-word-masking``:
``BertJapaneseTokenizer`` with ``word_tokenizer_type="mecab"`` and ipadic. Its WordPiece vocabulary is
learnt from the given texts with the ``tokenizers`` library's trainer, over the same MeCab words the
tokenizer produces, so every training word is covered.

The vocabulary is the same in every process. Left to itself, the trainer numbers the continuation
pieces (`##x`) in the iteration order of a Rust `HashMap`, which is seeded afresh in each process, and
breaks ties between equally frequent pairs by those numbers: three runs on the built-in data gave three
different vocabularies (different pieces, not only a different order). Every continuation piece is
therefore handed to the trainer up front, in code-point order, so that every id, and with them every
tie, is fixed before training.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
MECAB_KWARGS = {"mecab_dic": "ipadic"}


def _mecab_word_tokenizer():
    from transformers.models.bert_japanese.tokenization_bert_japanese import MecabTokenizer

    return MecabTokenizer(do_lower_case=False, normalize_text=True, **MECAB_KWARGS)


def train_wordpiece_vocab(texts: Iterable[str], vocab_size: int = 8000, min_frequency: int = 1) -> list[str]:
    """Learn a WordPiece vocabulary over the MeCab words of ``texts``.

    Args:
        texts: The corpus (the training split).
        vocab_size: The largest vocabulary to learn; a small corpus gives fewer entries.
        min_frequency: How often a merge must occur to be learnt.

    Returns:
        The vocabulary in id order: the special tokens, every character of the corpus as a continuation
        (`##x`) and alone, both in code-point order, then the learnt pieces. The same texts give the same
        list in every process.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    mecab = _mecab_word_tokenizer()
    lines = [" ".join(mecab.tokenize(text)) for text in texts]
    characters = sorted(set("".join(lines)) - {" "})
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        # Every character as a continuation, numbered in a fixed order (see the module docstring). With
        # the alphabet, which the trainer always keeps whole, an unseen word made of seen characters
        # becomes pieces rather than one [UNK].
        special_tokens=[*SPECIAL_TOKENS, *(f"##{character}" for character in characters)],
        continuing_subword_prefix="##",
        show_progress=False,
    )
    tokenizer.train_from_iterator(lines, trainer)
    vocab = tokenizer.get_vocab()
    return sorted(vocab, key=vocab.__getitem__)


def build_japanese_tokenizer(
    texts: Iterable[str],
    directory: str | os.PathLike[str],
    vocab_size: int = 8000,
    min_frequency: int = 1,
    model_max_length: int = 512,
):  # -> BertJapaneseTokenizer
    """Build a ``BertJapaneseTokenizer`` (MeCab + ipadic words, WordPiece sub-words) for ``texts``.

    Args:
        texts: The corpus to learn the vocabulary from.
        directory: Where to write ``vocab.txt`` and save the tokenizer (reloadable with
            ``AutoTokenizer.from_pretrained(directory)``).
        vocab_size: The largest vocabulary to learn.
        min_frequency: How often a merge must occur to be learnt.
        model_max_length: The longest input the model takes.

    Returns:
        The tokenizer, already saved to ``directory``.

    Example:
        ```python
        tokenizer = build_japanese_tokenizer(train["text"], "out/tokenizer")
        tokenizer.tokenize("この映画は本当に素晴らしかった")
        ```
    """
    from transformers import BertJapaneseTokenizer

    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    vocab_file = target / "vocab.txt"
    vocab_file.write_text("\n".join(train_wordpiece_vocab(texts, vocab_size, min_frequency)) + "\n", encoding="utf-8")
    tokenizer = BertJapaneseTokenizer(
        vocab_file=str(vocab_file),
        do_lower_case=False,
        word_tokenizer_type="mecab",
        subword_tokenizer_type="wordpiece",
        mecab_kwargs=dict(MECAB_KWARGS),
        model_max_length=model_max_length,
    )
    tokenizer.save_pretrained(str(target))
    return tokenizer
