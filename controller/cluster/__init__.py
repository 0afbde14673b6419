"""Ray Serve, the live side: the dashboard's REST client (`serve_api`), what runs (`live`), specs
rendered into Serve applications (`render`), where the nodes get the serving code
(`serving_code`), and health and sync per deployment (`status`)."""
