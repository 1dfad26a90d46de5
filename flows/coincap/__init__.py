"""CoinCap v3 API client: auth, pagination, retries, credit metering, endpoints."""
