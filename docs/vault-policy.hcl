# The least a keyrotd token needs on Vault or OpenBao (docs/storage.md), for the defaults
# storage.mount = "secret" and storage.path_prefix = "keyrotd/"; change both paths to match.
# Reading, creating and updating (with cas) its own secrets; no delete, no destroy, no
# access to older versions' metadata operations.
path "secret/data/keyrotd/*" {
  capabilities = ["create", "read", "update"]
}

# Listing the keysets (keyrotd status, list).
path "secret/metadata/keyrotd/" {
  capabilities = ["list"]
}
