"""Demo stages: the event core alone (`events.py`, stage `events_demo`) and the input pipeline
alone (`pipeline.py`, stage `pipeline_demo`), each a look at one layer before any model."""
