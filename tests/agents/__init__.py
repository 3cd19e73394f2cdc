"""Tests of the agents surface: Assistants v2 and Responses driven by a scripted model."""
