"""Built-in Japanese data and the MeCab + WordPiece tokenizer builder of the default run."""
