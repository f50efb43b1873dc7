"""Token lifecycle: refresh that never loses a token, on one replica or many."""
