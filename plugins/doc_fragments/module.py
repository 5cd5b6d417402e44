"""Documentation every vllm_fleet.fleet module shares (extends_documentation_fragment: vllm_fleet.fleet.module)."""


class ModuleDocFragment:
    # Beside ansible.builtin.action_common_attributes, which describes these attributes: every module
    # supports check mode (each says what it does there, attributes.check_mode.details), none shows a
    # diff, and all run on POSIX hosts.
    DOCUMENTATION = r"""
author:
  - vllm-fleet maintainers (@vllm-fleet)
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
"""
