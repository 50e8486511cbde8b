"""Services attached to a running daemon through the event bus and the door controller."""
