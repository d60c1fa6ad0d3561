"""The DynamoDB Streams side: the API seam, its client, discovery, lineage, shard readers."""
