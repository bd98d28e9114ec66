"""Models by concern: `refs` (references, Hub lookup, identities), `placement` (dtype, devices,
offload), `optimise` (attention backends, compile, VAE tiling, quantization), `float8`
(`--quantize fp8`, float8 checkpoints with scales), `lora_stack` (LoRA specs), `loading`
(`ModelHandle`: components loaded on first use). Families and their defaults are in
`llmdit_cli.families`."""

from llmdit_cli.models.loading import ModelHandle, quiet_libraries
from llmdit_cli.models.lora_stack import parse_lora_spec
from llmdit_cli.models.placement import Placement
from llmdit_cli.models.refs import DEMO, DEMO_PATH

__all__ = ["DEMO", "DEMO_PATH", "ModelHandle", "Placement", "parse_lora_spec", "quiet_libraries"]
