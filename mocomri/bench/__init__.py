"""``mocomri bench``: throughput, memory, FLOP/s and the queue's cost of the MoCo training step.

- :mod:`.step`: the timed training step (:class:`TrainStep`) and its settings (:class:`StepSpec`);
- :mod:`.reference`: the plain MoCo v2 step it is measured against;
- :mod:`.processes`: the headline comparison in alternating child processes (allocator settings
  are per process);
- :mod:`.timing`: round-robin timing and paired ratios;
- :mod:`.memory`, :mod:`.flops`, :mod:`.roofline`: peak memory, FLOPs, the GEMM ceiling;
- :mod:`.components`: before/after timings of the step's parts;
- :mod:`.loader`: the data loader's pairs per second;
- :mod:`.plan`, :mod:`.suite`: what a run measures and the code that runs it;
- :mod:`.report`: the markdown tables.
"""

from mocomri.bench.plan import PLANS, Case, Plan, make_plan
from mocomri.bench.reference import ReferenceMoCo, reference_train_step
from mocomri.bench.step import StepSpec, TrainStep, default_spec
from mocomri.bench.suite import run_benchmarks

__all__ = [
    "PLANS",
    "Case",
    "Plan",
    "ReferenceMoCo",
    "StepSpec",
    "TrainStep",
    "default_spec",
    "make_plan",
    "reference_train_step",
    "run_benchmarks",
]
