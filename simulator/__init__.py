"""serveops simulator: record, replay (Locust) and compare traffic. See issue #5; not built yet."""
