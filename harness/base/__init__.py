"""The bottom floor: what every other floor may use, importing nothing of the harness above it.

Errors (:mod:`.errors`), the lazy registries of the axes (:mod:`.registry`), the strict spec base
(:mod:`.specbase`), host facts (:mod:`.host`), dtype widths (:mod:`.dtypes`), paths and the cache
(:mod:`.paths`, :mod:`.cachedir`), process trees (:mod:`.proctree`), the one child-process protocol
(:mod:`.protocol`) and the one-step child (:mod:`.child`), the wire types of serving (:mod:`.wire`),
the resolved model handle (:mod:`.resolved`) and the views the axes type a cell against (:mod:`.cellview`).
"""
