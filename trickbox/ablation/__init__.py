"""Which tricks help on your data: the decision rule of an ablation (:mod:`.rule`)."""
