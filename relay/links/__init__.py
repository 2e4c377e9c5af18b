"""Links that carry signed bytes between nodes. Each module owns one outside library."""
