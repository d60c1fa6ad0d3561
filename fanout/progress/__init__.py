"""Progress: ack tracking per shard, the CheckpointStore seam and its stores."""
