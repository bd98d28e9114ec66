"""The steps a request strings together, over its frozen plan (`config.Resolved`), split by job:
`plan` (the model handle, the family's defaults, chat formatting), `checks` (every check of a
request, once, before anything loads), `encoding` (embeddings: the cache, vision, caption lengths,
embeds files, remote encoding) and `jobs` (one image per prompt and seed, run through the family's
stage functions). The engine calls these; messages name settings by key (`errors.setting`), so
every front end can name them its own way."""

from llmdit_cli.workflows.checks import (
    Beyond,
    beyond_limits,
    check_generation,
    check_guidance,
    check_limits,
    check_size,
    validate,
    validate_encoding,
)
from llmdit_cli.workflows.encoding import (
    ENCODER_FIELDS,
    Embeds,
    check_embeds_fit,
    check_remote_template,
    embeds_bytes,
    embeds_of,
    encode,
    encode_cached,
    encoder_request_settings,
    read_embeds,
    remote_embeds_file,
    remote_encode,
    shape_lengths,
    with_vision,
    write_embeds,
)
from llmdit_cli.workflows.jobs import (
    Job,
    generator,
    is_image,
    latents_identity,
    layer_settings,
    plan_jobs,
    run_jobs,
    seeds_for,
)
from llmdit_cli.workflows.plan import chat_format, fill_family_defaults, fill_layer_defaults, layer_plan, open_model

__all__ = [
    "ENCODER_FIELDS",
    "Beyond",
    "Embeds",
    "Job",
    "beyond_limits",
    "chat_format",
    "check_embeds_fit",
    "check_generation",
    "check_guidance",
    "check_limits",
    "check_remote_template",
    "check_size",
    "embeds_bytes",
    "embeds_of",
    "encode",
    "encode_cached",
    "encoder_request_settings",
    "fill_family_defaults",
    "layer_plan",
    "fill_layer_defaults",
    "generator",
    "is_image",
    "latents_identity",
    "layer_settings",
    "open_model",
    "plan_jobs",
    "read_embeds",
    "remote_embeds_file",
    "remote_encode",
    "run_jobs",
    "seeds_for",
    "shape_lengths",
    "validate",
    "validate_encoding",
    "with_vision",
    "write_embeds",
]
