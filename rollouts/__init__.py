"""Multi-turn episodes played in lock-step by many envs, and their records."""
