"""Service runtime: logic binding, runner, health endpoints, metrics."""
