"""Settings: built-in defaults < config-file profile < LLMDIT_* environment < command-line flags.

The config file is TOML with one table per profile (`[default]`, `[low_vram]`, ...), each with the
sections below. The default profile's settings may also stand at the top level (`model`,
`[rewriter]`, ...), but not both ways for one section. A file without them sets no defaults; a
profile named with --profile is applied on top of them and must exist. Every key is validated; an
unknown key or a wrong type is an error that names the key and the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, ValidationError

from llmdit_cli.errors import ConfigError, UsageError, setting
from llmdit_cli.tomlfiles import StrictModel, load_toml

DEFAULT_MODEL = "Tongyi-MAI/Z-Image-Turbo"
ENV_PREFIX = "LLMDIT_"


class _Section(StrictModel):
    # Flags of a prefixed section are named `<prefix>_<field>` (and `enabled` is just `<prefix>`).
    flag_prefix: ClassVar[str] = ""
    # How an image's settings record (PNG, latents header) keeps the section's fields, by flag name:
    # "reapply" (`generate --from-png` feeds them back), "note" (machine-specific: recorded only),
    # "none" (not recorded; the encoder's settings travel with the embeddings instead).
    record: ClassVar[str] = "reapply"
    not_recorded: ClassVar[tuple[str, ...]] = ()
    # Fields of a "note" section that are fed back all the same (they change the pixels).
    reapplied: ClassVar[tuple[str, ...]] = ()
    # Fields recorded only in some modes: {field: modes}.
    only_in: ClassVar[dict[str, tuple[str, ...]]] = {}


class EncoderSettings(_Section):
    record: ClassVar[str] = "none"
    system_prompt: str | None = None
    thinking_content: str | None = None
    enable_thinking: bool = True
    assistant_content: str | None = None
    hidden_layer: int | None = None  # None: the model family's (its stock pipeline's)
    max_length: int = Field(default=512, ge=1)
    # A prompt template by name (templates/, `llmdit templates list`): its system prompt and
    # think-block settings apply where the settings above are left unset.
    template: str | None = None
    # Prompts above the model's caption limit, and every prompt's length (stages/lengths.py).
    long_prompt_mode: Literal["error", "truncate", "interpolate", "pool", "attention_pool"] = "truncate"
    caption_length: int | None = Field(default=None, ge=1)
    caption_fill: Literal[
        "content_only",
        "pad_end_zero",
        "pad_end_mean",
        "pad_start_zero",
        "pad_middle_zero",
        "pad_both",
        "filler_repeat",
    ] = "pad_end_zero"


class VisionSettings(_Section):
    """Vision conditioning with Qwen3-VL (llmdit_cli/vision.py): it changes the embeddings, so it
    travels with them (embeds header, and from there an image's record), like the encoder's."""

    flag_prefix: ClassVar[str] = "vl"
    record: ClassVar[str] = "none"
    image: str | None = None
    alpha: float = Field(default=0.3, ge=0, le=1)
    blend_mode: Literal["linear", "style_only", "graduated", "attention_weighted", "adain"] = "linear"
    model: str | None = None  # default: Qwen/Qwen3-VL-4B-Instruct; 'demo' is a tiny random one
    hidden_layer: int = -2
    tokens: Literal["all", "image", "text"] = "all"
    device: str | None = None  # where Qwen3-VL runs; None: the text encoder's device (not recorded)


class GenerationSettings(_Section):
    # None means: the model family's default (see llmdit_cli.families).
    only_in: ClassVar[dict[str, tuple[str, ...]]] = {"strength": ("img2img",), "mask": ("img2img",)}
    not_recorded: ClassVar[tuple[str, ...]] = ("batch_size",)  # the same pixels at any batch size
    width: int | None = None
    height: int | None = None
    steps: int | None = Field(default=None, ge=1)
    guidance_scale: float | None = Field(default=None, ge=0)
    cfg_normalization: float = 0.0
    cfg_truncation: float = Field(default=1.0, ge=0, le=1)
    negative_prompt: str | None = None
    strength: float = Field(default=0.6, ge=0, le=1)
    mask: str | None = None  # img2img: white repaints (inpainting)
    batch_size: int = Field(default=1, ge=1, le=64)  # images per transformer forward


class ControlSettings(_Section):
    """A ControlNet (`--controlnet`): the model, its control image and how strongly it steers.
    An image records the control image's SHA-256 beside its path (`--from-png` checks it)."""

    flag_prefix: ClassVar[str] = "control"
    model: str | None = None
    image: str | None = None
    scale: float = Field(default=0.75, ge=0, le=4)  # diffusers' default


class RewriterSettings(_Section):
    """`llmdit rewrite`'s defaults: the rewriter template and a chat server to rewrite on (in place
    of the model's own text encoder). Not recorded: a rewrite's output is a prompt."""

    flag_prefix: ClassVar[str] = "rewriter"
    record: ClassVar[str] = "none"
    template: str | None = None  # None: the model family's (general-enhancer; demo-caption for the demo)
    api_url: str | None = None
    api_model: str | None = None
    timeout: float = Field(default=120.0, gt=0)  # seconds per reply (the seed's default)


class TemplatesSettings(_Section):
    """Where templates are looked up besides the built-ins (machine-specific: not recorded)."""

    flag_prefix: ClassVar[str] = "templates"
    record: ClassVar[str] = "none"
    dir: list[str] = []


class CacheSettings(_Section):
    """The on-disk embedding cache (llmdit_cli/embed_cache.py); machine-specific: not recorded."""

    flag_prefix: ClassVar[str] = "cache"
    record: ClassVar[str] = "none"
    enabled: bool = True
    dir: str | None = None  # default: $XDG_CACHE_HOME/llmdit or ~/.cache/llmdit


class SchedulerSettings(_Section):
    shift: float | None = Field(default=None, gt=0)  # 0 or less: sigmas of 0, a black image


class LoraSettings(_Section):
    loras: list[str] = []


class SlgSettings(_Section):
    """Skip-layer guidance. None means: the model family's value (see llmdit_cli.families)."""

    flag_prefix: ClassVar[str] = "slg"
    enabled: bool = False
    scale: float | None = None
    layers: list[int] | None = None
    start: float | None = None
    stop: float | None = None


class DypeSettings(_Section):
    """Dynamic position extrapolation (docs/dype.md)."""

    flag_prefix: ClassVar[str] = "dype"
    enabled: bool = False
    # None: the model family's (measured on the demo, the DyPE paper's vision_yarn for Z-Image).
    method: Literal["yarn", "ntk", "vision_yarn"] | None = None
    scale: float = Field(default=2.0, ge=0, le=16)  # kappa's peak; vision_yarn raises band edges to it
    exponent: float = 2.0
    start_sigma: float = 1.0
    base_resolution: int | None = None


class LayeredSettings(_Section):
    """Qwen-Image-Layered (`decompose`) and Qwen-Image-Edit-Plus (`edit-layer`): their own steps
    and negative prompt, so Z-Image's `[generation]` never applies to them. None: the model
    family's default (the model cards'). A layer folder's layers.json records them, images do not.
    The commands name the options without the prefix (`--steps`, `--layers`; cli/options.py)."""

    flag_prefix: ClassVar[str] = "layered"
    record: ClassVar[str] = "none"
    layers: Annotated[int, Field(ge=2, le=10)] | Literal["auto"] | None = None  # auto: by the image
    resolution: Literal[640, 1024] | None = None
    steps: int | None = Field(default=None, ge=1)
    true_cfg_scale: float | None = Field(default=None, ge=0)
    negative_prompt: str = " "  # the model cards'; true CFG needs a negative prompt
    cfg_normalize: bool | None = None  # decompose: rescale the guided prediction to the conditional one's norm
    caption_language: Literal["en", "zh"] = "en"
    model: str = "Qwen/Qwen-Image-Layered"
    edit_model: str = "Qwen/Qwen-Image-Edit-2509"


class OptimizationSettings(_Section):
    record: ClassVar[str] = "note"
    not_recorded: ClassVar[tuple[str, ...]] = ("dtype", "device", "text_encoder_device", "dit_device", "vae_device")
    reapplied: ClassVar[tuple[str, ...]] = ("step_cache", "step_cache_threshold")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: str = "auto"
    text_encoder_device: str | None = None
    dit_device: str | None = None
    vae_device: str | None = None
    cpu_offload: Literal["none", "model", "sequential"] = "none"
    attention_backend: Literal["auto", "native", "sdpa", "flash", "flash_3", "sage", "xformers"] = "auto"
    compile: bool = False
    vae_tiling: bool = False
    vae_tile_size: int | None = Field(default=None, ge=64)  # pixels; None: the VAE's own (at least 256)
    vae_tile_overlap: float | None = Field(default=None, ge=0, le=0.5)  # None: diffusers' 0.25
    quantize: Literal["none", "8bit", "4bit", "fp8"] = "none"
    transformer_file: str | None = None
    step_cache: Literal["none", "first-block"] = "none"
    step_cache_threshold: float = Field(default=0.12, gt=0, le=1)

    def placement(self) -> dict[str, Any]:
        """The fields that say how a model loads and runs (`models.Placement`), without the ones
        that act per run (the step cache): two runs that differ only there share a loaded model."""
        return self.model_dump(exclude=set(self.reapplied))


class Settings(_Section):
    model: str = DEFAULT_MODEL
    encoder: EncoderSettings = EncoderSettings()
    vl: VisionSettings = VisionSettings()
    templates: TemplatesSettings = TemplatesSettings()
    cache: CacheSettings = CacheSettings()
    generation: GenerationSettings = GenerationSettings()
    control: ControlSettings = ControlSettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    lora: LoraSettings = LoraSettings()
    slg: SlgSettings = SlgSettings()
    dype: DypeSettings = DypeSettings()
    layered: LayeredSettings = LayeredSettings()
    rewriter: RewriterSettings = RewriterSettings()
    optimization: OptimizationSettings = OptimizationSettings()


SECTIONS: dict[str, type[_Section]] = {
    name: info.annotation for name, info in Settings.model_fields.items() if name != "model"
}


def _flag_name(cls: type[_Section], field: str) -> str:
    if not cls.flag_prefix:
        return field
    return cls.flag_prefix if field == "enabled" else f"{cls.flag_prefix}_{field}"


# Flag names are unique across sections, so a flag name alone finds its key ("slg_scale" -> "slg.scale").
FLAG_KEY: dict[str, str] = {_flag_name(cls, f): f"{s}.{f}" for s, cls in SECTIONS.items() for f in cls.model_fields}
KEY_FLAG: dict[str, str] = {key: flag for flag, key in FLAG_KEY.items()}


def setting_facts() -> dict[str, dict[str, Any]]:
    """Per flag name, what `--help` says of a setting: its built-in default (where it has one) and
    the choices of a `Literal` field. `cli/setting_facts.py` holds them, written by
    `scripts/gen_setting_facts.py` (`--help` must not import pydantic; a test checks it is current)."""
    facts: dict[str, dict[str, Any]] = {}
    for flag, key in FLAG_KEY.items():
        section, _, name = key.partition(".")
        info = SECTIONS[section].model_fields[name]
        entry: dict[str, Any] = {}
        if info.default is not None and not isinstance(info.default, list):
            entry["default"] = info.default
        choices = _literal_choices(info.annotation)
        if choices:
            entry["choices"] = choices
        if entry:
            facts[flag] = entry
    return facts


def _literal_choices(annotation: Any) -> list[Any]:
    from typing import get_args, get_origin

    if get_origin(annotation) is Literal:
        return list(get_args(annotation))
    return [c for arg in get_args(annotation) for c in _literal_choices(arg)]


def parse_layers(text: str | None) -> list[int] | None:
    """`7,8,9` or `7-12` (or a mix) -> block indices for `slg.layers`; None stays None (not given)."""
    if text is None:
        return None
    layers: list[int] = []
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            first, sep, last = part.partition("-")
            layers += list(range(int(first), int(last) + 1)) if sep and first else [int(part)]
    except ValueError:
        raise UsageError(f"{setting('slg.layers')} {text}: expected block indices like 7,8,9 or 7-12") from None
    return layers


def key_of(flag: str) -> str:
    """The key of a flag name (`slg_scale` -> `slg.scale`); a key is its own."""
    return flag if flag == "model" or flag in KEY_FLAG else FLAG_KEY[flag]


def default_config_path() -> Path:
    import typer

    return Path(typer.get_app_dir("llmdit")) / "config.toml"


def _flatten(table: dict[str, Any], where: str) -> dict[str, Any]:
    """A profile table as {'section.field': value}, rejecting unknown keys."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        if key == "model":
            flat["model"] = value
        elif key in SECTIONS and isinstance(value, dict):
            for field, v in value.items():
                if field not in SECTIONS[key].model_fields:
                    known = ", ".join(SECTIONS[key].model_fields)
                    raise ConfigError(f"{where}: unknown key '{key}.{field}' (known in [{key}]: {known})")
                flat[f"{key}.{field}"] = v
        else:
            known = ", ".join(["model", *SECTIONS])
            raise ConfigError(f"{where}: unknown key '{key}' (known: {known})")
    return flat


def check_key(key: str, where: str) -> None:
    """Refuse a key that is no setting, naming the keys its section has."""
    section, _, name = key.rpartition(".")
    if key == "model" or (section in SECTIONS and name in SECTIONS[section].model_fields):
        return
    if section in SECTIONS:
        known = ", ".join(SECTIONS[section].model_fields)
        raise ConfigError(f"{where}: unknown key '{key}' (known in [{section}]: {known})")
    raise ConfigError(
        f"{where}: unknown key '{key}' (keys are model or SECTION.FIELD with sections {', '.join(SECTIONS)})"
    )


def check_value(key: str, value: Any, where: str) -> Any:
    """`value` validated (and coerced) as setting `key`, or a ConfigError naming `where` and the key."""
    section, _, field = key.rpartition(".")
    try:
        if not section:
            return Settings.model_validate({field: value}).model
        obj = SECTIONS[section]()
        setattr(obj, field, value)
        return getattr(obj, field)
    except ValidationError as exc:
        msg = in_words(exc.errors()[0])
        if where == setting(key):  # a flag: `--max-length 0: must be greater than or equal to 1`
            raise ConfigError(f"{where} {value}: {msg}") from None
        raise ConfigError(f"{where}: bad value for '{key}' ({value!r}): {msg}") from None


# A field's range constraint as a plain sentence (pydantic's wording, after the value).
_BOUNDS = {
    "greater_than_equal": "greater than or equal to {ge}",
    "less_than_equal": "less than or equal to {le}",
    "greater_than": "greater than {gt}",
    "less_than": "less than {lt}",
}


def in_words(error: dict) -> str:
    bound = _BOUNDS.get(error["type"])
    return "must be " + bound.format(**error["ctx"]) if bound else error["msg"]


def _env_layer() -> dict[str, Any]:
    layer = {}
    for key in ["model", *KEY_FLAG]:
        name = ENV_PREFIX + key.replace(".", "_").upper()
        if name in os.environ:
            raw: Any = os.environ[name]
            if key in ("lora.loras", "slg.layers", "templates.dir"):
                raw = [s for s in raw.split(os.pathsep if key == "templates.dir" else ",") if s]
            layer[key] = (check_value(key, raw, f"environment variable {name}"), name)
    return layer


class Resolved:
    """The plan of a request: resolved settings, frozen, with where each value came from.

    Sections read as attributes (`r.generation.steps`; `r.settings` is the whole typed object) and
    `r["steps"]` / `r["generation.steps"]` reach a value by flag name or key. Nothing changes a
    plan: filling what is left (the model family's defaults, an input's size) makes a new one
    (`with_defaults`, `with_value`, `with_flags`, `with_model`) and says so in its sources;
    `prepared` marks the plan the engine has filled and checked for generating."""

    __slots__ = ("values", "sources", "config_path", "profile", "model_setting", "prepared", "_typed")

    def __init__(
        self,
        values: dict[str, Any],
        sources: dict[str, str],
        config_path: Path | None,
        profile: str,
        model_setting: str = "model",
        prepared: bool = False,
    ):
        set_ = object.__setattr__
        set_(self, "values", MappingProxyType(dict(values)))
        set_(self, "sources", MappingProxyType(dict(sources)))
        set_(self, "config_path", config_path)
        set_(self, "profile", profile)
        # The setting that names the model these settings run: `model`, or for the layer
        # commands `layered.model` / `layered.edit_model` (`with_model`).
        set_(self, "model_setting", model_setting)
        set_(self, "prepared", prepared)
        set_(self, "_typed", None)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"a plan is frozen: {name} cannot change (make a new one with with_...)")

    def _copy(self, values, sources, **changes: Any) -> Resolved:
        kept = dict(model_setting=self.model_setting, prepared=False)
        return Resolved(values, sources, self.config_path, self.profile, **{**kept, **changes})

    def with_model(self, key: str) -> Resolved:
        """A copy whose model is the one setting `key` names (its source kept), for messages too."""
        values, sources = dict(self.values), dict(self.sources)
        values["model"], sources["model"] = values[key], sources[key]
        return self._copy(values, sources, model_setting=key)

    def with_flags(self, flags: dict[str, Any]) -> Resolved:
        """A copy with `flags` (by flag name or key, None = not given) on top, checked like flags."""
        values, sources = dict(self.values), dict(self.sources)
        _apply_flags(values, sources, flags)
        return self._copy(values, sources)

    def with_defaults(self, defaults: dict[str, Any], source: str) -> Resolved:
        """A copy where the values still unset (None) take `defaults` (by flag name or key), e.g.
        the model family's, named `source`."""
        values, sources = dict(self.values), dict(self.sources)
        for field, value in defaults.items():
            key = key_of(field)
            if values.get(key) is None:
                values[key], sources[key] = value, source
        return self._copy(values, sources, prepared=self.prepared)

    def with_value(self, field: str, value: Any, source: str) -> Resolved:
        """A copy with one value replaced (already checked by the caller), saying where it came from."""
        values, sources = dict(self.values), dict(self.sources)
        key = key_of(field)
        values[key], sources[key] = value, source
        return self._copy(values, sources)

    def as_prepared(self) -> Resolved:
        """This plan, marked as filled and checked for generating (`Engine.prepare`)."""
        return self._copy(dict(self.values), dict(self.sources), prepared=True)

    @property
    def settings(self) -> Settings:
        if self._typed is None:
            object.__setattr__(self, "_typed", Settings.model_validate(_nest(dict(self.values))))
        return self._typed

    def __getattr__(self, name: str) -> Any:
        # Only reached for names that are no attribute: the sections (`r.generation`).
        if name in SECTIONS:
            return getattr(self.settings, name)
        raise AttributeError(name)

    def __getitem__(self, field: str) -> Any:
        return self.values[key_of(field)]

    def origin(self, field: str) -> str:
        """How to name a setting in a message: marked (`errors.setting`) when the caller gave it, so
        a front end names it its own way (the CLI: `--steps`); else the key and where its value
        came from (`generation.steps (from img.png (stored settings))`)."""
        key = key_of(field)
        source = self.sources.get(key, "default")
        if source == "flag":
            return setting(key)
        return f"{key} (from {source})"

    def given(self, section: str) -> list[str]:
        """Keys of `section` the caller set (flags, or a request's fields)."""
        return [k for k, src in self.sources.items() if k.startswith(section + ".") and src == "flag"]

    def record(self, mode: str) -> dict[str, Any]:
        """The settings an image made in `mode` records (PNG, latents header), by flag name."""
        return {flag: self.values[key] for key, flag in recorded_keys(mode)}


def recorded_keys(mode: str, kinds: tuple[str, ...] = ("reapply", "note")) -> list[tuple[str, str]]:
    """(key, flag name) of every setting an image's record holds, in section order."""
    keys = [("model", "model")]
    for section, cls in SECTIONS.items():
        for name in cls.model_fields:
            kind = "reapply" if name in cls.reapplied else cls.record
            if kind not in kinds or name in cls.not_recorded or mode not in cls.only_in.get(name, (mode,)):
                continue
            keys.append((f"{section}.{name}", _flag_name(cls, name)))
    return keys


def reapplied_fields() -> list[str]:
    """Flag names of the recorded settings that `generate --from-png` feeds back in."""
    return [flag for _, flag in recorded_keys("txt2img", ("reapply",))]


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        section, _, field = key.rpartition(".")
        (nested.setdefault(section, {}) if section else nested)[field] = value
    return nested


def resolve(
    config: str | None = None,
    profile: str | None = None,
    flags: dict[str, Any] | None = None,
    stored: dict[str, Any] | None = None,
    stored_source: str = "",
) -> Resolved:
    """Layer defaults, the config file's profile, LLMDIT_* variables, `stored` settings (e.g. read
    from a PNG, named by `stored_source`) and flags (None = not given)."""
    values, sources = _defaults()

    explicit = config or os.environ.get(ENV_PREFIX + "CONFIG")
    path = Path(explicit) if explicit else default_config_path()
    profile = profile or os.environ.get(ENV_PREFIX + "PROFILE") or "default"
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder, not a config file")
    if explicit and not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    if path.is_file():
        for table, where in _profile_tables(load_toml(path), path, profile):
            for key, v in _flatten(table, where).items():
                values[key], sources[key] = check_value(key, v, where), where
    else:
        if profile != "default":
            raise ConfigError(f"unknown profile '{profile}': no config file at {path} (pass --config FILE)")
        path = None

    for key, (v, name) in _env_layer().items():
        values[key], sources[key] = v, name
    for field, v in (stored or {}).items():
        if v is not None and (flags or {}).get(field) is None:  # a flag given replaces it unread
            key = key_of(field)
            values[key], sources[key] = check_value(key, v, stored_source), stored_source
    _apply_flags(values, sources, flags)
    return Resolved(values, sources, path, profile)


def _profile_tables(doc: dict[str, Any], path: Path, profile: str) -> list[tuple[dict[str, Any], str]]:
    """The tables of a config file that `profile` applies, lowest first, each with its name for
    messages and sources. The default profile always exists, if only empty: a file need not hold
    one to be usable, and top-level settings (`model`, `[rewriter]`) are its too."""
    top = {k: v for k, v in doc.items() if k == "model" or k in SECTIONS}
    profiles = {k: v for k, v in doc.items() if k not in top}
    _check_top_level(top, profiles, path)
    tables = [(top, str(path)), (profiles.get("default", {}), f"{path} [default]")]
    if profile != "default":
        if profile not in profiles:
            names = ", ".join(profiles) or "none"
            note = f"; [{profile}] is a settings section, not a profile" if profile in SECTIONS else ""
            raise ConfigError(f"{path}: unknown profile '{profile}' (profiles in this file: {names}{note})")
        tables.append((profiles[profile], f"{path} [{profile}]"))
    return tables


def _check_top_level(top: dict[str, Any], profiles: dict[str, Any], path: Path) -> None:
    import difflib

    for name, table in profiles.items():
        if not isinstance(table, dict):
            raise ConfigError(
                f"{path}: unknown key '{name}' (the top level holds model, sections like [generation], [PROFILE] tables)"
            )
        try:  # every profile, used or not: a misspelt section (`[rewritter]`) reads as one
            _flatten(table, f"{path} [{name}]")
        except ConfigError as exc:
            close = difflib.get_close_matches(name, list(SECTIONS), n=1)
            raise ConfigError(f"{exc}; did you mean the section [{close[0]}]?" if close else str(exc)) from None
    # Two places for one section would need a rule for which wins; one place is clearer.
    clash = next((k for k in top if k in profiles.get("default", {})), None)
    if clash:
        here, there = ("model", "[default] model") if clash == "model" else (f"[{clash}]", f"[default.{clash}]")
        raise ConfigError(f"{path}: {here} and {there} both set the default profile's {clash}: keep one")


def resolve_defaults(flags: dict[str, Any] | None = None, keyed: dict[str, tuple[Any, str]] | None = None) -> Resolved:
    """Built-in defaults, then `keyed` settings ({key: (checked value, source)}, e.g. a sweep
    recipe's), then `flags`, with no config file or environment: for runs a recipe defines in full
    (sweeps, the trainer's validation images)."""
    values, sources = _defaults()
    for key, (value, source) in (keyed or {}).items():
        values[key], sources[key] = value, source
    _apply_flags(values, sources, flags)
    return Resolved(values, sources, None, "default")


def _defaults() -> tuple[dict[str, Any], dict[str, str]]:
    values: dict[str, Any] = {"model": DEFAULT_MODEL}
    for section, cls in SECTIONS.items():
        values.update({f"{section}.{f}": getattr(cls(), f) for f in cls.model_fields})
    return values, {k: "default" for k in values}


def _apply_flags(values: dict[str, Any], sources: dict[str, str], flags: dict[str, Any] | None) -> None:
    for field, v in (flags or {}).items():
        if v is not None:
            key = key_of(field)
            values[key], sources[key] = check_value(key, v, setting(key)), "flag"
