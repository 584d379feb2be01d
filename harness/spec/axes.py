"""The pydantic types of each axis: unions over everything registered, discriminated by ``kind``.

Built at import from the registries (whose modules import no framework), so a new implementation
module appears in suite validation and in the JSON schema with no edit here.
"""

from __future__ import annotations

from harness.base.specbase import kind_union
from harness.engines import ENGINES
from harness.models import SOURCES, parse_ref
from harness.parallel import PARALLEL
from harness.precisions import PRECISIONS
from harness.training import TRAINING_MODES

ModelRef = kind_union(SOURCES, shorthand=parse_ref)
PrecisionConfig = kind_union(PRECISIONS)
TrainingModeConfig = kind_union(TRAINING_MODES)
EngineConfig = kind_union(ENGINES)
ParallelConfig = kind_union(PARALLEL)
