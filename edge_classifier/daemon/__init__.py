"""The daemon: the frame pipeline, model sets, signals and the lifecycle of ``run``."""
