"""KerasTuner hypermodels and search jobs."""
