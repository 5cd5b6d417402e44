"""vllm-fleet logic shared by the Ansible modules, the CLI and the tests."""
