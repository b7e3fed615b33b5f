"""Recipes: whole commands built from the components (models, formats, inner loop, domains, runs)."""
