"""A task defined outside gptlab, as a user would add one: its module and its registry entry only."""
