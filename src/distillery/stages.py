"""Where each stage type lives: stage name -> module that registers it.

A stage module is imported only when a recipe uses that stage, so `distillery status` or `plan` on an ingest
recipe does not pay for importing torch, vLLM or Megatron. Add a new stage here (one line).
"""

STAGE_MODULES: dict[str, str] = {
    "ingest": "distillery.ingest.stage",
    "clean": "distillery.prepare.clean",
    "dedup": "distillery.prepare.dedup",
    "near_dedup": "distillery.prepare.dedup",
    "decontaminate": "distillery.prepare.decontaminate",
    "generate": "distillery.generate.stage",
    "perplexity": "distillery.filters.perplexity",
    "ngram": "distillery.filters.ngram",
    "structure": "distillery.filters.structure",
    "pack": "distillery.train.pack_stage",
    "sft": "distillery.train.sft_stage",
    "eval": "distillery.evaluate.stage",
}
