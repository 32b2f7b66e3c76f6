"""Internal layer of resilient."""
