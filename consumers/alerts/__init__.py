"""Hit alerts delivered to dispatch centers: the live console and signed webhooks."""
