"""Writer-identification models: builders (`zoo`), losses, training, evaluation, export,
and the TF-free edge runtime (`models.runtime`, which imports no TensorFlow).

Public surface: `models.config.TrainConfig`, `models.train.train`,
`models.evaluate.evaluate`, `models.export.export`, `models.zoo`, `models.losses`,
`models.runtime`.
"""
