"""Data: the readers of images and labels, and the views the model is trained and evaluated on.

``datasets`` reads the official on-disk layouts (GTA5, SYNTHIA, Cityscapes, a plain folder) and ``verify``
checks them; ``views`` (weak), ``strong``, ``replay`` and ``cutmix`` make the training views; ``pipeline``
streams them with ``tf.data``, for training and for evaluation (the one stream of evaluation images of
``cpsl_tf.evaluation.evaluate``); ``pseudo_store`` holds the soft pseudo labels. The generated benchmark
is a package of its own, ``cpsl_tf.benchmark``.
"""
