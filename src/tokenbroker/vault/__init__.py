"""The vault: key-encryption keys, envelope encryption and the sealed-secret store.

``keyring`` loads and edits the key file; ``envelope`` seals values (AES-256-GCM, one data key
per value, associated data binding each blob to its row); ``sealed_store`` keeps the blobs in
``sealed_secrets``; ``key_checks`` refuses a key file that does not match the database;
``rotation`` re-wraps, counts and checks sealed records online.
"""
