"""Training cells (:mod:`.run`): the one step loop (:mod:`.loop`) run in a single process
(:mod:`.single`) or as the ranks of a parallel engine (:mod:`.distributed`, launched under torchrun by
:mod:`.launch`, each rank :mod:`.rank`), the gradient check (:mod:`.gradients`) and the estimator's
prediction beside the measurement (:mod:`.predict`)."""
