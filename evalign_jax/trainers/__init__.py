"""Training: the one loop and update step (`loop.py`) and the stages that use it, each with its
loss and schedule (`alignment.py`: rgb_slpt, slpt_event, cmfa; `ssmer.py`)."""
