"""Lambda handlers of the Orders table's stream."""
