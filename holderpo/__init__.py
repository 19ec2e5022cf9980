"""HölderPO toolkit: train, evaluate and replay LLM agents on ALFWorld with Hölder Policy Optimisation."""
