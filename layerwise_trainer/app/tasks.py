"""The heads `layerwise-trainer plan --task` builds a model with: task -> the transformers Auto class.

Kept apart from `plan_command` (which imports torch) so that building the command line's parser, and so
`layerwise-trainer --help`, imports nothing heavy.
"""

from __future__ import annotations

TASKS = {
    "sequence-classification": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
    "causal-lm": "AutoModelForCausalLM",
    "seq2seq-lm": "AutoModelForSeq2SeqLM",
    "masked-lm": "AutoModelForMaskedLM",
    "image-classification": "AutoModelForImageClassification",
    "base": "AutoModel",
}
