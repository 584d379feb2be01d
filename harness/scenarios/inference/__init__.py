"""Inference cells: storage, accuracy against the reference precision, and speed (:mod:`.run`), with the
reference outputs (:mod:`.reference`) and the timed generation (:mod:`.speed`)."""
