"""Dataflows of the platform: one module per flow, its pure logic next to it."""
