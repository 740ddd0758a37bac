"""Checks a target is held to: RMI conformance (failure conditions), GPT isolation, memory encryption."""
