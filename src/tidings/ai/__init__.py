"""AI features: settings, the model catalogue and providers, credits and the LLM action."""
