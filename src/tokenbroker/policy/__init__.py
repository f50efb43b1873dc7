"""Agents, grants, agent sessions and the pure decision engine."""
