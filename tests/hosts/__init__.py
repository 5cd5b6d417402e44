"""Real systemd test hosts (systemd-nspawn) for vllm-fleet's tests; see testhosts.py."""
