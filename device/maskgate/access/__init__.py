"""Access: who may enter — the per-frame verdict, the decider over time, the door controller's rules."""
