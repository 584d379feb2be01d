"""Every formula, once: the memory estimator (:mod:`.estimate`, ``harness estimate``) over a model's
shape (:mod:`.shape`), saved activations (:mod:`.activations`), KV-cache bytes (:mod:`.kv`), the
decode bandwidth bound (:mod:`.decode`) and training FLOPs / MFU (:mod:`.flops`). Precisions answer
for their own storage formulas (:meth:`harness.precisions.Precision.storage`); dtype widths are
:mod:`harness.base.dtypes`'."""
