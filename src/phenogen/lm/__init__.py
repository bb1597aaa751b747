"""phenogen.lm — the GPT-2 DNA language model: train, sample, encode, evaluate.

Modules (imported on demand; importing this package does not load torch):

    config.py       [lm], [sample], [dna_eval] configuration sections
    model.py        presets tiny/small, init from a local GPT-2, save_lm / load_lm
    data.py         train/held-out sequences from a dataset dir or FASTA, tokenize, collate
    train.py        the accelerate training loop with exact resume (train_lm)
    likelihood.py   held-out nats/token and bits/base
    sample.py       batched KV-cached sampler, top-p/top-k, temperature schedule
    encode.py       hidden states (B, L, H) + mask for the image model, cached
    select.py       automatic checkpoint selection by nearest identity
    evaluate.py     evaluate_lm: bits/base vs Markov chains, sample statistics, plots
    plots.py        loss curves and sample figures
    command_*.py    the train-lm, sample-dna and evaluate-dna commands
"""
