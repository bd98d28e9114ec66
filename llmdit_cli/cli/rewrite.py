from __future__ import annotations

from typing import Annotated, Optional

import typer

from llmdit_cli.cli.errors import handle_errors
from llmdit_cli.cli.options import (
    ConfigOpt,
    DeviceOpt,
    DtypeOpt,
    FileOpt,
    ModelOpt,
    ProfileOpt,
    PromptsArg,
    QuietOpt,
    TemplatesDirOpt,
    VlModelOpt,
)
from llmdit_cli.cli.output import Output

G_SAMPLE = "Sampling"
G_API = "Chat server (instead of the model's own text encoder)"

RewriterOpt = Annotated[
    Optional[str],
    typer.Option(
        "--template",
        help="Rewriter template (`llmdit templates list --category rewriter`; default: the config's "
        "[rewriter] template, else the model family's: general-enhancer, demo-caption for the demo).",
        rich_help_panel=G_SAMPLE,
        show_default=False,
    ),
]
TemperatureOpt = Annotated[
    float, typer.Option("--temperature", help="Sampling temperature; 0 = greedy.", rich_help_panel=G_SAMPLE)
]
TopPOpt = Annotated[
    float,
    typer.Option(
        "--top-p",
        help="Nucleus sampling: the smallest set of tokens whose probability reaches P.",
        rich_help_panel=G_SAMPLE,
    ),
]
TopKOpt = Annotated[
    int, typer.Option("--top-k", help="Sample among the K most likely tokens; 0 = off.", rich_help_panel=G_SAMPLE)
]
MinPOpt = Annotated[
    float,
    typer.Option(
        "--min-p",
        help="Drop tokens below this fraction of the top token's probability; 0 = off.",
        rich_help_panel=G_SAMPLE,
    ),
]
MaxNewTokensOpt = Annotated[
    int, typer.Option("--max-new-tokens", help="Longest reply, in tokens.", rich_help_panel=G_SAMPLE)
]
RewriteSeedOpt = Annotated[
    Optional[int],
    typer.Option(
        "--seed",
        help="Seed of the sampling (the same seed gives the same text). Default: random, printed.",
        rich_help_panel=G_SAMPLE,
        min=0,
        max=2**63 - 1,  # what a chat server (llmdit serve's, OpenAI's) takes
    ),
]
KeepThinkingOpt = Annotated[
    bool,
    typer.Option("--keep-thinking", help="Keep the model's <think> block in the output.", rich_help_panel=G_SAMPLE),
]
ApiUrlOpt = Annotated[
    Optional[str],
    typer.Option(
        "--api-url",
        help="OpenAI-compatible server, the base URL ending in /v1 (as the openai client's base_url; "
        "config [rewriter] api_url, env LLMDIT_REWRITER_API_URL).",
        rich_help_panel=G_API,
    ),
]
ApiModelOpt = Annotated[
    Optional[str], typer.Option("--api-model", help="Model name the server knows.", rich_help_panel=G_API)
]
ApiKeyEnvOpt = Annotated[
    str,
    typer.Option(
        "--api-key-env",
        help="Environment variable holding the API key (sent as a Bearer token when set).",
        rich_help_panel=G_API,
    ),
]
TimeoutOpt = Annotated[
    Optional[float],
    typer.Option(
        "--timeout", help="Seconds to wait for each reply (default 120).", rich_help_panel=G_API, show_default=False
    ),
]
ImageOpt = Annotated[
    Optional[str],
    typer.Option(
        "--image",
        help="Describe or rewrite from this image: by the local Qwen3-VL (--vl-model), or sent to --api-url "
        "as image content. Prompts are optional then (the template's instruction alone).",
        rich_help_panel=G_SAMPLE,
    ),
]


@handle_errors
def rewrite(
    prompts: PromptsArg = None,
    file: FileOpt = None,
    template: RewriterOpt = None,
    temperature: TemperatureOpt = 0.7,
    top_p: TopPOpt = 0.9,
    top_k: TopKOpt = 0,
    min_p: MinPOpt = 0.0,
    max_new_tokens: MaxNewTokensOpt = 256,
    seed: RewriteSeedOpt = None,
    keep_thinking: KeepThinkingOpt = False,
    image: ImageOpt = None,
    vl_model: VlModelOpt = None,
    model: ModelOpt = None,
    dtype: DtypeOpt = None,
    device: DeviceOpt = None,
    templates_dir: TemplatesDirOpt = None,
    api_url: ApiUrlOpt = None,
    api_model: ApiModelOpt = None,
    api_key_env: ApiKeyEnvOpt = "OPENAI_API_KEY",
    timeout: TimeoutOpt = None,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    quiet: QuietOpt = False,
):
    """Rewrite prompts with a rewriter template, by the model's own LM or a chat server.

    The model's own text encoder rewrites (Qwen3 as a chat model, the same weights that encode;
    where the model folder has a chat model of its own in rewriter/, as the demo does, that one),
    or any OpenAI-compatible chat server does (--api-url).

    Each rewritten prompt goes to stdout on its own line, so the output pipes into `encode -`:

        llmdit rewrite "a cat" --model demo |
          llmdit encode - --model demo |
          llmdit generate --from-embeds - --model demo -o cat.png
    """
    import os
    import random

    from llmdit_cli import rewriting
    from llmdit_cli.cli.common import settings
    from llmdit_cli.errors import UsageError
    from llmdit_cli.prompt_templates import find
    from llmdit_cli.prompts import collect_prompts

    out = Output(quiet)
    texts = collect_prompts(prompts, file)
    if not texts and image:
        texts = ["Describe this image."]
    if not texts:
        raise UsageError("no prompt: give prompts as arguments, with --file, or '-' for stdin")
    if image:
        from llmdit_cli.vision import open_image

        open_image(image, "--image")  # a missing or broken file fails before anything loads
    # Greedy decoding (temperature 0) draws nothing: its seed is moot, and not said.
    drawn = seed is None and temperature > 0
    seed = random.SystemRandom().randrange(2**31) if seed is None else seed
    sampling = rewriting.Sampling(temperature, top_p, top_k, min_p, max_new_tokens, seed)
    sampling.check()
    r = settings(
        config,
        profile,
        model=model,
        dtype=dtype,
        device=device,
        templates_dir=templates_dir or None,
        vl_model=vl_model,
        rewriter_template=template,
        rewriter_api_url=api_url,
        rewriter_api_model=api_model,
        rewriter_timeout=timeout,
    )
    rw = r.settings.rewriter
    template, api_url, api_model, timeout = rw.template, rw.api_url, rw.api_model, rw.timeout
    if api_url and not api_model:
        raise UsageError("--api-url needs --api-model (the model name the server knows)")
    t = find(rewriting.template_for(r), r.templates.dir)
    if drawn:  # said once the request is known to be good, not above a usage error
        out.log(f"seed {seed} (random; pass --seed to choose)")
    if api_url:
        key = os.environ.get(api_key_env)
        picture = rewriting.image_data_url(image) if image else None
        replies = [
            rewriting.generate_api(api_url, api_model, key, t.system, p, sampling, timeout, picture) for p in texts
        ]
        rewritten = [rewriting.clean(x, keep_thinking) for x in replies]
    else:
        from llmdit_cli.engine import Engine, RewriteRequest

        rewritten = Engine().rewrite(RewriteRequest(r, texts, template, sampling, keep_thinking, image), out)
    for original, new in zip(texts, rewritten):
        if not new:
            out.hint(f"the model returned nothing for {original[:40]!r}; kept the prompt as it was")
        out.data(new or original)
