"""Customer.io's official clients (Python, cdp-analytics, Node) driving a running Tidings."""
