"""keyrotd as the Kubernetes API server's service-account token signer (docs/kubernetes.md).

An optional role: grpcio and the generated ``externaljwt`` modules load only when
``kubernetes.signer_socket`` is set (``pip install 'keyrotd[kubernetes]'``).
"""
