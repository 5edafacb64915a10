"""Training: the stages of a run and what runs them, in layers; a module imports only from layers below it.

1. :mod:`cpsl_tf.run_layout` (outside this package): every path and file name of a run folder.
2. :mod:`~cpsl_tf.training.stage`: what a stage is (:class:`~cpsl_tf.training.stage.Stage`: name, the stages
   it needs, the config it reads, its run function), what it is given (``RunContext``), its fingerprint.
3. The machinery: ``optim``, ``schedule``, ``strategy`` (optimisers, device strategies), ``callbacks``,
   ``summaries`` and ``loop`` (the resumable ``model.fit``), ``inputs`` (a stage's samples), ``runlock``,
   ``leftovers``, ``run_log``, ``header``.
4. ``builders`` (segmenters, grouped SGD, networks of earlier stages, sidecars, target-val evaluation) and
   ``trainer``: the one skeleton of the training stages.
5. The stages, each declared in its module: ``warmup.WARMUP``, ``pseudo.PSEUDO``, ``adapt.CPSL``,
   ``distill.DISTILL_ROUNDS``; a stage module imports the declarations of the stages it needs.
6. ``stages``: the registry of the stages and the runner (skip, resume, set aside); ``cli``: ``train.py``.
"""
