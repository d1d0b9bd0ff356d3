"""Query preparation: cleaning, exact and near deduplication, decontamination against evaluation benchmarks."""
