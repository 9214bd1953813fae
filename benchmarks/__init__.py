"""The performance lab: throughput, memory, FLOP/s and the queue's cost of the MoCo training step.

Not part of the installed package; run it from the repository root (it imports the test oracle
``tests/reference_moco.py``)::

    python -m benchmarks.run --quick --out bench.json --markdown bench.md

What users run to learn their own machine's speed is ``mocomri bench --config my.yaml``
(:mod:`mocomri.commands.bench`). Here:

- :mod:`.run`: the command line of the lab;
- :mod:`.step`: the timed training step (:class:`TrainStep`, around :class:`mocomri.train.speed.PretrainStep`)
  and its settings (:class:`StepSpec`); ``formulation="reference"`` runs the plain MoCo v2 step
  of ``tests/reference_moco.py`` it is measured against;
- :mod:`.processes`: the headline comparison in alternating child processes (allocator settings
  are per process);
- :mod:`.memory`, :mod:`.flops`, :mod:`.roofline`: peak memory, FLOPs, the GEMM ceiling;
- :mod:`.components`: before/after timings of the step's parts;
- :mod:`.loader`: the data loader's pairs per second;
- :mod:`.plan`, :mod:`.suite`: what a run measures and the code that runs it;
- :mod:`.report`: the markdown tables.

Every timing goes through :mod:`mocomri.timing` (device sync, warm-up then timed calls,
round-robin rounds, paired ratios), as ``mocomri bench`` does.
"""
