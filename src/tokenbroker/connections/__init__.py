"""Connections: one user's account at one provider, with its sealed tokens."""
