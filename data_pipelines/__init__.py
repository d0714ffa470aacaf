"""Datasets (one tfds builder package each) and the grain input pipeline.

Builders are TensorFlow-free: `python -m data_pipelines.build --dataset=NAME --data_dir=DIR`
writes ArrayRecord shards that `tfds.data_source` reads back as numpy.
"""
