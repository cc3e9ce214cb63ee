"""AutoLFADS: population-based training of LFADS workers (Jaderberg et al. 2017; Keshtkaran et al. 2022).

`hps` and `policy` are pure (scores and hyperparameter tables in, decisions out); `runner` holds one
shard of batched workers; `backends` runs shards; `population` is the generation loop.
"""
