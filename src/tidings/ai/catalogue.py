"""The model catalogue: which models AI features may use, who serves each, and what a call costs.

Every entry names a provider (``anthropic``, ``google`` or ``openai`` — the last meaning any endpoint that
speaks OpenAI's chat completions API, such as a self-hosted vLLM or Ollama), the provider's own model
name, a class (``quick``: cheaper and faster; ``reasoning``: better at complex tasks, more credits) and the
credits one call spends. Blocks and previews refer to a model by its catalogue ``id``.

The catalogue comes from ``TIDINGS_AI_MODELS`` (a JSON list, or the path of a JSON or YAML file holding
one); without it, the built-in list below is used. Keys and base URLs come from the provider settings
(``TIDINGS_ANTHROPIC_API_KEY`` …) unless an entry names its own; an entry whose provider has no key (or,
for ``openai``, no base URL) is listed as unavailable, and a run that picks it fails with a clear reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml

from tidings.config import Settings, get_settings
from tidings.errors import InvalidInput

Provider = Literal["anthropic", "google", "openai"]
PROVIDERS: tuple[Provider, ...] = ("anthropic", "google", "openai")
CLASSES = ("quick", "reasoning")


@dataclass(frozen=True)
class ModelSpec:
    id: str
    provider: Provider
    # The provider's own name for the model.
    model: str
    model_class: Literal["quick", "reasoning"]
    credits: float
    label: str = ""
    api_key: str | None = None
    base_url: str | None = None
    timeout: float = 30.0
    max_output_tokens: int = 2048

    @property
    def available(self) -> bool:
        if self.provider == "openai":
            return bool(self.base_url)
        return bool(self.api_key)

    def view(self) -> dict[str, Any]:
        """What the API shows: never the key."""
        return {
            "id": self.id,
            "provider": self.provider,
            "model": self.model,
            "class": self.model_class,
            "credits": self.credits,
            "label": self.label or self.id,
            "available": self.available,
            "safety_settings": self.provider == "google",
        }


def _builtin(settings: Settings) -> list[dict[str, Any]]:
    return [
        {"id": "gemini-flash", "provider": "google", "model": "gemini-2.5-flash", "class": "quick",
         "credits": 1, "label": "Gemini Flash"},
        {"id": "gemini-pro", "provider": "google", "model": "gemini-2.5-pro", "class": "reasoning",
         "credits": 5, "label": "Gemini Pro"},
        {"id": "claude-haiku", "provider": "anthropic", "model": "claude-haiku-4-5", "class": "quick",
         "credits": 1, "label": "Claude Haiku"},
        {"id": "claude-sonnet", "provider": "anthropic", "model": "claude-sonnet-4-5", "class": "reasoning",
         "credits": 5, "label": "Claude Sonnet"},
        {"id": "self-hosted", "provider": "openai", "model": settings.openai_model, "class": "quick",
         "credits": 1, "label": "Self-hosted (OpenAI-compatible)"},
    ]  # fmt: skip


def _entries(settings: Settings) -> list[Any]:
    raw = settings.ai_models
    if not raw:
        return _builtin(settings)
    text = raw.strip()
    if not text.startswith("["):
        text = Path(text).read_text()
    loaded = yaml.safe_load(text) if not text.lstrip().startswith("[") else json.loads(text)
    if isinstance(loaded, dict) and "models" in loaded:
        loaded = loaded["models"]
    if not isinstance(loaded, list):
        raise ValueError("TIDINGS_AI_MODELS must hold a list of models")
    return loaded


def _spec(entry: Any, settings: Settings) -> ModelSpec:
    if not isinstance(entry, dict):
        raise ValueError(f"catalogue entry {entry!r} is not an object")
    model_id, provider = entry.get("id"), entry.get("provider")
    if not isinstance(model_id, str) or not model_id:
        raise ValueError(f"catalogue entry {entry!r} needs an id")
    if provider not in PROVIDERS:
        raise ValueError(f"model {model_id}: provider must be one of {', '.join(PROVIDERS)}")
    model_class = entry.get("class", "quick")
    if model_class not in CLASSES:
        raise ValueError(f"model {model_id}: class must be quick or reasoning")
    credits = entry.get("credits", 1)
    if not isinstance(credits, int | float) or isinstance(credits, bool) or credits < 0:
        raise ValueError(f"model {model_id}: credits must be a number ≥ 0")
    defaults = {
        "anthropic": (settings.anthropic_api_key, settings.anthropic_base_url),
        "google": (settings.google_api_key, settings.google_base_url),
        "openai": (settings.openai_api_key, settings.openai_base_url),
    }[provider]
    return ModelSpec(
        id=model_id,
        provider=provider,
        model=str(entry.get("model") or model_id),
        model_class=model_class,
        credits=float(credits),
        label=str(entry.get("label") or ""),
        api_key=entry.get("api_key") or defaults[0],
        base_url=entry.get("base_url") or defaults[1],
        timeout=float(entry.get("timeout") or settings.ai_timeout_seconds),
        max_output_tokens=int(entry.get("max_output_tokens") or 2048),
    )


@dataclass(frozen=True)
class Catalogue:
    models: tuple[ModelSpec, ...]

    def get(self, model_id: str | None) -> ModelSpec:
        """A model by id; with no id, the first quick model available (else the first quick one)."""
        if model_id is None:
            quick = [m for m in self.models if m.model_class == "quick"] or list(self.models)
            return next((m for m in quick if m.available), quick[0])
        for model in self.models:
            if model.id == model_id:
                return model
        known = ", ".join(m.id for m in self.models)
        raise InvalidInput(f"unknown model {model_id!r}; the catalogue has {known}", field="model")

    def views(self) -> list[dict[str, Any]]:
        return [model.view() for model in self.models]


def load(settings: Settings) -> Catalogue:
    models = tuple(_spec(entry, settings) for entry in _entries(settings))
    if not models:
        raise ValueError("the model catalogue is empty")
    ids = [m.id for m in models]
    if len(set(ids)) != len(ids):
        raise ValueError("model ids in the catalogue must be unique")
    return Catalogue(models)


@cache
def catalogue() -> Catalogue:
    """This process's catalogue (settings are read once per process)."""
    return load(get_settings())
