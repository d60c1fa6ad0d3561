"""Tools for testing with fanout: DynamoDB Local, a controllable stream server, the demo."""
