"""Writer-identification models: builders (`zoo`), losses, training and evaluation.

Public surface: `models.config.TrainConfig`, `models.train.train`,
`models.evaluate.evaluate`, `models.zoo`, `models.losses`.
"""
