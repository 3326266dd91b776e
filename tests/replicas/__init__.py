"""Several ``keyrotd run`` replicas on one AWS Secrets Manager endpoint (moto's server)."""
