"""Training: batch augmentation (SBTT, coordinated dropout, sample validation), the LFADS objective,
Adam for a population, shards of batched workers, and the single-model training loop."""
