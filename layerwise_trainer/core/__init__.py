"""The grouping core: a spec becomes a `GroupPlan` for a model. Imports torch, never transformers."""
