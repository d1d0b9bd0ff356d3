"""Where each stage type lives: stage name -> `module:Class`.

A stage module is imported only when a recipe uses that stage, so `distillery status` or `plan` on an ingest
recipe does not pay for importing torch, vLLM or Megatron. Add a new stage here (one line); a recipe plugin
registers its own with `distillery.core.stage.register`.
"""

STAGE_CLASSES: dict[str, str] = {
    "ingest": "distillery.ingest.stage:Ingest",
    "clean": "distillery.prepare.clean:CleanStage",
    "dedup": "distillery.prepare.dedup:ExactDedupStage",
    "near_dedup": "distillery.prepare.dedup:NearDedupStage",
    "decontaminate": "distillery.prepare.decontaminate:DecontaminateStage",
    "generate": "distillery.generate.stage:GenerateStage",
    "normalise": "distillery.generate.normalise:NormaliseStage",
    "perplexity": "distillery.filters.perplexity:PerplexityStage",
    "ngram": "distillery.filters.ngram:NgramStage",
    "structure": "distillery.filters.structure:StructureStage",
    "variants": "distillery.variants.stage:VariantsStage",
    "pack": "distillery.train.pack_stage:PackStage",
    "sft": "distillery.train.sft_stage:SFTStage",
    "eval": "distillery.evaluate.stage:EvalStage",
}
