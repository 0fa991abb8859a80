"""An example plugin: a method of its own, installed apart from the project.

Its distribution declares the entry point that finds it (kd.registry.PLUGINS):

    [project.entry-points."segkd.plugins"]
    example = "segkd_example.method"
"""
