"""serveops simulator: recorded traffic (traffic), open-loop replay on Locust (replay),
statistics (compare) and reports (report). See docs/simulator.md."""
