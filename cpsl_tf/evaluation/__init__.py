"""Evaluation: the one evaluation loop and its confusion matrix, score tables, plots and the run report.

``evaluate.evaluate(predict, dataset)`` scores any predictor (a Keras model's compiled forward pass, or an
ONNX Runtime / TensorRT runner of ``cpsl_tf.export.runners``) on the batches of
``cpsl_tf.data.pipeline.make_eval_dataset``, accumulating ``confusion.ConfusionMatrixMetric``;
``table`` turns a confusion matrix into the reported figures; ``cli`` is ``scripts/evaluate.py``.
"""
