"""eval_ngram.py: pack/unpack a parameter-golf artifact and score it.

Sections: shards and byte accounting, artifact packing, sliding-window evaluation,
score-first n-gram mixture, command line.
"""

# ---------------------------------------------------------------- shards and byte accounting

# ---------------------------------------------------------------- artifact packing

# ---------------------------------------------------------------- sliding-window evaluation

# ---------------------------------------------------------------- n-gram mixture (score-first)

# ---------------------------------------------------------------- command line
