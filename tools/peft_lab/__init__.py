"""The composition experiments' own parts (``tools/peft_experiments.py``), kept out of the package.

- :mod:`.subsets`: the training sets the experiments derive from a manifest (label-skewed
  halves, relabelled tasks);
- :mod:`.shift`: the synthetic scanner shift that makes the domain-transfer target;
- :mod:`.baselines`: what a module is measured against (the linear probe, full fine-tuning);
- :mod:`.lambda_rules`: the experiments' own rules for λ beside the product's best validation
  score (the share of each own module's accuracy kept; a guard on the source domain);
- :mod:`.report`: results over kinds and seeds as JSON, Markdown tables and λ-curve plots.

What users run is ``mocomri peft`` (:mod:`mocomri.peft`); import these from the repository root
(``tools.peft_lab``), as the experiments tool and the tests do.
"""
