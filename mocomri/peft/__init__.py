"""Parameter-efficient modules (LoRA, (IA)³) on the registry's encoders, and their arithmetic.

Following Zhang et al. 2023, "Composing Parameter-Efficient Modules with Arithmetic Operations"
(arXiv:2306.14870): modules trained on a frozen encoder are combined in weight space by
λ-addition, negation and analogy, without further training.
"""

from mocomri.peft.arithmetic import add, analogy, check_compatible, combine, negate
from mocomri.peft.encoder import PEMEncoder, resolve_targets
from mocomri.peft.ia3 import IA3
from mocomri.peft.lora import LoRA
from mocomri.peft.merge import merged_encoder, save_merged
from mocomri.files import state_dict_digest
from mocomri.peft.module_file import PEM, BaseEncoder, Head, load_pem, save_pem
from mocomri.peft.spec import KINDS, PEMError, PEMSpec, default_targets

__all__ = [
    "IA3",
    "KINDS",
    "PEM",
    "BaseEncoder",
    "Head",
    "LoRA",
    "PEMEncoder",
    "PEMError",
    "PEMSpec",
    "add",
    "analogy",
    "check_compatible",
    "combine",
    "default_targets",
    "load_pem",
    "merged_encoder",
    "negate",
    "resolve_targets",
    "save_merged",
    "save_pem",
    "state_dict_digest",
]
